# The two commands: `make demo` and `make test`. Each creates .venv and installs first.
PYTHON ?= python3
VENV   ?= .venv
# pytest processes: the e2e tests mostly wait on the daemons they start (2 workers: 432 s for
# the suite on 2 cores, 536 s in one process)
TEST_WORKERS ?= 2
BIN     = $(VENV)/bin

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/kpiwatch: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kpiwatch needs Python 3.11 or newer: make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,fast]'
	@touch $@

demo: $(BIN)/kpiwatch
	$(BIN)/kpiwatch demo

test: $(BIN)/kpiwatch lint typecheck
	$(BIN)/kpiwatch test rules/tests/*.test.yaml
	$(BIN)/pytest -n $(TEST_WORKERS)

lint: $(BIN)/kpiwatch
	$(BIN)/ruff check src tests bench

typecheck: $(BIN)/kpiwatch
	$(BIN)/mypy

unit: $(BIN)/kpiwatch
	$(BIN)/pytest tests/unit

bench: $(BIN)/kpiwatch
	$(BIN)/python bench/bench_evaluation.py

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
