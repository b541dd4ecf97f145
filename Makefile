# ntkit: every set-up step a fresh machine needs lives here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test demo bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on disk; pin it first so nothing pulls a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest

demo: $(VENV)/.installed
	$(VENV)/bin/ntkit example

bench: $(VENV)/.installed
	$(PY) bench/empirical.py
	$(PY) bench/infinite.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

clean:
	rm -rf $(VENV) results .pytest_cache
