# The two commands of the README are `make demo` and `make test`; both set up first when needed.
.PHONY: setup demo test lint bench clean

PY := .venv/bin/python
DEMO_LAKE ?= ./demo-lake
# Test files run on this many pytest-xdist workers (one file stays on one worker: its module fixtures
# are built once). Most tests wait on JVM starts and subprocesses, so 2 workers fit 2 cores; 0 = serial.
TEST_WORKERS ?= 2

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh $(DEMO_LAKE)

test: setup
	$(PY) -m ruff check recsys_spark jobs tests benchmarks airflow_dags
	$(PY) -m pytest -q -ra --durations=25 -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(PY) -m ruff check recsys_spark jobs tests benchmarks airflow_dags
	$(PY) -m ruff format --check recsys_spark jobs tests benchmarks airflow_dags

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .venv .venv-airflow demo-lake lake spark-warehouse
