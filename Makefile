# Every install step lives here: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
BENCH_STAMP := $(VENV)/.bench-installed

TOOLS := .tools
PROMETHEUS := $(TOOLS)/root/usr/bin/prometheus
KINTO_VERSION := 26.5.0
KINTO := $(TOOLS)/kinto/bin/kinto
POUCHDB_VERSION := 4.2.0
POUCHDB := $(TOOLS)/pouchdb/node_modules/.bin/pouchdb-server
DLT_VERSION := 1.31.0
DLT := $(TOOLS)/dlt/bin/python

.PHONY: install run test lint format bench bench-quick soak clean tools

install: $(STAMP)

# What running needs, and no more: the demo starts without the type checkers and linters.
# pip shows each package as it goes, so a first run is never a silent minute.
$(RUN_STAMP): pyproject.toml
	@echo "Installing tandem into $(VENV) (the first time only; it takes a minute)..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar on --disable-pip-version-check -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml $(RUN_STAMP)
	@echo "Installing the development tools into $(VENV)..."
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/python examples/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Real servers the tests run against, each kept apart from the project's own environment:
# Prometheus and promtool (Debian's package, unpacked, not installed), Kinto (its own
# virtual environment) and PouchDB Server for the CouchDB API (npm, no install scripts).
tools: $(PROMETHEUS) $(KINTO) $(POUCHDB)

$(KINTO):
	$(PYTHON) -m venv $(TOOLS)/kinto
	$(TOOLS)/kinto/bin/pip install --quiet kinto==$(KINTO_VERSION)
	touch $(KINTO)

$(POUCHDB):
	mkdir -p $(TOOLS)/pouchdb
	npm install --prefix $(TOOLS)/pouchdb --ignore-scripts --no-audit --no-fund --loglevel=error \
		pouchdb-server@$(POUCHDB_VERSION)
	touch $(POUCHDB)

$(PROMETHEUS):
	mkdir -p $(TOOLS)
	cd $(TOOLS) && (apt-get download prometheus || (apt-get update -qq && apt-get download prometheus))
	dpkg -x $(TOOLS)/prometheus_*.deb $(TOOLS)/root
	touch $(PROMETHEUS)

test: lint tools
	$(BIN)/pytest

# The seeded fault-and-kill simulation (SEEDS=1-200 to choose); not part of `make test` yet.
SEEDS ?= 1-40
soak: install
	TANDEM_SIM_SEEDS=$$(seq -s, $$(echo $(SEEDS) | tr - ' ')) $(BIN)/pytest tests/e2e/test_simulation.py -q -s

# The benchmark suite (bench/RESULTS.md): tandem beside its ceilings and dlt, in one run.
# Never part of `make test`. dlt lives in its own environment, like the test servers.
# tandem itself runs as users install it (`pip install .`, no dev extras: those add start-up
# time and memory), reinstalled from the tree for every run.
bench: install $(BENCH_STAMP) $(DLT) bench-tandem
	$(BENCHED) $(BIN)/python bench/suite.py --records 100000 --push-records 5000 --runs 3 \
		--import-sizes 10000,1000000
	$(BIN)/python bench/diff.py --sizes 10000,100000,1000000 --in-memory
	$(BENCHED) $(BIN)/python bench/latency.py --duration 30 --rate 50
	$(BENCHED) $(BIN)/python bench/startup.py --runs 20

bench-quick: install $(BENCH_STAMP) $(DLT) bench-tandem
	$(BENCHED) $(BIN)/python bench/suite.py --records 10000 --push-records 1000 --runs 3 \
		--out bench/out/results-quick.json
	$(BIN)/python bench/diff.py --sizes 10000 --in-memory
	$(BENCHED) $(BIN)/python bench/latency.py --duration 6 --rate 20
	$(BENCHED) $(BIN)/python bench/startup.py --runs 5

BENCH_TANDEM := $(TOOLS)/bench-tandem
BENCHED := TANDEM_BENCH_BIN=$(CURDIR)/$(BENCH_TANDEM)/bin/tandem

.PHONY: bench-tandem
bench-tandem:
	test -x $(BENCH_TANDEM)/bin/python || $(PYTHON) -m venv $(BENCH_TANDEM)
	$(BENCH_TANDEM)/bin/pip install --quiet .

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

$(DLT):
	$(PYTHON) -m venv $(TOOLS)/dlt
	$(TOOLS)/dlt/bin/pip install --quiet "dlt[duckdb]==$(DLT_VERSION)" duckdb==2.0.1 pyarrow==26.0.1
	touch $(DLT)

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .pytest_cache .ruff_cache
