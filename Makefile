# Everything a fresh machine needs: `make demo` and `make test` create the virtualenv,
# install the project and its pinned dependencies, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-long lint format bench clean

# setup.py compiles the optional C accelerator (plugins/catalog_sync/_speedups*): a change
# to it reinstalls. --compile-bytecode writes the dependencies' .pyc files once: uv leaves
# them out, and where PYTHONDONTWRITEBYTECODE is set every process (each Airflow task, test
# subprocess and bench child) would compile Airflow's sources again (~6 s of CPU each).
$(STAMP): pyproject.toml setup.py $(wildcard plugins/catalog_sync/_speedups*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/catalog-sync demo

# Most tests wait on subprocesses, servers and databases, not the CPU: run them in
# parallel workers (one test file per worker at a time, so module fixtures are shared).
PYTEST_WORKERS ?= 4

test: install lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The reliability bulk that `make test` leaves out (CI runs both).
test-long: install
	$(BIN)/pytest -m long -n $(PYTEST_WORKERS) --dist load

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Snapshot and delta speed against PostgreSQL's own export; not part of `make test`.
# BENCH_SIZES=10000,100000 make bench  runs smaller sizes.
BENCH_SIZES ?= 100000,1000000
bench: install
	$(BIN)/python bench/run.py --sizes $(BENCH_SIZES)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache
