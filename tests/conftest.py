"""Shared fixtures: one local Spark session for the whole test run, and a fresh lake per test."""

from __future__ import annotations

import os
import warnings

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from recsys_spark.session import spark_session

    os.environ.setdefault("RECSYS_DRIVER_MEMORY", "3g")
    session = spark_session(
        app_name="recsys-spark-tests",
        master="local[2]",
        shuffle_partitions=4,
        conf={"spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("warehouse"))},
    )
    yield session
    session.stop()


@pytest.fixture
def lake(spark, tmp_path):
    from recsys_spark.lake.delta import Lake

    return Lake(spark, str(tmp_path / "lake"))


@pytest.fixture(scope="module")
def by_value(request):
    """The requesting test module pickled by value, so Horovod/torch ranks can run functions defined in it."""
    import cloudpickle
    import pyspark.cloudpickle as spark_cloudpickle

    for pickler in (cloudpickle, spark_cloudpickle):
        pickler.register_pickle_by_value(request.module)
    yield
    for pickler in (cloudpickle, spark_cloudpickle):
        pickler.unregister_pickle_by_value(request.module)


def pytest_terminal_summary(terminalreporter):
    """Print what tests recorded as `timings` (the Airflow runs' task tables) at the end of the run.

    Through `record_property` they reach the summary from pytest-xdist workers too, whose own output
    the controller does not show; CI logs keep them for every run.
    """
    tables = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "timings"
    ]
    if tables:
        terminalreporter.section("task timings")
        for table in tables:
            terminalreporter.write_line(table)
