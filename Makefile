# Targets match the README. `make demo` and `make test` are the Quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_TEST_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: setup setup-run system-deps demo test pytest lint format bench clean

# Two installs in one venv, each with its own stamp: `make demo` installs what the product
# needs (`pip install -e .`), everything else (`make test`, lint...) also the test
# toolchain (`.[dev]`: pytest, mypy, Playwright, moto, schemathesis...). `make test` after
# `make demo` upgrades the same venv; `make demo` after `make test` installs nothing.
setup: $(VENV)/.installed-dev
setup-run: $(VENV)/.installed-run

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## Generate sample media, mirror it into the SQLite catalog, post-process it, show it.
demo: setup-run
	$(BIN)/mediamirror demo

## Chromium for the browser tests and redis-server for the broker-restart test (Debian's
## packages; installed when missing and root).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: some tests need:$$missing (sudo apt-get install$$missing)"; \
	  fi; \
	fi

## Lint, type-check and run the whole test suite.
test: setup system-deps lint pytest

pytest: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/sync_bench.py

clean:
	rm -rf $(VENV) mediamirror-data .pytest_cache .mypy_cache .ruff_cache
