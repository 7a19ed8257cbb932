# paywatch — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv demo test lint bench nab eval clean

help:
	@echo "make demo   - create .venv, install paywatch, run the demo (local broker + simulated incidents)"
	@echo "make test   - create/update .venv and run the whole test suite"
	@echo "make lint   - ruff, mypy and the import contract (lint-imports)"
	@echo "make bench  - throughput / latency / memory benchmark against the local broker"
	@echo "make nab    - Numenta Anomaly Benchmark score of the metric detector"
	@echo "make eval   - incident-detection figures on the simulator's suite and a second generator"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: paywatch needs Python >= 3.11 (none found on PATH)"; exit 1; }
	@echo "==> creating $(VENV) with $(PYTHON) and installing paywatch (first run takes a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/paywatch demo

# pytest exits 5 when it collected no test, so an empty run fails here too.
test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check stream models tests benchmarks
	$(BIN)/ruff format --check stream models tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: venv
	$(BIN)/python -m benchmarks.bench

nab: venv
	$(BIN)/python -m benchmarks.nab_run ../shared/nab

# The simulator's seeds, then traffic from a second generator nothing was tuned on.
eval: venv
	$(BIN)/python -m benchmarks.eval_run
	$(BIN)/python -m benchmarks.second_eval

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
