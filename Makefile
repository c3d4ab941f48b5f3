# exportpipe - every command sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help:
	@echo "make demo     - run the whole pipeline locally (moto + real state machine + sandboxes), show the result"
	@echo "make test     - lint, type-check, cfn-lint, and every test (unit, functional, end-to-end)"
	@echo "make bench    - copier benchmark (memory vs file size, cost over plain upload) -> bench-output/"
	@echo "make lint | typecheck | cfn-lint | pytest | format | build | clean"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

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

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck cfn-lint pytest

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
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache .aws-sam

.PHONY: help setup lint format typecheck cfn-lint pytest test demo bench build clean
