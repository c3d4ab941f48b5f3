# exportpipe - every command sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# checkov pins its own boto3 (and much else): it gets an environment of its own, pinned here.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := .venv-checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
CHECKOV_REPORT  := $(CHECKOV_VENV)/report.txt
# bandit scans what ships to Lambda: the layer's package (runtime code only) and the handlers.

.DEFAULT_GOAL := help

help:
	@echo "make demo     - run the whole pipeline locally (moto + real state machine + sandboxes), show the result"
	@echo "make test     - lint, type-check, complexity, cfn-lint, checkov, bandit, and every test (unit, functional, end-to-end)"
	@echo "make bench    - copier benchmark (memory vs file size, cost over plain upload) -> bench-output/"
	@echo "make security - checkov on template.yaml (own venv: $(CHECKOV_VENV)) and bandit on the runtime code"
	@echo "make lint | typecheck | complexity | cfn-lint | checkov | bandit | pytest | format | build | clean"

$(STAMP): pyproject.toml dev/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e ./dev
	touch $(STAMP)

setup: $(STAMP)

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy

cfn-lint: setup
	$(BIN)/cfn-lint template.yaml

# Fails on any finding not suppressed in the template (Metadata: checkov: skip, each with its reason).
# checkov exits 0 on a template it cannot parse, so its "Parsing errors" count fails the target too.
checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet \
		--skip-download > $(CHECKOV_REPORT) || { cat $(CHECKOV_REPORT); exit 1; }
	cat $(CHECKOV_REPORT)
	! grep -q "Parsing errors" $(CHECKOV_REPORT)

bandit: setup
	$(BIN)/bandit --quiet --recursive layers/common/exportpipe functions

security: checkov bandit

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

# The runtime package's functions stay simple enough to review: McCabe complexity at most 10.
complexity: setup
	$(BIN)/ruff check --select C901 --config 'lint.mccabe.max-complexity=10' layers/common/exportpipe functions

test: lint typecheck complexity cfn-lint checkov bandit pytest

demo: setup
	rm -rf demo-output
	$(BIN)/exportpipe demo --output demo-output

# Benchmarks (not part of `make test`: timing is noisy); figures go to bench-output/.
bench: setup
	$(BIN)/python -m tests.bench.bench_copier

# Needs the AWS SAM CLI (not a project dependency): builds the layer through layers/common/Makefile.
build:
	sam build

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) demo-output .pytest_cache .mypy_cache .ruff_cache .aws-sam

.PHONY: help setup lint format typecheck complexity cfn-lint checkov bandit security pytest test demo bench build clean
