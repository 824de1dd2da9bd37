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
