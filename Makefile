# The README's two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov has a venv of its own: it pins a python-hcl2 that clashes with the project's.
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := .venv-checkov/.installed

.PHONY: run test lint types unit integration e2e bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/holdfast dev

lint: $(STAMP)
	$(BIN)/ruff check shared functions tests bench
	$(BIN)/ruff format --check shared functions tests bench
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q -n 2 tests/integration

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

# The whole suite: lint, types, unit, integration, end-to-end.
test: lint types $(CHECKOV_STAMP)
	$(BIN)/pytest -q -n 2 --dist loadgroup tests

$(CHECKOV_STAMP): Makefile
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venv-checkov .holdfast .pytest_cache .mypy_cache .ruff_cache
