# Every install step lives here: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/python examples/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/initial_sync.py --records 10000
	$(BIN)/python bench/latency.py --duration 60 --rate 50

bench-quick: install
	$(BIN)/python bench/initial_sync.py --records 2000
	$(BIN)/python bench/latency.py --duration 10 --rate 20

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
