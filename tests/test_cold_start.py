"""Item cold-start measurements: new items in the final lists, their held-out CTR, days to similarity."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest
from pyspark.sql import functions as F

from recsys_spark.evaluate.cold_start import (
    _quantile,
    days_to_similarity,
    new_item_share,
    new_vs_old_ctr,
)

UTC = dt.timezone.utc
DAY = dt.date(2026, 11, 5)  # with new_item_days=2 new means created in [11-04 00:00, 11-06 00:00)


def _ts(day, hour=0, minute=0, second=0):
    return dt.datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


ITEMS = [
    ("a", _ts(4)),  # the window's first instant: new
    ("b", _ts(5, 23, 59, 59)),  # new
    ("c", _ts(6)),  # D + 1 00:00: not new (created after D)
    ("d", _ts(3, 23, 59, 59)),  # just before the window: old
    ("e", None),  # unknown: old
    ("f", dt.datetime(2020, 1, 1, tzinfo=UTC)),  # old
]


@pytest.fixture(scope="module")
def items(spark):
    return spark.createDataFrame(ITEMS, "item_id string, created_ts timestamp")


def _recs(spark, lists, day=DAY):
    rows = [(u, i, r + 1, day) for u, ranked in lists.items() for r, i in enumerate(ranked)]
    return spark.createDataFrame(rows, "user_id string, item_id string, rank int, dt date")


def _events(spark, rows):
    frame = spark.createDataFrame(rows, "user_id string, item_id string, event string, ts timestamp")
    return frame.withColumn("dt", F.to_date("ts"))


def test_new_item_share_counts_lists_and_slots_with_the_window_boundaries(spark, items):
    lists = {"u1": ["a", "d", "f"], "u2": ["d", "e"], "u3": ["b", "a", "c"], "u4": ["f"]}
    recs = _recs(spark, lists).unionByName(_recs(spark, {"u5": ["a"]}, DAY - dt.timedelta(days=1)))
    got = new_item_share(recs, items, DAY, new_item_days=2)
    assert (got["lists"], got["lists_with_new_item"], got["share_lists_with_new_item"]) == (4, 2, 0.5)
    assert (got["slots"], got["new_item_slots"]) == (9, 3)
    assert got["share_slots_new"] == pytest.approx(3 / 9)
    # catalogue of D: a, b, d, e, f (c is created after D); new: a, b
    assert (got["catalogue_items"], got["catalogue_new_items"], got["share_catalogue_new"]) == (5, 2, 0.4)
    # one day only: the window starts at D 00:00, so a (created on D - 1) is old
    one = new_item_share(recs, items, DAY, new_item_days=1)
    assert (one["lists_with_new_item"], one["new_item_slots"], one["catalogue_new_items"]) == (1, 1, 1)
    with pytest.raises(ValueError):
        new_item_share(recs, items, DAY, new_item_days=0)


def test_new_vs_old_ctr_pools_clicks_over_impressions_per_group(spark, items):
    def times(item, event, n, day=6):
        return [("u", item, event, _ts(day, 10, k)) for k in range(n)]

    rows = (
        times("a", "impression", 4)
        + times("a", "click", 2)
        + times("b", "impression", 1)
        + times("c", "impression", 2)
        + times("c", "click", 1)
        + times("d", "impression", 5)
        + times("d", "click", 1)
        + times("e", "impression", 3)
        + times("e", "click", 1)
        + times("e", "like", 1)
        + times("z", "impression", 2)  # not in items: old
        + times("a", "click", 3, day=5)  # day D, not the held-out day
    )
    got = new_vs_old_ctr(_events(spark, rows), items, DAY, new_item_days=2)
    assert got["held_out_day"] == "2026-11-06"
    assert got["new"] == {"items": 2, "impressions": 5, "clicks": 2, "ctr": 0.4}
    assert got["old"] == {"items": 3, "impressions": 10, "clicks": 2, "ctr": 0.2}
    assert got["created_after"] == {"items": 1, "impressions": 2, "clicks": 1, "ctr": 0.5}
    assert got["ctr_ratio_new_vs_old"] == pytest.approx(2.0)
    empty = new_vs_old_ctr(_events(spark, times("d", "impression", 1)), items, DAY, new_item_days=2)
    assert empty["new"]["ctr"] is None and empty["ctr_ratio_new_vs_old"] is None


def test_share_and_ctr_match_a_reference_on_random_data(spark):
    rng = random.Random(7)
    day, n = dt.date(2026, 11, 10), 3
    start = dt.datetime(2026, 11, 8, tzinfo=UTC)
    end = dt.datetime(2026, 11, 11, tzinfo=UTC)
    created = {}
    for k in range(40):  # creation times around the window, its two edges included
        offset = rng.choice([0, 3 * 86400, rng.randint(-5 * 86400, 6 * 86400)])
        created[f"i{k}"] = None if rng.random() < 0.1 else start + dt.timedelta(seconds=offset)
    items = spark.createDataFrame(list(created.items()), "item_id string, created_ts timestamp")
    ids = sorted(created)
    lists = {f"u{u}": rng.sample(ids, rng.randint(1, 6)) for u in range(25)}
    events = [
        (
            "u",
            rng.choice(ids + ["unknown"]),
            rng.choice(["impression", "impression", "click", "like"]),
            dt.datetime(2026, 11, rng.choice([10, 11, 11]), 12, tzinfo=UTC),
        )
        for _ in range(300)
    ]

    def new(i):
        return created.get(i) is not None and start <= created[i] < end

    share = new_item_share(_recs(spark, lists, day), items, day, n)
    assert share["lists_with_new_item"] == sum(any(new(i) for i in r) for r in lists.values())
    assert share["new_item_slots"] == sum(new(i) for r in lists.values() for i in r)
    assert share["slots"] == sum(len(r) for r in lists.values())
    assert share["catalogue_new_items"] == sum(new(i) for i in ids)
    assert share["catalogue_items"] == sum(created[i] is None or created[i] < end for i in ids)

    def group(i):
        c = created.get(i)
        return "created_after" if c is not None and c >= end else "new" if new(i) else "old"

    held_out = [e for e in events if e[3].date() == dt.date(2026, 11, 11)]
    got = new_vs_old_ctr(_events(spark, events), items, day, n)
    for name in ("new", "old", "created_after"):
        imp = sum(e[2] == "impression" for e in held_out if group(e[1]) == name)
        clk = sum(e[2] == "click" for e in held_out if group(e[1]) == name)
        assert (got[name]["impressions"], got[name]["clicks"]) == (imp, clk), name
        assert got[name]["ctr"] == (pytest.approx(clk / imp) if imp else None)


def test_quantile_of_a_histogram_is_numpys_linear_quantile():
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.integers(-2, 9, size=rng.integers(1, 30))
        histogram = {int(v): int((values == v).sum()) for v in np.unique(values)}
        for q in (0.0, 0.5, 0.9, 1.0):
            assert _quantile(histogram, q) == pytest.approx(float(np.quantile(values, q)))
    assert _quantile({}, 0.5) is None


def test_days_to_similarity_on_three_dated_versions(spark, lake):
    def version(pairs, day):
        rows = [(i, j, 1.0, 1) for i, j in pairs]
        df = spark.createDataFrame(rows, "item_id string, sim_item_id string, score double, rank int")
        lake.overwrite("itemcf_sim", df, metadata={"date": day})

    version([("old", "p")], "2026-11-02")  # p as sim_item_id only, on its creation day
    version([("old", "p"), ("w", "old")], "2026-11-03")
    version([("q", "old"), ("old", "r"), ("p", "old")], "2026-11-04")
    items = spark.createDataFrame(
        [
            ("old", dt.datetime(2026, 10, 1, tzinfo=UTC)),  # before the first version: left out
            ("w", _ts(1, 23, 59, 59)),  # the day before the first version: left out
            ("p", _ts(2, 5)),  # 0 days
            ("q", _ts(2, 23)),  # 2 days
            ("r", _ts(3)),  # 1 day
            ("s", _ts(4, 12)),  # never
            ("t", _ts(5)),  # after the last version: left out
            ("u", None),  # unknown: left out
        ],
        "item_id string, created_ts timestamp",
    )
    got = days_to_similarity(lake, "itemcf_sim", items)
    assert (got["versions"], got["first_date"], got["last_date"]) == (3, "2026-11-02", "2026-11-04")
    assert (got["items"], got["reached"], got["never_reached"], got["share_never_reached"]) == (4, 3, 1, 0.25)
    assert got["days_histogram"] == {"0": 1, "1": 1, "2": 1}
    assert got["median_days"] == 1.0
    assert got["p90_days"] == pytest.approx(1.8)
    assert days_to_similarity(lake, "swing_sim", items) is None
