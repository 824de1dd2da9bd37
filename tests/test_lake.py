"""The lake layer: versions, atomic writes, date overwrites, schema enforcement, readers."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from pyspark.sql import functions as F

from recsys_spark.lake.tables import SchemaError


def _events(spark, rows):
    return spark.createDataFrame(
        rows, "user_id string, item_id string, event string, ts timestamp, session_id string, dwell_ms long"
    ).withColumn("dt", F.to_date("ts"))


def _row(user, item, day, hour=10, event="click"):
    return (user, item, event, dt.datetime(2026, 11, day, hour), None, None)


def _sorted(df):
    return sorted(tuple(r) for r in df.select("user_id", "item_id", "event", "ts").collect())


def test_engine_is_delta_rs_without_jars(lake):
    assert lake.engine == "delta-rs"


def test_two_overwrites_give_two_versions_and_the_old_one_stays_readable(spark, lake):
    v0 = lake.overwrite("events", _events(spark, [_row("u1", "i1", 1), _row("u2", "i2", 2)]))
    v1 = lake.overwrite("events", _events(spark, [_row("u3", "i3", 3)]))
    assert (v0, v1) == (0, 1)
    assert [h["version"] for h in lake.history("events")] == [1, 0]
    assert lake.read("events").count() == 1
    assert _sorted(lake.read("events", version=0)) == _sorted(
        _events(spark, [_row("u1", "i1", 1), _row("u2", "i2", 2)])
    )


def test_overwrite_dates_replaces_only_those_days_and_is_idempotent(spark, lake):
    lake.overwrite("events", _events(spark, [_row("u1", "i1", 1), _row("u2", "i2", 2)]))
    day2 = _events(spark, [_row("u9", "i9", 2), _row("u8", "i8", 2, hour=11)])
    lake.overwrite_dates("events", day2, ["2026-11-02"])
    first = _sorted(lake.read("events"))
    lake.overwrite_dates("events", day2, ["2026-11-02"])
    assert _sorted(lake.read("events")) == first
    assert len(first) == 3
    assert ("u1", "i1", "click", dt.datetime(2026, 11, 1, 10)) in first
    assert not any(r[0] == "u2" for r in first)


def test_append_adds_rows_and_a_version(spark, lake):
    lake.append("events", _events(spark, [_row("u1", "i1", 1)]))
    lake.append("events", _events(spark, [_row("u2", "i2", 1)]))
    assert lake.read("events").count() == 2
    assert lake.version("events") == 1


def test_a_job_failing_half_way_leaves_the_table_at_its_old_version(spark, lake):
    lake.overwrite("events", _events(spark, [_row("u1", "i1", 1)]))

    @F.udf("string")
    def explode_on_u2(user):
        if user == "u2":
            raise RuntimeError("boom half way")
        return user

    bad = _events(spark, [_row("u1", "i1", 1), _row("u2", "i2", 2)]).withColumn(
        "user_id", explode_on_u2("user_id")
    )
    with pytest.raises(Exception, match="boom half way"):
        lake.overwrite("events", bad.repartition(2))
    assert lake.version("events") == 0
    assert _sorted(lake.read("events")) == [("u1", "i1", "click", dt.datetime(2026, 11, 1, 10))]
    leftovers = [f for _, _, files in os.walk(lake.uri("events")) for f in files if f.endswith(".parquet")]
    assert len(leftovers) == 1, leftovers  # the failed write's files were cleaned up


def test_schema_is_enforced_on_write(spark, lake):
    missing_item = spark.createDataFrame([("u1", "click")], "user_id string, event string")
    with pytest.raises(SchemaError, match="item_id"):
        lake.overwrite("events", missing_item)
    extra = _events(spark, [_row("u1", "i1", 1)]).withColumn("oops", F.lit(1))
    with pytest.raises(SchemaError, match="oops"):
        lake.overwrite("events", extra)
    wrong_type = _events(spark, [_row("u1", "i1", 1)]).withColumn("ts", F.lit("yesterday"))
    with pytest.raises(SchemaError, match="ts"):
        lake.overwrite("events", wrong_type)
    assert not lake.exists("events")


def test_output_is_readable_by_deltalake_and_spark(spark, lake):
    from deltalake import DeltaTable

    lake.overwrite("events", _events(spark, [_row("u1", "i1", 1), _row("u2", "i2", 2)]))
    table = DeltaTable(lake.uri("events"))
    assert table.metadata().partition_columns == ["dt"]
    assert sorted(a["numRecords"] for a in _add_stats(table)) == [1, 1]
    schema_names = [f.name for f in table.schema().fields]
    assert schema_names == ["user_id", "item_id", "event", "ts", "session_id", "dwell_ms", "dt"]
    # Spark reading the Parquet files of the Delta log directly, as any Delta-unaware reader would.
    direct = spark.read.option("basePath", lake.spark_uri("events")).parquet(
        *["file://" + f if "://" not in f else f for f in table.file_uris()]
    )
    assert direct.count() == 2
    # Files carry INT64 microsecond UTC timestamps (not INT96), which every Delta reader understands.
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = table.file_uris()[0].replace("file://", "")
    assert pq.read_schema(first).field("ts").type == pa.timestamp("us", tz="UTC")
    assert lake.read("events").schema["dt"].dataType.simpleString() == "date"


def _add_stats(table):
    import json

    actions = table.get_add_actions(flatten=False)
    frame = actions.to_pydict() if hasattr(actions, "to_pydict") else None
    if frame is None:
        import pyarrow as pa

        frame = pa.table(actions).to_pydict()
    return (
        [{"numRecords": n} for n in frame["num_records"]]
        if "num_records" in frame
        else [json.loads(s) for s in frame["stats"]]
    )


def test_reading_a_missing_table_says_how_to_make_it(lake):
    with pytest.raises(FileNotFoundError, match="recsys-spark generate"):
        lake.read("events")


def test_spark_engine_without_jars_fails_fast(spark, tmp_path):
    from recsys_spark.lake.delta import Lake

    with pytest.raises(ValueError, match="delta-spark"):
        Lake(spark, str(tmp_path), engine="spark")
