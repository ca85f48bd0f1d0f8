# Targets match the README. `make demo` and `make test` are the Quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_TEST_URL ?= postgresql://postgres@127.0.0.1:5432/test

.PHONY: setup demo test pytest lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Generate sample media, mirror it into the SQLite catalog, post-process it, show it.
demo: setup
	$(BIN)/mediamirror demo

## Lint, type-check and run the whole test suite.
test: setup lint pytest

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
