# Targets match the README. `make demo` and `make test` are the Quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_TEST_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: setup system-deps demo test pytest lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Generate sample media, mirror it into the SQLite catalog, post-process it, show it.
demo: setup
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
