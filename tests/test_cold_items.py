"""New items on day 0: the neighbour-average vectors against a pure-Python reference, the window's
edges, and the recall job recalling a never-clicked new item through a vector channel.

The reference is written from the formula in `recsys_spark/candidates/cold_items.py` (docs/recommend.md
"New items on day 0"), not from the code.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from pathlib import Path

import numpy as np

from recsys_spark import cli
from recsys_spark.candidates.cold_items import (
    are_unit_vectors,
    filled_summary,
    new_item_window,
    with_new_item_vectors,
)
from recsys_spark.lake import table_schema

D = dt.date(2026, 3, 10)
UTC = dt.timezone.utc
ITEMS_SCHEMA = "item_id string, category string, author_id string, tags array<string>, created_ts timestamp"
VECTORS_SCHEMA = "item_id string, vector array<float>"


def ref_fill(items, vectors, day, days, normalise):
    """{item: vector} for the new items without a vector, straight from the formula."""
    start = dt.datetime.combine(day - dt.timedelta(days=days - 1), dt.time(), UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), UTC)

    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    def mean(vs):
        return [sum(col) / len(vs) for col in zip(*vs)]

    def groups(row):
        _, category, author, tags, _ = row
        g = set()
        if category is not None:
            g.add(("category", category))
        if author is not None:
            g.add(("author", author))
        g |= {("tag", t) for t in (tags or []) if t is not None}
        return g

    directions = {i: unit(v) for i, v in vectors.items()}
    members: dict = {}
    for row in items:
        if row[0] in directions:
            for g in groups(row):
                members.setdefault(g, []).append(directions[row[0]])
    catalogue = mean(list(directions.values()))
    out = {}
    for row in items:
        item, created = row[0], row[4]
        if item in vectors or not (start <= created < end):
            continue
        available = [mean(members[g]) for g in groups(row) if g in members]
        w = mean(available) if available else catalogue
        out[item] = unit(w) if normalise else w
    return out


def random_catalogue(rng: random.Random, n: int = 60, d: int = 5):
    categories, authors = ["c0", "c1", "c2", "c3", None], ["a0", "a1", "a2", "a3", "a4", None]
    tags = [f"t{k}" for k in range(7)]
    old = dt.datetime(2026, 1, 5, 12, tzinfo=UTC)
    items, vectors = [], {}
    for k in range(n):
        # days relative to D: before the window, inside it (D-2..D), or after D
        offset = rng.choice([-40, -20, -3, -2, -1, 0, 0, 1, 2])
        created = (
            old
            if offset == -40
            else dt.datetime.combine(D + dt.timedelta(days=offset), dt.time(rng.randint(0, 23)), UTC)
        )
        row_tags = None if rng.random() < 0.1 else rng.sample(tags, rng.randint(0, 3))
        items.append((f"i{k:02d}", rng.choice(categories), rng.choice(authors), row_tags, created))
        if offset < 0 and rng.random() < 0.8 or offset == 0 and rng.random() < 0.3:
            v = [rng.gauss(0, 1) for _ in range(d)]
            vectors[f"i{k:02d}"] = v
    # New items sharing nothing with an item that has a vector: the catalogue mean.
    items.append(("lonely", "c_only", "a_only", ["t_only"], dt.datetime.combine(D, dt.time(8), UTC)))
    items.append(("bare", None, None, None, dt.datetime.combine(D, dt.time(9), UTC)))
    return items, vectors


def as_frames(spark, items, vectors):
    return (
        spark.createDataFrame(items, ITEMS_SCHEMA),
        spark.createDataFrame([(i, [float(x) for x in v]) for i, v in vectors.items()], VECTORS_SCHEMA),
    )


def test_neighbour_average_matches_the_formula(spark):
    items, vectors = random_catalogue(random.Random(3))
    items_df, vectors_df = as_frames(spark, items, vectors)
    want = ref_fill(items, vectors, D, 3, normalise=False)
    assert len(want) >= 8 and {"lonely", "bare"} <= set(want)  # the cases the data must cover
    for normalise in (None, True):  # None: detected; skip-gram-like vectors are not unit vectors
        out = with_new_item_vectors(items_df, vectors_df, D, 3, normalise=normalise)
        got = {r.item_id: (np.asarray(r.vector), r.filled) for r in out.collect()}
        assert {i for i, (_, filled) in got.items() if filled} == set(want)
        assert len(got) == len(vectors) + len(want)
        for item, vector in want.items():
            expected = np.asarray(vector) / (np.linalg.norm(vector) if normalise else 1.0)
            np.testing.assert_allclose(got[item][0], expected, rtol=1e-5, atol=1e-6)
        # The catalogue mean is the fallback of both items that share nothing with a vector owner.
        np.testing.assert_allclose(got["lonely"][0], got["bare"][0])
        # The input rows come back unchanged and unmarked.
        for item, vector in vectors.items():
            assert got[item][1] is False
            np.testing.assert_allclose(got[item][0], vector, rtol=1e-6)
    assert not are_unit_vectors(vectors_df)
    unit = {i: list(np.asarray(v) / np.linalg.norm(v)) for i, v in vectors.items()}
    assert are_unit_vectors(as_frames(spark, items, unit)[1])  # two-tower-like: the added ones are too


def test_only_items_created_in_the_window_without_a_vector_get_one(spark):
    start, end = new_item_window(D, 2)
    assert (start, end) == (dt.datetime(2026, 3, 9, tzinfo=UTC), dt.datetime(2026, 3, 11, tzinfo=UTC))
    old = dt.datetime(2026, 1, 1, tzinfo=UTC)
    items = [
        ("has_vec", "c", "a", ["t"], old),
        ("new_has_vec", "c", "a", ["t"], dt.datetime(2026, 3, 10, 5, tzinfo=UTC)),
        ("old_no_vec", "c", "a", ["t"], dt.datetime(2026, 3, 8, 23, 59, 59, tzinfo=UTC)),  # before the window
        ("first_second", "c", "a", ["t"], start),  # the window's first instant: new
        ("last_second", "c", "a", ["t"], end - dt.timedelta(seconds=1)),  # D 23:59:59: new
        ("tomorrow", "c", "a", ["t"], end),  # created after D: never
        ("later", "c", "a", ["t"], dt.datetime(2026, 3, 20, tzinfo=UTC)),
    ]
    vectors = {"has_vec": [3.0, 4.0], "new_has_vec": [0.0, 2.0]}
    items_df, vectors_df = as_frames(spark, items, vectors)
    out = with_new_item_vectors(items_df, vectors_df, D, 2).cache()
    got = {r.item_id: (list(r.vector), r.filled) for r in out.collect()}
    assert set(got) == {"has_vec", "new_has_vec", "first_second", "last_second"}
    assert got["new_has_vec"] == ([0.0, 2.0], False)  # a new item that has a vector keeps it
    # Not unit vectors: the plain mean of the directions (0.6, 0.8) and (0, 1) of the three groups.
    np.testing.assert_allclose(got["first_second"][0], [0.3, 0.9], rtol=1e-6)
    assert got["first_second"][1] and got["last_second"][1]
    n, digest = filled_summary(out)
    assert n == 2 and len(digest) == 12
    # The digest follows what was filled in: one day later the window holds other items.
    later = with_new_item_vectors(items_df, vectors_df, D + dt.timedelta(days=1), 1).cache()
    assert {r.item_id for r in later.filter("filled").collect()} == {"tomorrow"}
    assert filled_summary(later)[1] != digest
    none = with_new_item_vectors(items_df, vectors_df, dt.date(2026, 2, 1), 3).cache()
    assert filled_summary(none) == (0, None) and none.count() == 2


def test_recall_recalls_a_never_clicked_new_item_on_its_first_day(spark, lake):
    """Two clusters of old items (vectors near e0 and e1); u0 clicked cluster 0 only. A cluster-0 item
    created on D, never clicked and without a vector, is in u0's deepwalk list; one created on D + 1
    and an old item without a vector never are."""
    rng = np.random.default_rng(1)
    old = dt.datetime(2026, 1, 1, tzinfo=UTC)
    items, vectors = [], []
    for k in range(10):
        cluster = k % 2
        items.append((f"o{k}", f"c{cluster}", f"a{cluster}", [f"t{cluster}"], old))
        v = np.eye(4)[cluster] + rng.normal(scale=0.05, size=4)
        vectors.append((f"o{k}", "deepwalk", [float(x) for x in v]))
    items += [
        ("fresh", "c0", "a0", ["t0"], dt.datetime.combine(D, dt.time(9), UTC)),
        ("future", "c0", "a0", ["t0"], dt.datetime.combine(D + dt.timedelta(days=1), dt.time(1), UTC)),
        ("stale", "c0", "a0", ["t0"], old),  # old, but never embedded
    ]
    lake.overwrite("items", spark.createDataFrame(items, table_schema("items").spark_schema()))
    lake.overwrite_partitions(
        "item_embeddings",
        spark.createDataFrame(vectors, "item_id string, method string, vector array<float>"),
        "method",
        ["deepwalk"],
        metadata={"date": str(D), "method": "deepwalk"},
    )
    clicks = [("u0", f"o{k}", D - dt.timedelta(days=k % 3)) for k in (0, 2, 4)]  # cluster 0: o6, o8 unseen
    clicks += [("u1", f"o{k}", D) for k in (1, 3)]
    events = spark.createDataFrame(
        [
            (u, i, "click", dt.datetime.combine(day, dt.time(12), UTC), None, None, day)
            for u, i, day in clicks
        ],
        table_schema("events").spark_schema(),
    )
    lake.overwrite_dates("events", events, sorted({day for *_, day in clicks}))
    argv = ["recall", "--lake", lake.root, "--date", str(D), "--channels", "deepwalk", "--default-quota", "3"]
    assert cli.main([*argv, "--gate", "false"], spark=spark) == 0
    out = lake.read("recall_candidates", dates=[D]).toPandas()
    lists = {u: set(g["item_id"]) for u, g in out.groupby("user_id")}
    assert lists["u0"] == {"o6", "o8", "fresh"}  # the cluster's unseen items, the new one among them
    assert not {"future", "stale"} & set(out["item_id"])
    stats = json.loads(lake.history("recall_candidates")[0]["channels"])["deepwalk"]
    assert stats["new_item_vectors"] == 1 and "-new-" in stats["source"]
    # The filled-in catalogue's index has its own key (the plain version's folder would be stale).
    folders = [p.name for p in Path(lake.path("_models", "ann", "deepwalk")).iterdir()]
    assert len(folders) == 1 and folders[0].startswith("v") and "-new-" in folders[0]
    ids = json.loads((Path(lake.path("_models", "ann", "deepwalk", folders[0])) / "ids.json").read_text())[
        "ids"
    ]
    assert "fresh" in ids and "future" not in ids
