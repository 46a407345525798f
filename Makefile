# Streaming feature store: every target sets up what it needs.
#   make demo   - the whole path end to end on a fresh machine
#   make test   - lint + type checks + unit and integration tests against the real stack

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_STAMP := feature_store/serving/v1/__init__.py
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (PyFlink 2.2 wheels)"'
	@command -v java >/dev/null || { echo "java 17 is required (apt-get install openjdk-17-jdk-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn is required (apt-get install maven)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: install
install: $(STAMP) proto ## Create the virtualenv and install the project with dev tools

.PHONY: proto
proto: $(STAMP) ## Generate protobuf/gRPC modules and typed stubs from proto/
	$(BIN)/python proto/generate.py >/dev/null

.PHONY: jars
jars: install ## Resolve Kafka, Cassandra and Flink connector jars from Maven Central
	$(BIN)/fstore dev fetch

.PHONY: up
up: jars ## Start Kafka (KRaft) and Cassandra on 127.0.0.1 (idempotent)
	$(BIN)/fstore dev up

.PHONY: down
down: ## Stop the services `up` started
	$(BIN)/fstore dev down

.PHONY: status
status: ## Show the local stack
	$(BIN)/fstore dev status

.PHONY: fmt
fmt: install ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: lint
lint: install ## ruff + mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: unit
unit: install ## Unit tests only (no services)
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

.PHONY: test
test: lint jars ## Lint, then every test; integration tests start the stack if it is not up
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: demo
demo: up ## Events -> Kafka -> Flink -> store -> gRPC -> point-in-time export, end to end
	$(BIN)/fstore demo

.PHONY: clean
clean: ## Remove generated code and caches (keeps .stack data)
	rm -rf feature_store/serving/v1 .mypy_cache .ruff_cache .pytest_cache out

.PHONY: distclean
distclean: down clean ## Also remove the virtualenv and the stack's jars and data
	rm -rf $(VENV) .stack
