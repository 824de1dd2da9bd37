# The two commands of the README are `make demo` and `make test`; both set up first when needed.
.PHONY: setup demo test lint bench clean

PY := .venv/bin/python
DEMO_LAKE ?= ./demo-lake

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh $(DEMO_LAKE)

test: setup
	$(PY) -m ruff check recsys_spark jobs tests benchmarks airflow_dags
	$(PY) -m pytest -q -ra --durations=25

lint: setup
	$(PY) -m ruff check recsys_spark jobs tests benchmarks airflow_dags
	$(PY) -m ruff format --check recsys_spark jobs tests benchmarks airflow_dags

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .venv .venv-airflow demo-lake lake spark-warehouse
