"""The bad-input catalogue: each kind of bad data through ingest, validate and the daily pipeline.

For every case the user must see either a clear error, a quarantine row with its reason, or a named
failed expectation, and every valid record must still arrive. docs/quality.md lists the same cases.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys_spark import cli
from recsys_spark.ingest.job import IngestConfig, ingest
from recsys_spark.lake import Lake
from recsys_spark.lake.tables import SchemaError
from recsys_spark.quality.gate import disable_gates

HEADER = "user_id,item_id,event,ts,session_id,dwell_ms"
HUGE_SESSION = "s" * 2_000_000  # a 2 MB field: must not break the reader, and the row is valid
HUGE_ID = "i" * 5_000  # an id no system should accept: ingest keeps it, validate names it
DAY = dt.date(2024, 3, 1)


@dataclass(frozen=True)
class Case:
    name: str
    line: str | bytes
    marker: str  # a substring of the quarantined row's JSON that identifies this case
    reason: str


# Lines ingest must quarantine, each with the reason the user sees in `quarantine.reason`.
QUARANTINED = [
    Case("null user_id", ",i1,click,2024-03-01T10:00:00Z,s-null-user,", "s-null-user", "missing_user_id"),
    Case(
        "blank item_id", "u1,  ,click,2024-03-01T10:00:00Z,s-blank-item,", "s-blank-item", "missing_item_id"
    ),
    Case(
        "unknown event type", "u1,i1,teleport,2024-03-01T10:00:00Z,s-teleport,", "s-teleport", "unknown_event"
    ),
    Case("unparseable timestamp", "u1,i1,click,yesterday,s-bad-ts,", "s-bad-ts", "unparseable_ts"),
    Case("future timestamp", "u1,i1,click,2999-01-01T00:00:00Z,s-future,", "s-future", "ts_out_of_range"),
    Case("ancient timestamp", "u1,i1,click,1970-01-01T00:00:00Z,s-ancient,", "s-ancient", "ts_out_of_range"),
    Case(
        "negative dwell",
        "u1,i1,click,2024-03-01T10:00:00Z,s-neg-dwell,-5",
        "s-neg-dwell",
        "negative_dwell_ms",
    ),
    Case(
        "wrong type (dwell)",
        "u1,i1,click,2024-03-01T10:00:00Z,s-bad-dwell,12.5s",
        "s-bad-dwell",
        "unparseable_dwell_ms",
    ),
    Case(
        "extra field", "u1,i1,click,2024-03-01T10:00:00Z,s-extra,5,surplus", "surplus", "wrong_column_count"
    ),
    Case("truncated line", "u1,i1,cli", '"u1,i1,cli"', "wrong_column_count"),
    Case("binary garbage", b"\x00\xff\xfe\x80 binary garbage", "binary garbage", "wrong_column_count"),
    Case("text garbage", "%%%% not a record %%%%", "not a record", "wrong_column_count"),
    Case(
        "unterminated quote", '"u1,i1,click,2024-03-01T10:00:00Z,s-quote,5', "s-quote", "wrong_column_count"
    ),
]
VALID = [
    "u1,i1,click,2024-03-01T10:00:00Z,s-v1,1500",
    "u2,i2,like,2024-03-01T11:00:00Z,s-v2,",
    "u3,i3,impression,1709287200,s-v3,0",
    "u1,i2,purchase,2024-03-02T09:00:00+02:00,s-v4,10",
    "u1,i-missing,click,2024-03-01T12:00:00Z,s-ref-item,",  # valid for ingest, not in items
    "u-missing,i1,click,2024-03-01T12:00:01Z,s-ref-user,",  # valid for ingest, not in users
    f"u2,i1,click,2024-03-01T12:00:02Z,{HUGE_SESSION},",
    f"u3,{HUGE_ID},click,2024-03-01T12:00:03Z,s-huge-id,",
]
DUPLICATE = VALID[0]
TRUNCATED_LAST = "u9,i9,click,2024-03-01T1"  # the file ends mid-record, without a newline


def _events_file(path: Path) -> str:
    lines: list[bytes] = [HEADER.encode()]
    # The binary line goes first: a non-UTF-8 byte near the top used to fail the whole file (header sniffing).
    cases = sorted(QUARANTINED, key=lambda c: not isinstance(c.line, bytes))
    for i, case in enumerate(cases):
        lines.append(case.line if isinstance(case.line, bytes) else case.line.encode())
        lines.append(VALID[i % len(VALID)].encode() if i < len(VALID) else b"")
    lines += [DUPLICATE.encode(), TRUNCATED_LAST.encode()]
    path.write_bytes(b"\n".join(lines))
    return str(path)


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    """One ingest of a file holding every line-level case, plus items and users files."""
    tmp = tmp_path_factory.mktemp("bad_input")
    lake = Lake(spark, str(tmp / "lake"))
    events = _events_file(tmp / "events.csv")
    items = _write(tmp / "items.csv", ["item_id,category", "i1,news", "i2,news", "i3,sport", "i9,sport"])
    users = _write(tmp / "users.csv", ["user_id,gender", "u1,f", "u2,m", "u3,u", "u9,f"])
    cfg = IngestConfig(lake=lake.root, events=events, items=items, users=users, run_id="bad-input")
    summary = ingest(cfg, spark, lake)
    quarantine = [(r.table, r.reason, r.row) for r in lake.read("quarantine").collect()]
    return lake, summary, quarantine


@pytest.mark.parametrize(
    "case",
    QUARANTINED + [Case("truncated last line", "", '"u9,i9,click,2024-03-01T1"', "wrong_column_count")],
    ids=lambda c: c.name,
)
def test_ingest_quarantines_the_bad_line_with_its_reason(ingested, case):
    _, _, quarantine = ingested
    hits = [reason for _, reason, row in quarantine if case.marker in row]
    assert hits == [case.reason]


def test_ingest_keeps_every_valid_record_and_writes_duplicates_once(ingested):
    lake, summary, quarantine = ingested
    rows = lake.read("events").select("user_id", "item_id", "event", "session_id").collect()
    got = sorted((r.user_id, r.item_id, r.event, r.session_id) for r in rows)
    expected = sorted(tuple(line.split(",")[:3]) + (line.split(",")[4],) for line in VALID)
    assert got == expected  # nothing valid lost, the duplicate written once, the 2 MB session intact
    assert summary.duplicates_skipped == 1
    assert summary.events_written == len(VALID)
    assert summary.rows_read == len(VALID) + 1 + len(QUARANTINED) + 1  # + duplicate + truncated last line
    assert len(quarantine) == len(QUARANTINED) + 1
    assert {table for table, _, _ in quarantine} == {"events"}


def test_validate_names_ids_missing_from_items_and_users_and_the_huge_id(spark, ingested, capsys):
    lake, _, _ = ingested
    code = cli.main(["validate", "--lake", lake.root, "--table", "events", "--date", str(DAY)], spark=spark)
    out = capsys.readouterr().out
    assert code == 1, out
    summary = json.loads(Path(lake.path("_reports", "quality", "events", f"{DAY}.json")).read_text())
    failed = {c["name"]: c for c in summary["critical_failed"]}
    assert set(failed) == {
        "expect_column_values_to_be_null(unknown_item_id)",
        "expect_column_values_to_be_null(unknown_user_id)",
        "expect_column_value_lengths_to_be_between(item_id)",
    }
    assert "'i-missing'" in failed["expect_column_values_to_be_null(unknown_item_id)"]["observed"]
    assert "'u-missing'" in failed["expect_column_values_to_be_null(unknown_user_id)"]["observed"]
    assert "(5,000 chars)" in failed["expect_column_value_lengths_to_be_between(item_id)"]["observed"]
    assert [c["name"] for c in summary["warnings"]] == [
        "expect_column_value_lengths_to_be_between(session_id)"
    ]
    assert "CRITICAL expect_column_values_to_be_null(unknown_item_id): every item_id exists in items" in out
    assert "WARNING  expect_column_value_lengths_to_be_between(session_id)" in out


def test_empty_and_header_only_files(spark, tmp_path, capsys):
    root = str(tmp_path / "lake")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert cli.main(["ingest", "--lake", root, "--events", str(empty)], spark=spark) == 2
    assert (
        "empty.csv: required columns ['user_id', 'item_id', 'event', 'ts'] are missing"
        in capsys.readouterr().err
    )
    header_only = _write(tmp_path / "header.csv", [HEADER])
    assert cli.main(["ingest", "--lake", root, "--events", header_only], spark=spark) == 0
    out = capsys.readouterr().out
    assert "rows read: 0" in out and "events written: 0" in out
    assert Lake(spark, root).tables() == []  # nothing to write, no empty versions


def test_parquet_with_wrong_column_types(spark, tmp_path):
    lake = Lake(spark, str(tmp_path / "lake"))
    path = str(tmp_path / "typed.parquet")
    spark.createDataFrame(
        [(7, "i1", "click", 1709287200.5, "12"), (8, "i2", "click", 1709287201.0, "abc")],
        "user_id long, item_id string, event string, ts double, dwell_ms string",
    ).coalesce(1).write.parquet(path)
    summary = ingest(IngestConfig(lake=lake.root, events=path, run_id="typed"), spark, lake)
    assert summary.events_written == 1
    (row,) = lake.read("events").collect()
    assert (row.user_id, row.dwell_ms, row.ts) == ("7", 12, dt.datetime(2024, 3, 1, 10, 0, 0, 500000))
    (bad,) = lake.read("quarantine").collect()
    assert bad.reason == "unparseable_dwell_ms" and json.loads(bad.row)["dwell_ms"] == "abc"


# -- data that bypassed ingest (another writer): validate and the pipeline gates catch it -----
BAD_DAY = dt.date(2024, 3, 5)
FUTURE = dt.date(2999, 1, 1)


@pytest.fixture(scope="module")
def bypassed(spark, tmp_path_factory):
    lake = Lake(spark, str(tmp_path_factory.mktemp("bypass") / "lake"))
    lake.overwrite("items", spark.createDataFrame([("i1",), ("i2",)], "item_id string"))
    lake.overwrite("users", spark.createDataFrame([("u1",), ("u2",)], "user_id string"))
    t = dt.datetime(2024, 3, 5, 10)
    rows = [
        ("u1", "i1", "click", t, "s1", 100),  # valid
        ("u2", "i2", "impression", t, "s2", None),  # valid
        (None, "i1", "click", t, "s3", None),  # null user
        ("u1", "i2", "teleport", t, "s4", None),  # unknown event type
        ("u1", "i1", "like", t, "s5", 5),  # duplicated below
        ("u1", "i1", "like", t, "s5", 5),
        ("u2", "i1", "click", t, "s6", -300),  # negative dwell
        ("u2", "i2", "click", dt.datetime(1970, 1, 1), "s7", None),  # ancient ts filed under the bad day
        ("u1", "i1", "click", dt.datetime(2999, 1, 1, 1), "s8", None),  # the future
    ]
    schema = "user_id string, item_id string, event string, ts timestamp, session_id string, dwell_ms long"
    df = spark.createDataFrame(rows, schema)
    df = df.withColumn("dt", F.when(F.year("ts") == 1970, F.lit(BAD_DAY)).otherwise(F.to_date("ts")))
    lake.append("events", df)
    return lake


def test_validate_names_each_defect_of_a_bypassed_day(spark, bypassed, capsys):
    code = cli.main(
        ["validate", "--lake", bypassed.root, "--table", "events", "--date", str(BAD_DAY)], spark=spark
    )
    out = capsys.readouterr().out
    assert code == 1, out
    summary = json.loads(Path(bypassed.path("_reports", "quality", "events", f"{BAD_DAY}.json")).read_text())
    assert {c["name"] for c in summary["critical_failed"]} == {
        "expect_column_values_to_not_be_null(user_id)",
        "expect_column_values_to_be_in_set(event)",
        "expect_compound_columns_to_be_unique(user_id, item_id, event, ts, session_id)",
        "expect_column_values_to_be_between(dwell_ms)",
        "expect_column_values_to_be_null(ts_outside_day)",
    }
    observed = {c["name"]: c["observed"] for c in summary["critical_failed"]}
    assert "'teleport'" in observed["expect_column_values_to_be_in_set(event)"]
    assert "-300" in observed["expect_column_values_to_be_between(dwell_ms)"]
    assert "1970-01-01" in observed["expect_column_values_to_be_null(ts_outside_day)"]


def test_validate_names_future_events(spark, bypassed, capsys):
    code = cli.main(
        ["validate", "--lake", bypassed.root, "--table", "events", "--date", str(FUTURE)], spark=spark
    )
    assert code == 1
    assert "CRITICAL expect_column_values_to_be_null(ts_in_future)" in capsys.readouterr().out


def test_wrong_types_written_to_the_lake_are_refused(spark, bypassed):
    version = bypassed.version("events")
    df = spark.createDataFrame(
        [("u1", "i1", "click", "2024-03-05 10:00", BAD_DAY)],
        "user_id string, item_id string, event string, ts string, dt date",
    )
    with pytest.raises(SchemaError, match="column 'ts' is string, the contract says timestamp"):
        bypassed.append("events", df)
    assert bypassed.version("events") == version


def test_daily_pipeline_gate_stops_bad_events_at_the_first_table_they_would_poison(spark, bypassed, caplog):
    from recsys_spark.pipeline import STAGES, DailyConfig, run

    cfg = DailyConfig(lake=bypassed.root, date=BAD_DAY, skip=[s.name for s in STAGES if s.name != "stats"])
    try:
        with caplog.at_level("ERROR", logger="recsys_spark.pipeline"):
            assert run(cfg, spark, bypassed) == 1  # run-daily installs the gates itself (--gate true)
    finally:
        disable_gates(bypassed)
    stopped = [r.getMessage() for r in caplog.records if "stopped by a quality gate" in r.getMessage()]
    assert len(stopped) == 1 and "stage stats" in stopped[0]
    message = stopped[0].split("stopped by a quality gate: ", 1)[1]
    assert message.startswith("quality gate blocked publishing daily_counts")
    assert "expect_column_values_to_be_null(negative_count)" in message and "'user:u2'" in message
    assert "expect_column_values_to_not_be_null(entity_id)" in message  # the null user
    assert "The table was not created" in message
    assert not bypassed.exists("daily_counts")
    assert not any(p.name.endswith(".parquet") for p in Path(bypassed.uri("daily_counts")).rglob("*"))


# -- a job run alone (an Airflow task, spark-submit) gates its own writes ------------------------------
def test_a_job_alone_validates_each_table_before_its_commit(spark, tmp_path, capsys):
    """`stats` by itself (no run-daily): bad events for day 2 make daily_counts fail a critical check;
    the job exits 1, says a gate stopped it, and every table stays at its version; `--gate false` commits."""
    root = str(tmp_path / "lake")
    lake = Lake(spark, root)
    schema = "user_id string, item_id string, event string, ts timestamp, session_id string, dwell_ms long"
    good_day, bad_day = dt.date(2024, 3, 4), dt.date(2024, 3, 5)

    def events(rows):
        return spark.createDataFrame(rows, schema).withColumn("dt", F.to_date("ts"))

    t = dt.datetime(2024, 3, 4, 10)
    good = [
        (f"u{k % 3}", f"i{k % 4}", e, t + dt.timedelta(minutes=k), f"s{k}", None)
        for k in range(12)
        for e in ("impression", "click")
    ]
    lake.append("events", events(good))
    assert cli.main(["stats", "--lake", root, "--date", str(good_day)], spark=spark) == 0
    tables = ("daily_counts", "user_stats", "item_stats")
    versions = {table: lake.version(table) for table in tables}
    assert None not in versions.values()
    capsys.readouterr()
    bad = [("u1", "i1", "click", dt.datetime(2024, 3, 5, 10), "s9", -300)]  # negative dwell: negative_count
    lake.append("events", events(bad))
    assert cli.main(["stats", "--lake", root, "--date", str(bad_day)], spark=spark) == 1
    err = capsys.readouterr().err
    assert "recsys-spark stats: stopped by a quality gate" in err
    assert "quality gate blocked publishing daily_counts" in err and "negative_count" in err
    assert {table: lake.version(table) for table in tables} == versions
    assert lake.read("daily_counts").filter(F.col("dt") == F.lit(bad_day)).count() == 0
    # The gate is what stopped it: without it the same job commits.
    assert cli.main(["stats", "--lake", root, "--date", str(bad_day), "--gate", "false"], spark=spark) == 0
    assert lake.version("daily_counts") > versions["daily_counts"]
    assert lake.read("daily_counts").filter(F.col("dt") == F.lit(bad_day)).count() > 0
