"""A/B buckets and business metrics against pure-Python references written from docs/experiments.md."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest
from pyspark.sql import functions as F
from scipy import stats

from recsys_spark import cli
from recsys_spark.errors import UsageError
from recsys_spark.experiments.buckets import (
    DEFAULT_SPEC,
    ExperimentSpec,
    bucket_of,
    load_spec,
    parse_spec,
    variant_of,
)
from recsys_spark.experiments.business import business_metrics

ALPHA = 1e-3  # a correct hash fails a chi-square test at this level once in a thousand runs; ids are fixed
N_USERS = 20_000
TWO_LAYERS = {
    "layers": [
        {
            "layer": "rerank",
            "salt": "s-rerank",
            "holdout": [0, 9],
            "variants": {"mmr": [10, 54], "dpp": [55, 99]},
        },
        {"layer": "ranker", "salt": "s-ranker", "variants": {"new": [[0, 19], [50, 69]]}, "default": "old"},
    ]
}


# -- buckets ----------------------------------------------------------------------------------
def _chi2_uniform(counts: Counter, cells: int) -> float:
    expected = sum(counts.values()) / cells
    return sum((counts.get(c, 0) - expected) ** 2 / expected for c in range(cells))


def _chi2_independence(pairs: list[tuple[int, int]], rows: int, cols: int) -> float:
    table = Counter(pairs)
    n = len(pairs)
    by_row, by_col = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    stat = 0.0
    for a in range(rows):
        for b in range(cols):
            expected = by_row[a] * by_col[b] / n
            stat += (table[a, b] - expected) ** 2 / expected
    return stat


@pytest.fixture(scope="module")
def assignment(spark):
    spec = parse_spec(TWO_LAYERS)
    users = spark.range(N_USERS).select(F.format_string("user-%06d", "id").alias("user_id"))
    rows = variant_of(users.repartition(1), spec).collect()
    # Another partitioning, another run: not one row may differ.
    other = (
        variant_of(users.repartition(7), spec)
        .withColumnRenamed("bucket", "b7")
        .withColumnRenamed("variant", "v7")
    )
    mismatched = (
        variant_of(users.repartition(1), spec)
        .join(other, ["user_id", "layer"], "full_outer")
        .filter(
            F.col("bucket").isNull()
            | F.col("b7").isNull()
            | (F.col("bucket") != F.col("b7"))
            | (F.col("variant") != F.col("v7"))
        )
        .count()
    )
    return spec, {(r["user_id"], r["layer"]): (r["bucket"], r["variant"]) for r in rows}, mismatched


def test_assignment_is_stable_across_partitionings_and_equals_the_plain_xxh64(assignment):
    spec, rows, mismatched = assignment
    assert mismatched == 0
    assert len(rows) == 2 * N_USERS
    for (user, layer_name), (bucket, variant) in list(rows.items())[:2000]:
        layer = spec.layer(layer_name)
        assert bucket == bucket_of(user, layer, spec.buckets)
        assert variant == layer.variant_of_bucket(bucket)
    # Pinned: XXH64 is a published algorithm and Spark's xxhash64 has computed it since 3.0; should a
    # Spark upgrade or a code change move a user, this fails before any experiment is reshuffled.
    rerank = parse_spec(DEFAULT_SPEC).layer("rerank")
    assert [bucket_of(u, rerank, 100) for u in ("u1", "user-0000123", "ü-ñ", "")] == [72, 69, 10, 38]


def test_buckets_are_balanced(assignment):
    spec, rows, _ = assignment
    critical = stats.chi2.ppf(1 - ALPHA, spec.buckets - 1)
    for layer in ("rerank", "ranker"):
        counts = Counter(b for (_, name), (b, _) in rows.items() if name == layer)
        assert _chi2_uniform(counts, spec.buckets) < critical, layer
    variants = Counter(v for (_, name), (_, v) in rows.items() if name == "rerank")
    assert variants["holdout"] == pytest.approx(0.10 * N_USERS, rel=0.1)
    assert variants["mmr"] == pytest.approx(0.45 * N_USERS, rel=0.05)
    # ... and the test can fail: a hash that favours one bucket is caught.
    skewed = Counter({b: N_USERS // 100 for b in range(100)})
    skewed[0] += 200
    assert _chi2_uniform(skewed, 100) > critical


def test_layers_are_independent(assignment):
    _, rows, _ = assignment
    users = sorted({u for u, _ in rows})
    # Buckets grouped by tens: 10 x 10 cells of about 200 users each, 81 degrees of freedom.
    pairs = [(rows[u, "rerank"][0] // 10, rows[u, "ranker"][0] // 10) for u in users]
    critical = stats.chi2.ppf(1 - ALPHA, 81)
    assert _chi2_independence(pairs, 10, 10) < critical
    # One layer against itself (what a shared salt would give) is as dependent as can be.
    same = [(a, a) for a, _ in pairs]
    assert _chi2_independence(same, 10, 10) > critical


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"layers": [{"layer": "a", "holdout": [0, 9], "variants": {"x": [5, 20]}}]}, "bucket 5 is in both"),
        ({"layers": [{"layer": "a", "variants": {"x": [90, 100]}}]}, "not within"),
        ({"layers": [{"layer": "a", "variants": {"all": [0, 9]}}]}, "reserved"),
        ({"layers": [{"layer": "a"}, {"layer": "b", "salt": "a"}]}, "share a salt"),
        ({"layers": []}, "no layers"),
        ({"buckets": 50, "layers": [{"layer": "a"}]}, "--buckets is 100"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_spec(spec, 100)


def test_spec_round_trips_through_its_json(tmp_path):
    spec = parse_spec(TWO_LAYERS, 100)
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    assert load_spec(str(path), 100) == spec
    assert isinstance(load_spec(None), ExperimentSpec) and load_spec(None).layer("rerank").salt == "rerank"


# -- business metrics -------------------------------------------------------------------------
D = dt.date(2026, 10, 10)
UTC = dt.timezone.utc


def _day(k: int) -> dt.date:
    return D + dt.timedelta(days=k)


def _ev(user, item, event, k, dwell=None):
    return (user, item, event, dt.datetime.combine(_day(k), dt.time(12), UTC), dwell)


CATALOGUE = [f"i{n}" for n in range(1, 11)]
EVENTS = [
    _ev("a", "i1", "click", 0, 100),
    _ev("a", "i1", "impression", 0, 7),
    _ev("a", "i2", "like", 1),
    _ev("a", "i3", "click", 3),
    _ev("b", "i2", "like", 0),
    _ev("b", "i2", "click", 0, 50),
    _ev("b", "i4", "click", 7),
    _ev("c", "i2", "impression", 0, 30),  # impressions only on D: not active, but shown items count
    _ev("c", "i3", "impression", 0),
    _ev("c", "i3", "comment", 1),
    _ev("e", "i404", "impression", 0),  # not in the catalogue: not coverage
    _ev("e", "i5", "click", 0),
    _ev("e", "i5", "click", 8),  # 8 days later: outside D's week
    _ev("g", "i6", "click", -1),  # the day before: not a user of D
    *[_ev("f", "i1", "click", k, 10) for k in range(0, 9)],  # every day D .. D+8
    _ev("f", "i1", "impression", 0),
]
BUCKETS = [
    ("a", "rerank", 12, "mmr"),
    ("b", "rerank", 60, "dpp"),
    ("f", "rerank", 11, "mmr"),
    ("c", "rerank", 3, "holdout"),
    ("a", "ranker", 1, "x"),
    ("b", "ranker", 1, "x"),
    ("e", "ranker", 2, "y"),
    ("f", "ranker", 2, "y"),
]


def _reference(day: dt.date, present: set[dt.date], members: set[str] | None) -> dict:
    """The module docstring's definitions, with loops over EVENTS, for the users in `members`."""
    group = (lambda u: True) if members is None else (lambda u: u in members)
    active = {(u, ts.date()) for u, _, e, ts, _ in EVENTS if e != "impression"}
    users = {u for u, d in active if d == day and group(u)}
    n = len(users)
    clicks = sum(1 for u, _, e, ts, _ in EVENTS if u in users and ts.date() == day and e == "click")
    dwell = sum(w or 0 for u, _, _, ts, w in EVENTS if u in users and ts.date() == day)
    week = [day + dt.timedelta(days=k) for k in range(1, 8)]
    complete = all(d in present for d in week)
    days_active = {u: sum((u, d) in active for d in week) for u in users}
    shown = {i for u, i, e, ts, _ in EVENTS if e == "impression" and ts.date() == day and group(u)}
    shown &= set(CATALOGUE)
    retained = sum((u, week[0]) in active for u in users)
    return {
        "active_users": n,
        "clicks": clicks,
        "dwell_ms": dwell,
        "retained_1d": retained if week[0] in present else None,
        "retention_1d": retained / n if week[0] in present and n else None,
        "retained_7d": sum(v > 0 for v in days_active.values()) if complete else None,
        "retention_7d": sum(v > 0 for v in days_active.values()) / n if complete and n else None,
        "lt7": sum(days_active.values()) / n if complete and n else None,
        "items_shown": len(shown),
        "coverage": len(shown) / len(CATALOGUE),
        "complete": complete,
        "days_after": sum(d in present for d in week),
    }


@pytest.fixture(scope="module")
def inputs(spark):
    events = (
        spark.createDataFrame(
            EVENTS, "user_id string, item_id string, event string, ts timestamp, dwell_ms long"
        )
        .withColumn("dt", F.to_date("ts"))
        .withColumn("session_id", F.lit(None).cast("string"))
    )
    items = spark.createDataFrame([(i,) for i in CATALOGUE], "item_id string")
    buckets = spark.createDataFrame(BUCKETS, "user_id string, layer string, bucket int, variant string")
    return events, items, buckets


def test_metrics_equal_the_reference_and_variants_add_up(inputs):
    events, items, buckets = inputs
    present = {_day(k) for k in range(-1, 9)}
    # D and D+1 have their whole week in the lake, D+2 its next day but not its week, D+8 nothing after.
    targets = [D, _day(1), _day(2), _day(8)]
    rows = business_metrics(events, items, targets, present, buckets).collect()
    got = {(r["dt"], r["layer"], r["variant"]): r.asDict() for r in rows}
    members = {
        (layer, variant): {u for u, la, _, v in BUCKETS if la == layer and v == variant}
        for _, layer, _, variant in BUCKETS
    }
    everyone = {u for u, *_ in EVENTS}
    for day in targets:
        expected = {("all", "all"): _reference(day, present, None)}
        for (layer, variant), users in members.items():
            expected[layer, variant] = _reference(day, present, users)
        for layer in ("rerank", "ranker"):
            assigned = {u for u, la, _, _ in BUCKETS if la == layer}
            expected[layer, "unassigned"] = _reference(day, present, everyone - assigned)
        expected = {k: v for k, v in expected.items() if v["active_users"] or v["items_shown"]}
        assert {(la, v) for d, la, v in got if d == day} == set(expected), day
        for key, values in expected.items():
            row = got[(day, *key)]
            for name, value in values.items():
                assert row[name] == pytest.approx(value), (day, key, name)
        # Each layer's variants split the day's totals exactly.
        for layer in ("rerank", "ranker"):
            parts = [r for (d, la, _), r in got.items() if d == day and la == layer]
            for name in (
                "active_users",
                "clicks",
                "dwell_ms",
                "retained_1d",
                "retained_7d",
                "active_days_7d",
            ):
                total = got[day, "all", "all"][name]
                summed = None if total is None else sum(r[name] for r in parts)
                assert summed == total, (day, layer, name)
    assert {d for d, _, _ in got} == set(targets)
    # Hand-checked: a, b, e, f are active on D (c only saw impressions, g came the day before).
    overall = got[D, "all", "all"]
    assert (overall["active_users"], overall["clicks"], overall["dwell_ms"]) == (4, 3 + 1, 100 + 7 + 50 + 10)
    assert (overall["retention_1d"], overall["retention_7d"], overall["lt7"]) == (0.5, 0.75, 2.5)
    assert overall["complete"] and overall["coverage"] == pytest.approx(0.3)
    next_only = got[_day(2), "all", "all"]
    assert next_only["retention_1d"] is not None and next_only["lt7"] is None and not next_only["complete"]
    nothing = got[_day(8), "all", "all"]
    assert nothing["retention_1d"] is None and nothing["days_after"] == 0


def test_jobs_write_buckets_and_metrics_through_their_gates(spark, lake, inputs, tmp_path):
    events, items, _ = inputs
    lake.overwrite("events", events)
    lake.overwrite("items", items)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TWO_LAYERS))
    common = ["--lake", lake.root, "--date", str(_day(1))]
    assert cli.main(["buckets", *common, "--experiments", str(spec)], spark=spark) == 0
    assert cli.main(["business-metrics", *common, "--lookback-days", "1"], spark=spark) == 0
    buckets = lake.read("ab_buckets")
    assert buckets.columns == ["user_id", "layer", "bucket", "variant"]  # the public contract, exactly
    assert buckets.count() == 2 * 6  # users a, b, c, e, f, g in both layers
    metrics = lake.read("business_metrics")
    assert {r[0] for r in metrics.select("dt").distinct().collect()} == {D, _day(1)}
    day = metrics.filter((F.col("dt") == F.lit(D)) & (F.col("layer") == "all")).first()
    assert (day["active_users"], day["retention_1d"], day["complete"]) == (4, 0.5, True)
    with pytest.raises(UsageError):
        load_spec(str(tmp_path / "missing.json"))
