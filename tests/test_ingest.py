"""Ingest: each format's valid rows land in events/items/users, each bad row in quarantine, re-runs are no-ops."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_spark.ingest import job
from recsys_spark.ingest.job import IngestConfig

TABLES = ("events", "items", "users", "quarantine")
ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> str:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return str(path)


def _ingest(spark, lake, capsys, **options) -> dict[str, str]:
    """Run the job like the CLI does; return the printed summary as {label: value}."""
    assert job.run(IngestConfig(lake=lake.root, **options), spark, lake) == 0
    out = capsys.readouterr().out
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def _events(lake) -> list[tuple]:
    rows = lake.read("events").collect()
    return sorted((r.user_id, r.item_id, r.event, r.ts, r.session_id, r.dwell_ms, r.dt) for r in rows)


def _quarantine(lake) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in lake.read("quarantine").collect():
        out.setdefault(f"{r.table}/{r.reason}", []).append(json.loads(r.row))
    return out


def _snapshot(lake) -> dict[str, tuple]:
    def rows(table):
        return sorted(map(repr, lake.read(table).collect())) if lake.exists(table) else None

    return {t: (lake.version(t), rows(t)) for t in TABLES}


def _assert_second_run_changes_nothing(spark, lake, capsys, **options) -> None:
    before = _snapshot(lake)
    summary = _ingest(spark, lake, capsys, **options)
    assert summary["events written"] == "0"
    assert summary["quarantine written"] == f"0 (already present: {summary['quarantined']})"
    assert _snapshot(lake) == before


def _t(*args) -> dt.datetime:
    return dt.datetime(*args)


CANONICAL = [
    "user_id,item_id,event,ts,session_id,dwell_ms",
    "u1,i1,click,2024-03-01T10:00:00Z,s1,1500",
    "u1,i2,LIKE,1709287200,,",
    'u2,"i,3",purchase,2024-03-02 08:30:00+02:00,s2,0',
    "u1,i1,click,2024-03-01T10:00:00Z,s1,1500",
    ",i1,click,2024-03-01T10:00:00Z,s1,",
    "u3,  ,click,2024-03-01T10:00:00Z,s1,",
    "u3,i4,teleport,2024-03-01T10:00:00Z,s1,",
    "u3,i4,click,yesterday,s1,",
    "u3,i4,click,1970-01-01T00:00:00Z,s1,",
    "u3,i4,click,2999-01-01T00:00:00Z,s1,",
    "u3,i4,click,2024-03-01T10:00:00Z,s1,-5",
    "u3,i4,click,2024-03-01T10:00:00Z,s1,long",
    "u3,i4,click,2024-03-01T10:00:00Z,s1,5,extra",
    "u3,i4,click",
    ",,teleport,yesterday,,-1",
]


def test_canonical_csv_valid_rows_land_bad_rows_are_quarantined(spark, lake, tmp_path, capsys):
    events = _write(tmp_path / "events.csv", CANONICAL)
    summary = _ingest(spark, lake, capsys, events=events, run_id="r1")
    assert _events(lake) == [
        ("u1", "i1", "click", _t(2024, 3, 1, 10), "s1", 1500, dt.date(2024, 3, 1)),
        ("u1", "i2", "like", _t(2024, 3, 1, 10), None, None, dt.date(2024, 3, 1)),
        ("u2", "i,3", "purchase", _t(2024, 3, 2, 6, 30), "s2", 0, dt.date(2024, 3, 2)),
    ]
    bad = _quarantine(lake)
    assert {k: len(v) for k, v in bad.items()} == {
        "events/missing_user_id": 2,
        "events/missing_item_id": 1,
        "events/unknown_event": 1,
        "events/unparseable_ts": 1,
        "events/ts_out_of_range": 2,
        "events/negative_dwell_ms": 1,
        "events/unparseable_dwell_ms": 1,
        "events/wrong_column_count": 2,
    }
    assert bad["events/unknown_event"][0]["event"] == "teleport"
    assert sorted(r["line"] for r in bad["events/wrong_column_count"]) == [
        "u3,i4,click",
        "u3,i4,click,2024-03-01T10:00:00Z,s1,5,extra",
    ]
    assert {r.run_id for r in lake.read("quarantine").collect()} == {"r1"}
    assert summary["rows read"] == "15"
    assert (summary["events valid"], summary["duplicates skipped"], summary["events written"]) == (
        "4",
        "1",
        "3",
    )
    assert summary["quarantined"] == "11"
    assert summary["events/ts_out_of_range"] == "2"
    _assert_second_run_changes_nothing(spark, lake, capsys, events=events)


def test_overlapping_parquet_input_appends_only_new_rows_and_upserts_items_users(
    spark, lake, tmp_path, capsys
):
    first = _write(tmp_path / "a.csv", ["user_id,item_id,event,ts", "u1,i1,click,2024-03-01T10:00:00Z"])
    items_a = _write(tmp_path / "items_a.csv", ["item_id,category,tags", "i1,news,a|b", "i2,sport,"])
    users = _write(tmp_path / "users.csv", ["user_id,gender,signup_ts", "u1,f,2024-01-01"])
    _ingest(spark, lake, capsys, events=first, items=items_a, users=users)
    second = str(tmp_path / "b.parquet")
    spark.createDataFrame(
        [("u1", "i1", "click", "2024-03-01T10:00:00Z"), ("u2", "i2", "like", "1709287200")],
        "user_id string, item_id string, event string, ts string",
    ).coalesce(1).write.parquet(second)
    items_b = _write(tmp_path / "items_b.csv", ["item_id,category,tags", "i2,music,x", "i3,news,"])
    versions = {t: lake.version(t) for t in TABLES}
    summary = _ingest(spark, lake, capsys, events=second, items=items_b, users=users)
    assert (summary["already present"], summary["events written"]) == ("1", "1")
    assert (summary["items written"], summary["users written"]) == ("2", "0")
    assert [e[:3] for e in _events(lake)] == [("u1", "i1", "click"), ("u2", "i2", "like")]
    items = {r.item_id: (r.category, r.tags) for r in lake.read("items").collect()}
    assert items == {"i1": ("news", ["a", "b"]), "i2": ("music", ["x"]), "i3": ("news", None)}
    assert lake.version("users") == versions["users"]
    assert lake.version("items") == versions["items"] + 1
    assert [(r.user_id, r.signup_ts) for r in lake.read("users").collect()] == [("u1", _t(2024, 1, 1))]


def _flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


def test_movielens_100k(spark, lake, tmp_path, capsys):
    ratings = _write(
        tmp_path / "u.data",
        [
            "1\t10\t5\t881250949",
            "1\t20\t3\t881250950",
            "2\t10\t4\t891717742",
            "2\t30\tx\t891717742",
            "\t30\t4\t891717742",
            "3\t\t4\t891717742",
            "3\t30\t4\tsoon",
            "3\t30\t4\t0",
            "3\t30\t4\t99999999999",
            "3\t30\t4",
            "3\t30\t4\t891717742\t9",
            "1\t10\t5\t881250949",
        ],
    )
    items = _write(
        tmp_path / "u.item",
        [
            f"10|Café Society (1995)|01-Jan-1995||http://x|{_flags(5, 8)}",
            f"20|Mystery Film|||http://x|{_flags(0)}",
            "30|Broken|01-Jan-1995",
            f"|No Id|01-Jan-1995||http://x|{_flags(1)}",
        ],
        encoding="latin-1",
    )
    users = _write(
        tmp_path / "u.user", ["1|24|M|technician|85711", "2|53|F|other|94043", "3|x|X|writer|T8H1N", "4|30|M"]
    )
    options = dict(events=ratings, format="movielens", items=items, users=users)
    summary = _ingest(spark, lake, capsys, **options)
    t1, t2 = _t(1997, 12, 4, 15, 55, 49), _t(1998, 4, 4, 19, 22, 22)
    assert [e[:4] for e in _events(lake)] == [
        ("1", "10", "click", t1),
        ("1", "10", "like", t1),
        ("1", "20", "click", _t(1997, 12, 4, 15, 55, 50)),
        ("2", "10", "click", t2),
        ("2", "10", "like", t2),
    ]
    assert {k: len(v) for k, v in _quarantine(lake).items()} == {
        "events/unparseable_rating": 1,
        "events/missing_user_id": 1,
        "events/missing_item_id": 1,
        "events/unparseable_ts": 1,
        "events/ts_out_of_range": 2,
        "events/wrong_column_count": 2,
        "items/wrong_column_count": 1,
        "items/missing_item_id": 1,
        "users/wrong_column_count": 1,
    }
    assert (summary["rows read"], summary["duplicates skipped"], summary["events written"]) == (
        "12",
        "2",
        "5",
    )
    got_items = {r.item_id: (r.category, r.tags, r.created_ts) for r in lake.read("items").collect()}
    assert got_items == {"10": ("Comedy", ["Comedy", "Drama"], _t(1995, 1, 1)), "20": (None, None, None)}
    got_users = {
        r.user_id: (r.gender, r.age_bucket, r.region, r.signup_ts) for r in lake.read("users").collect()
    }
    assert got_users == {
        "1": ("m", "18-24", "8", t1),
        "2": ("f", "45-54", "9", t2),
        "3": ("u", None, "T", None),
    }
    _assert_second_run_changes_nothing(spark, lake, capsys, **options)


def test_movielens_csv_release(spark, lake, tmp_path, capsys):
    ratings = _write(
        tmp_path / "ratings.csv",
        [
            "userId,movieId,rating,timestamp",
            "1,1,4.0,964982703",
            "1,3,3.5,964981247",
            "2,1,bad,964982224",
        ],
    )
    movies = _write(
        tmp_path / "movies.csv",
        [
            "movieId,title,genres",
            "1,Toy Story (1995),Adventure|Animation",
            '3,"Grumpier Old Men, The (1995)",Comedy',
            "4,No Genre Film,(no genres listed)",
        ],
    )
    summary = _ingest(spark, lake, capsys, events=ratings, format="movielens", items=movies)
    assert [e[:3] for e in _events(lake)] == [("1", "1", "click"), ("1", "1", "like"), ("1", "3", "click")]
    assert _quarantine(lake)["events/unparseable_rating"] == [
        {"userId": "2", "movieId": "1", "rating": "bad", "timestamp": "964982224"}
    ]
    got = {r.item_id: (r.category, r.tags, r.created_ts) for r in lake.read("items").collect()}
    assert got == {
        "1": ("Adventure", ["Adventure", "Animation"], _t(1995, 1, 1)),
        "3": ("Comedy", ["Comedy"], _t(1995, 1, 1)),
        "4": (None, None, None),
    }
    assert summary["events/unparseable_rating"] == "1"


def test_taobao(spark, lake, tmp_path, capsys):
    behaviour = _write(
        tmp_path / "UserBehavior.csv",
        [
            "1,100,5,pv,1511544070",
            "1,100,5,fav,1511544071",
            "1,101,6,cart,1511544072",
            "2,100,7,buy,1511600000",
            "2,101,6,steal,1511600000",
            "3,102,8,pv,abc",
            "3,102,8,pv,0",
            "3,102,8,pv,1511544070,x",
            "3,102",
            ",102,8,pv,1511544070",
            "3,,8,pv,1511544070",
            "1,100,5,pv,1511544070",
        ],
    )
    summary = _ingest(spark, lake, capsys, events=behaviour, format="taobao")
    assert [e[:4] for e in _events(lake)] == [
        ("1", "100", "click", _t(2017, 11, 24, 17, 21, 10)),
        ("1", "100", "like", _t(2017, 11, 24, 17, 21, 11)),
        ("1", "101", "like", _t(2017, 11, 24, 17, 21, 12)),
        ("2", "100", "purchase", _t(2017, 11, 25, 8, 53, 20)),
    ]
    bad = _quarantine(lake)
    assert {k: len(v) for k, v in bad.items()} == {
        "events/unknown_event": 1,
        "events/unparseable_ts": 1,
        "events/ts_out_of_range": 1,
        "events/wrong_column_count": 2,
        "events/missing_user_id": 1,
        "events/missing_item_id": 1,
    }
    assert bad["events/unknown_event"][0]["behavior"] == "steal"
    assert {r.item_id: (r.category, r.tags) for r in lake.read("items").collect()} == {
        "100": ("7", None),
        "101": ("6", None),
    }
    assert (summary["rows read"], summary["duplicates skipped"], summary["items written"]) == ("12", "1", "2")
    _assert_second_run_changes_nothing(spark, lake, capsys, events=behaviour, format="taobao")


def test_cli_in_a_subprocess(tmp_path):
    events = _write(tmp_path / "events.csv", CANONICAL[:4])
    env = {**os.environ, "RECSYS_DRIVER_MEMORY": "2g", "SPARK_MASTER": "local[1]"}
    argv = [
        sys.executable,
        "-m",
        "recsys_spark.cli",
        "ingest",
        "--lake",
        str(tmp_path / "lake"),
        "--events",
        events,
    ]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows read: 3" in done.stdout
    assert "events written: 3" in done.stdout


def test_cli_usage_errors(spark, tmp_path, capsys):
    from recsys_spark.cli import main

    lake = str(tmp_path / "lake")
    assert main(["ingest", "--lake", lake, "--events", str(tmp_path / "nope.csv")], spark=spark) == 2
    assert "nope.csv" in capsys.readouterr().err
    assert main(["ingest", "--lake", lake, "--events", "x.csv", "--format", "excel"], spark=spark) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_spark_flags_too_many_and_too_few_fields_even_when_few_columns_are_read(spark, tmp_path):
    from pyspark.sql import functions as F

    from recsys_spark.ingest.canonical import string_csv
    from recsys_spark.ingest.quarantine import ROW, malformed, raw_row

    path = _write(tmp_path / "x.csv", ["a,b,c", "1,2,3", "4,5", "6,7,8,9", '10,"1,1",12', "", "13"])
    df = string_csv(spark, path, ["a", "b", "c"], header="true").withColumn(ROW, raw_row(["a", "b", "c"]))
    flagged = df.select("a", malformed().alias("bad")).filter(F.col("a").isNotNull()).collect()
    assert sorted((r.a, r.bad) for r in flagged) == [
        ("1", False),
        ("10", False),
        ("13", True),
        ("4", True),
        ("6", True),
    ]


@pytest.mark.parametrize("name", ["u.data", "ratings.csv", "ratings.dat"])
def test_movielens_release_is_told_by_file_name(name):
    from recsys_spark.ingest.movielens import layout

    assert layout(f"/data/{name}")[0] == name
    with pytest.raises(ValueError, match="MovieLens"):
        layout("/data/other.csv")
