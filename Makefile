# Two commands: `make run` and `make test`. Each sets up everything it needs on a fresh machine:
# Java and Maven (Debian packages, if missing), uv (from PyPI), the locked Python environment,
# and Apache Kafka's jars (from Maven Central).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python

# uv uses the machine's Python, never a downloaded one; the environment lives in .venv.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install system-deps kafka-fetch run test lint format typecheck docs pytest clean bench bench-edge chaos

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --quiet
	touch $@

system-deps:  ## Java 17+, Maven, PostgreSQL, Redis and Chromium, from Debian packages when missing
	bash devtools/system-deps.sh

install: system-deps $(VENV)/.synced  ## everything needed to run and test

kafka-fetch: install  ## Apache Kafka's jars from Maven Central (once)
	$(PY) -m devtools.kafka fetch

run: kafka-fetch  ## serve the API on 127.0.0.1:8000 with a local broker on 127.0.0.1:9092 (SERVER__* limits apply)
	$(PY) -m devtools.serve

lint: install  ## ruff lint and format check, and the import contracts (library vs service)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: install  ## mypy --strict over the library, the service, the examples and the tests
	$(VENV)/bin/mypy

docs: install  ## build the documentation site strictly (mkdocs build --strict) into site/
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

pytest: kafka-fetch  ## the test suite, real brokers included
	$(VENV)/bin/pytest

test: lint typecheck docs pytest  ## lint, type-check, build the docs strictly, then the whole suite

bench: kafka-fetch  ## speed and memory next to the seed's NestJS stack and Python peers (installs Node and the peers); writes bench/results/ and the README's table
	$(UV) sync --locked --group bench
	$(PY) -m bench

bench-edge: kafka-fetch  ## HTTP servers under slow-client, flood and header attacks, and load; writes bench/results/edge-<date>.md
	$(UV) sync --locked --group bench
	$(PY) -m bench.edge

chaos: kafka-fetch  ## faults under load on a 3-node cluster, every request accounted for; writes chaos/RESULTS.md
	$(PY) -m chaos

clean:  ## remove environments, jars, local broker data and the built docs site
	rm -rf $(VENV) $(TOOLS) .kafka .mypy_cache .ruff_cache .pytest_cache site
