# ntkit: every set-up step a fresh machine needs lives here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8765

.PHONY: install test demo bench lint clean browser axe

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on disk; pin it first so nothing pulls a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The demo's browser tests drive Debian's chromium (never a downloaded browser). Install it where it is missing
# and we can (root, apt-get); elsewhere those tests skip with a message, except in CI, where they fail.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium >/dev/null; } || echo "could not install chromium: the browser tests will skip (fail in CI)"; \
	  else \
	    echo "chromium not found and not root: the browser tests will skip; enable them: sudo apt-get install chromium"; \
	  fi; }

# axe-core checks the demo page's accessibility in the browser tests; npm installs it here, outside the package
# (the tests inject it into the page; the server never serves it). Without npm those checks skip (fail in CI).
AXE := .cache/npm/node_modules/axe-core/axe.min.js
axe: $(AXE)
$(AXE):
	@command -v npm >/dev/null 2>&1 && npm install --prefix .cache/npm --no-audit --no-fund --silent axe-core@4 \
	  || echo "npm not found or offline: the demo's accessibility check will skip (fail in CI)"

test: $(VENV)/.installed browser axe
	$(PY) -m pytest

demo: $(VENV)/.installed
	@echo "ntkit demo: open http://$(DEMO_HOST):$(DEMO_PORT)/ in a browser (Ctrl-C stops it)"
	$(VENV)/bin/ntkit demo --host $(DEMO_HOST) --port $(DEMO_PORT)

bench: $(VENV)/.installed
	$(PY) bench/empirical.py
	$(PY) bench/infinite.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

clean:
	rm -rf $(VENV) results .pytest_cache
