"""stats: daily_counts, user_stats and item_stats against a pure-Python reference built from the definitions."""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys_spark.lake.tables import EVENT_TYPES, table_schema
from recsys_spark.stats import (
    PEER,
    RATES,
    StatsConfig,
    _daily_counts,
    daily_counts_for,
    days_to_compute,
    rollup_stats,
    run,
    stats_columns,
    validate,
)

FIRST_DAY = dt.date(2026, 9, 1)
N_DAYS = 40
D = FIRST_DAY + dt.timedelta(days=32)  # 7 days of events after D must be ignored
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
ROOT = Path(__file__).resolve().parents[1]

# (user_id, item_id, event, ts in epoch seconds, session_id, dwell_ms)
Row = tuple[str, str, str, int, "str | None", "int | None"]


def _day_of(ts: int) -> dt.date:
    return (EPOCH + dt.timedelta(seconds=ts)).date()


def _random_events(seed: int, n_days: int = N_DAYS, users: int = 30, items: int = 20) -> list[Row]:
    rng = random.Random(seed)
    rows: list[Row] = []
    start = int((dt.datetime.combine(FIRST_DAY, dt.time(), dt.timezone.utc) - EPOCH).total_seconds())
    for d in range(n_days):
        midnight = start + d * 86400
        # Skewed ids so that counts, and hence quantile buckets, have ties and spread.
        for _ in range(rng.randint(10, 30)):
            user = f"u{min(int(rng.expovariate(1 / 8)), users - 1):02d}"
            item = f"i{min(int(rng.expovariate(1 / 6)), items - 1):02d}"
            event = rng.choices(EVENT_TYPES, weights=[12, 5, 2, 1, 1, 1, 1])[0]
            dwell = rng.choice([None, rng.randrange(0, 90_000)])
            session = rng.choice([None, f"s{rng.randrange(50)}"])
            rows.append((user, item, event, midnight + rng.randrange(86400), session, dwell))
    after_d = start + (D - FIRST_DAY).days * 86400 + 86400 + 3600
    rows += [
        ("u_gone", "i_gone", "click", start + 3600, None, 10),  # day 0: outside the 30-day window of D
        ("u_future", "i_future", "purchase", after_d, None, 5),  # the day after D: must be ignored
        ("u00", "i00", "click", after_d + 60, None, 10**12),
        # The last second of D is inside every window of D.
        ("u_edge", "i00", "impression", start + (D - FIRST_DAY).days * 86400 + 86399, None, None),
    ]
    return rows


def _events_df(spark, rows: list[Row]):
    return (
        spark.createDataFrame(
            rows, "user_id string, item_id string, event string, ts_s long, session_id string, dwell_ms long"
        )
        .withColumn("ts", F.timestamp_seconds("ts_s"))
        .withColumn("dt", F.to_date("ts"))
        .drop("ts_s")
    )


# -- the reference: loops over raw events, straight from docs/stats.md -----------------------------
def _reference_daily(rows: list[Row], days: set[dt.date]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    peers: dict[tuple, set] = defaultdict(set)
    for user, item, event, ts, _, dwell in rows:
        day = _day_of(ts)
        if day not in days:
            continue
        for entity, eid, peer in (("user", user, item), ("item", item, user)):
            key = (entity, eid, day)
            rec = out.setdefault(key, {**{e: 0 for e in EVENT_TYPES}, "dwell_ms": 0, "last_ts": ts})
            rec[event] += 1
            rec["dwell_ms"] += dwell or 0
            rec["last_ts"] = max(rec["last_ts"], ts)
            peers[key].add(peer)
    for key, rec in out.items():
        rec["distinct_peers"] = len(peers[key])
        rec["last_ts"] *= 1_000_000
    return out


def _reference_stats(rows: list[Row], day: dt.date, entity: str, cfg: StatsConfig) -> dict[str, dict]:
    windows = sorted(set(cfg.windows))
    longest = windows[-1]
    m = cfg.prior_strength
    idx = 0 if entity == "user" else 1
    stats: dict[str, dict] = {}
    active: dict[str, set] = defaultdict(set)
    peers_today: dict[str, set] = defaultdict(set)
    last: dict[str, int] = {}
    for row in rows:
        eid, event, ts, dwell = row[idx], row[2], row[3], row[5]
        age = (day - _day_of(ts)).days  # 0 on D itself
        if age < 0:
            continue
        last[eid] = max(last.get(eid, ts), ts)
        if age >= longest:
            continue
        rec = stats.setdefault(eid, {f"{e}_{w}d": 0 for w in windows for e in (*EVENT_TYPES, "dwell_ms")})
        for w in windows:
            if age < w:
                rec[f"{event}_{w}d"] += 1
                rec[f"dwell_ms_{w}d"] += dwell or 0
                active[(eid, w)].add(age)
        if age == 0:
            peers_today[eid].add(row[1 - idx])
    for w in windows:
        totals = {e: sum(rec[f"{e}_{w}d"] for rec in stats.values()) for e in EVENT_TYPES}
        for name, num, den in RATES:
            g = totals[num] / totals[den] if totals[den] > 0 else 0.0
            for rec in stats.values():
                rec[f"{name}_{w}d"] = (rec[f"{num}_{w}d"] + m * g) / (rec[f"{den}_{w}d"] + m)
    n = len(stats)
    for eid, rec in stats.items():
        for w in windows:
            rec[f"active_days_{w}d"] = len(active[(eid, w)])
            for e in EVENT_TYPES:
                rec[f"log1p_{e}_{w}d"] = math.log1p(rec[f"{e}_{w}d"])
        rec[f"distinct_{PEER[entity]}_1d"] = len(peers_today[eid])
        rec["last_active_ts"] = last[eid] * 1_000_000
        rec["days_since_active"] = (day - _day_of(last[eid])).days
        for e in cfg.bucket_events:
            value = rec[f"{e}_{longest}d"]
            smaller = sum(1 for other in stats.values() if other[f"{e}_{longest}d"] < value)
            rec[f"{e}_bucket"] = cfg.quantile_buckets * smaller // n
    return stats


# -- helpers -----------------------------------------------------------------------------------------
def _spark_rows(df, key: list[str]) -> dict:
    """Rows keyed by `key`, timestamps as epoch microseconds (no local-time-zone conversions)."""
    cols = [F.unix_micros(c).alias(c) if t == "timestamp" else F.col(c) for c, t in df.dtypes]
    out = {}
    for r in df.select(*cols).collect():
        d = r.asDict()
        out[tuple(d.pop(k) for k in key)] = d
    return out


def _assert_same(actual: dict, expected: dict, what: str) -> None:
    assert set(actual) == set(expected), f"{what}: ids differ: {sorted(set(actual) ^ set(expected))[:10]}"
    for key, exp in expected.items():
        got = actual[key]
        for col, value in exp.items():
            if isinstance(value, float):
                close = math.isclose(got[col], value, rel_tol=1e-9, abs_tol=1e-12)
                assert close, (what, key, col, got[col], value)
            else:
                assert got[col] == value, (what, key, col, got[col], value)


def _check_against_reference(lake, rows, day: dt.date, cfg: StatsConfig) -> None:
    for entity in ("user", "item"):
        table = f"{entity}_stats"
        df = lake.read(table).filter(F.col("dt") == F.lit(day)).drop("dt")
        contract = table_schema(table).column_names
        assert df.columns == contract[:-1]
        # Columns of the contract that these options do not produce are null.
        for col in set(contract) - set(stats_columns(entity, cfg)):
            assert df.filter(F.col(col).isNotNull()).count() == 0, col
        actual = {k[0]: v for k, v in _spark_rows(df, [f"{entity}_id"]).items()}
        _assert_same(actual, _reference_stats(rows, day, entity, cfg), f"{table} {day}")


def _table(lake, name):
    return sorted(tuple(r) for r in lake.read(name).collect())


def _daily_counts_commit_days(lake) -> list[str]:
    latest = lake.history("daily_counts", limit=1)[0]
    return latest["recsys.stats.days"].split(",")


# -- tests ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed, options", [(2, {"prior_strength": 3.5, "quantile_buckets": 4, "bucket_events": ["click"]})]
)
def test_every_count_and_rate_equals_the_reference(spark, lake, seed, options):
    rows = _random_events(seed)
    lake.overwrite("events", _events_df(spark, rows))
    cfg = StatsConfig(lake=lake.root, date=D, **options)
    assert run(cfg, spark, lake) == 0

    window = {D - dt.timedelta(days=k) for k in range(30)}
    daily = _spark_rows(lake.read("daily_counts"), ["entity_type", "entity_id", "dt"])
    _assert_same(daily, _reference_daily(rows, window), "daily_counts")
    assert max(k[2] for k in daily) == D  # nothing after D was counted
    _check_against_reference(lake, rows, D, cfg)
    users = {r[0] for r in lake.read("user_stats").select("user_id").collect()}
    assert "u_future" not in users and "u_gone" not in users and "u_edge" in users
    u00 = lake.read("user_stats").filter("user_id = 'u00'").first()
    assert u00["dwell_ms_30d"] < 10**12  # the big dwell after D is not in the window


def test_rerun_is_idempotent_and_the_next_day_computes_one_new_day(spark, lake):
    rows = _random_events(7)
    events = _events_df(spark, rows)
    lake.overwrite("events", events)
    cfg = StatsConfig(lake=lake.root, date=D)
    run(cfg, spark, lake)
    assert len(_daily_counts_commit_days(lake)) == 30  # fresh lake: the whole window, in one commit
    _check_against_reference(lake, rows, D, cfg)
    first = {t: _table(lake, t) for t in ("daily_counts", "user_stats", "item_stats")}
    versions = {t: lake.version(t) for t in first}

    run(cfg, spark, lake)
    assert {t: _table(lake, t) for t in first} == first
    assert {t: lake.version(t) for t in first} == {t: v + 1 for t, v in versions.items()}
    assert _daily_counts_commit_days(lake) == [str(D)]

    nxt = D + dt.timedelta(days=1)
    run(StatsConfig(lake=lake.root, date=nxt), spark, lake)
    assert _daily_counts_commit_days(lake) == [str(nxt)]
    assert lake.read("daily_counts").select("dt").distinct().count() == 31
    assert lake.version("daily_counts") == versions["daily_counts"] + 2
    _check_against_reference(lake, rows, nxt, cfg)
    # The day before is untouched by the later run.
    assert sorted(
        tuple(r) for r in lake.read("user_stats").filter(F.col("dt") == F.lit(D)).collect()
    ) == sorted(r for r in first["user_stats"])

    # Stats from the stored daily_counts (which hold a day after D) equal the published ones, and stats
    # straight from raw events equal them too.
    stored = lake.read("daily_counts")
    assert _spark_rows(rollup_stats(stored, D, "user", cfg), ["user_id"]) == _spark_rows(
        lake.read("user_stats").filter(F.col("dt") == F.lit(D)), ["user_id"]
    )
    from_raw = _daily_counts(events.filter(F.col("dt") <= F.lit(nxt)))
    for entity in ("user", "item"):
        published = lake.read(f"{entity}_stats").filter(F.col("dt") == F.lit(nxt))
        assert _spark_rows(rollup_stats(from_raw, nxt, entity, cfg), [f"{entity}_id"]) == _spark_rows(
            published, [f"{entity}_id"]
        )
    for day in (nxt, D - dt.timedelta(days=20)):
        one_day = _spark_rows(daily_counts_for(events, day), ["entity_type", "entity_id", "dt"])
        assert one_day == _spark_rows(
            stored.filter(F.col("dt") == F.lit(day)), ["entity_type", "entity_id", "dt"]
        )
        assert one_day and {k[2] for k in one_day} == {day}


def test_days_to_compute():
    cfg = StatsConfig()
    day = dt.date(2026, 3, 31)
    assert days_to_compute(day, [], cfg) == [day - dt.timedelta(days=k) for k in range(29, -1, -1)]
    have = [day - dt.timedelta(days=k) for k in range(1, 40)]
    assert days_to_compute(day, have, cfg) == [day]
    assert days_to_compute(day, have + [day], StatsConfig(refresh_days=3)) == [
        day - dt.timedelta(days=2),
        day - dt.timedelta(days=1),
        day,
    ]
    gap = [d for d in have if d != day - dt.timedelta(days=10)]
    assert days_to_compute(day, gap, StatsConfig(windows=[1, 7])) == [day]
    assert days_to_compute(day, gap, cfg) == [day - dt.timedelta(days=10), day]


def test_schema_files_match_the_code_and_bad_options_are_refused():
    from recsys_spark.errors import UsageError

    for entity in ("user", "item"):
        assert table_schema(f"{entity}_stats").column_names == stats_columns(entity, StatsConfig())
        assert table_schema(f"{entity}_stats").partition_by == ("dt",)
    assert table_schema("daily_counts").partition_by == ("dt",)
    validate(StatsConfig(windows=[1, 7]))  # a subset of the contract's windows is fine (others null)
    for bad in (
        {"windows": [14]},
        {"windows": [0, 7]},
        {"prior_strength": -1.0},
        {"quantile_buckets": 0},
        {"bucket_events": ["scroll"]},
        {"bucket_events": ["purchase"]},  # purchase_bucket is not in the contract
    ):
        with pytest.raises(UsageError):
            validate(StatsConfig(**bad))


def test_cli_subprocess(spark, lake):
    rows = _random_events(3, n_days=5, users=6, items=5)
    lake.overwrite("events", _events_df(spark, rows))
    day = FIRST_DAY + dt.timedelta(days=3)
    env = {**os.environ, "RECSYS_DRIVER_MEMORY": "2g"}
    cmd = [sys.executable, "-m", "recsys_spark.cli", "stats", "--lake", lake.root, "--date", day.isoformat()]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "user_stats" in done.stdout
    written = lake.read("user_stats").filter(F.col("dt") == F.lit(day)).count()
    assert written == len(_reference_stats(rows, day, "user", StatsConfig()))
    assert _daily_counts_commit_days(lake) == [str(day - dt.timedelta(days=k)) for k in range(29, -1, -1)]
