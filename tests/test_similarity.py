"""Similarity: Spark vs brute-force references written straight from the formulas, skew, job and CLI."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import random
import subprocess
import sys
from collections import defaultdict

import pytest
from pyspark.sql import functions as F

from recsys_spark.similarity import (
    DEFAULT_WEIGHTS,
    blocked_pairs,
    both_directions,
    interest_weights,
    itemcf_similarity,
    swing_similarity,
    top_k,
    usercf_similarity,
)
from recsys_spark.similarity.interactions import filtered_interactions
from recsys_spark.similarity.params import SimilarityParams

DAY0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
EVENTS = [
    "impression",
    "impression",
    "click",
    "click",
    "click",
    "like",
    "comment",
    "share",
    "follow",
    "purchase",
]


# -- brute-force references ---------------------------------------------------------------------
def ref_interactions(events, date, window_days):
    """{(u, i): (r, last_ts)} from (u, i, event, ts) tuples."""
    first = date - dt.timedelta(days=window_days - 1) if window_days else None
    r, last = defaultdict(float), {}
    for u, i, e, ts in events:
        if ts.date() > date or (first and ts.date() < first) or DEFAULT_WEIGHTS[e] == 0:
            continue
        r[(u, i)] += DEFAULT_WEIGHTS[e]
        last[(u, i)] = max(last.get((u, i), ts), ts)
    return {k: (v, last[k]) for k, v in r.items() if v > 0}


def ref_sets(inter, min_items, max_items, cap):
    """R: users with min..max items; T: per item its `cap` most recent users (ts desc, user asc)."""
    n_items = defaultdict(int)
    for u, _ in inter:
        n_items[u] += 1
    r_set = {k: v for k, v in inter.items() if min_items <= n_items[k[0]] <= max_items}
    users = defaultdict(list)
    for (u, i), (_, ts) in r_set.items():
        users[i].append((-ts.timestamp(), u))
    t_set = {(u, i) for i, lst in users.items() for _, u in sorted(lst)[:cap]}
    return r_set, t_set


def index(pairs):
    by_first, by_second = defaultdict(set), defaultdict(set)
    for a, b in pairs:
        by_first[a].add(b)
        by_second[b].add(a)
    return by_first, by_second


def ref_itemcf(inter, p):
    r_set, t_set = ref_sets(inter, 1, p.max_user_items, p.max_users_per_item)
    norm2 = defaultdict(float)
    for (_, i), (r, _) in r_set.items():
        norm2[i] += r * r
    _, users_of = index(t_set)
    out = {}
    for i, j in itertools.combinations(sorted(users_of), 2):
        dot = sum(r_set[(u, i)][0] * r_set[(u, j)][0] for u in users_of[i] & users_of[j])
        if dot > 0:
            out[(i, j)] = dot / (math.sqrt(norm2[i]) * math.sqrt(norm2[j]))
    return out


def ref_usercf(inter, p):
    r_set, t_set = ref_sets(inter, 1, p.max_user_items, p.max_users_per_item)
    n_user, n_item = index(r_set)
    items_of, _ = index(t_set)
    out = {}
    for u, v in itertools.combinations(sorted(items_of), 2):
        common = items_of[u] & items_of[v]
        if common:
            s = math.fsum(1 / math.log(1 + len(n_item[item])) for item in common)
            out[(u, v)] = s / math.sqrt(len(n_user[u]) * len(n_user[v]))
    return out


def ref_swing(inter, p):
    r_set, t_set = ref_sets(inter, p.min_user_items, p.max_user_items, p.max_users_per_item)
    n_user, _ = index(r_set)
    w = {u: (p.alpha1 + len(items)) ** -p.beta for u, items in n_user.items()}
    items_of, users_of = index(t_set)
    out = {}
    for i, j in itertools.combinations(sorted(users_of), 2):
        both = sorted(users_of[i] & users_of[j])
        terms = [
            w[u] * w[v] / (p.alpha2 + len(items_of[u] & items_of[v]))
            for u, v in itertools.combinations(both, 2)
        ]
        if terms:
            out[(i, j)] = math.fsum(terms)
    return out


def ref_top_k(sims, k):
    lists = defaultdict(list)
    for (a, b), s in sims.items():
        if s > 0 and a != b:
            lists[a].append((b, s))
            lists[b].append((a, s))
    return {a: sorted(lst, key=lambda x: (-x[1], x[0]))[:k] for a, lst in lists.items()}


# -- helpers ------------------------------------------------------------------------------------
def params(**kw):
    return SimilarityParams(**kw)  # DESIGN's defaults (alpha1=15, beta=0.3, top_k=100...) unless given


def random_events(seed, hot=False, bot=False):
    rng = random.Random(seed)
    n_users, n_items = rng.randint(40, 80), rng.randint(30, 60)
    events = []
    for u in range(n_users):
        for _ in range(rng.randint(1, 14)):
            ts = DAY0 + dt.timedelta(days=rng.randint(0, 9), hours=rng.choice([0, 12]))  # coarse: ts ties
            events.append((f"u{u:02d}", f"i{rng.randint(0, n_items - 1):02d}", rng.choice(EVENTS), ts))
    if hot:  # half the users click one item
        events += [
            (f"u{u:02d}", "hot", "click", DAY0 + dt.timedelta(days=rng.randint(0, 9)))
            for u in range(0, n_users, 2)
        ]
    if bot:  # one user on far more items than max_user_items
        events += [("bot", f"i{i:02d}", "click", DAY0) for i in range(n_items)]
    return events


def events_df(spark, events):
    rows = [(u, i, e, ts, None, None) for u, i, e, ts in events]
    return spark.createDataFrame(
        rows, "user_id string, item_id string, event string, ts timestamp, session_id string, dwell_ms long"
    ).withColumn("dt", F.to_date("ts"))


def spark_lists(df, id_col, other_col):
    lists = defaultdict(list)
    for row in df.orderBy(id_col, "rank").collect():
        lists[row[id_col]].append((row[other_col], row["score"], row["rank"]))
    return lists


def assert_same_top_k(df, id_col, other_col, ref, k):
    got, want = spark_lists(df, id_col, other_col), ref_top_k(ref, k)
    assert set(got) == set(want)
    for key, lst in want.items():
        assert [o for o, _, _ in got[key]] == [o for o, _ in lst], key
        assert [r for _, _, r in got[key]] == list(range(1, len(lst) + 1))
        for (_, s, _), (_, t) in zip(got[key], lst, strict=True):
            assert s == pytest.approx(t, rel=1e-9)


def assert_same_scores(df, a, b, ref):
    got = {(r[a], r[b]): r["score"] for r in df.collect()}
    assert set(got) == set(ref)
    for key, s in ref.items():
        assert got[key] == pytest.approx(s, rel=1e-9), key


# -- exactness ------------------------------------------------------------------------------------
CASES = {  # seed: (options, window_days, hot item, bot user)
    1: (dict(block_size=3, pair_partitions=3), 0, False, False),  # top_k 100: every score is listed
    2: (dict(max_users_per_item=6, block_size=4, top_k=7), 4, True, False),
    3: (
        dict(max_user_items=12, min_user_items=3, block_size=5, alpha2=1.5, beta=0.5, top_k=4),
        0,
        True,
        True,
    ),
}
ALGOS = {
    "itemcf": (itemcf_similarity, ref_itemcf, "item_id", "sim_item_id"),
    "usercf": (usercf_similarity, ref_usercf, "user_id", "sim_user_id"),
    "swing": (swing_similarity, ref_swing, "item_id", "sim_item_id"),
}


@pytest.mark.parametrize("seed", sorted(CASES))
def test_spark_equals_reference(spark, seed):
    options, window, hot, bot = CASES[seed]
    p = params(**options)
    events = random_events(seed, hot=hot, bot=bot)
    date = (DAY0 + dt.timedelta(days=7)).date()  # days 8 and 9 lie after --date
    inter = ref_interactions(events, date, window)
    spark_inter = interest_weights(events_df(spark, events), date, window).cache()
    assert {(r.user_id, r.item_id): r.r for r in spark_inter.collect()} == {k: v[0] for k, v in inter.items()}
    for compute, reference, id_col, other_col in ALGOS.values():
        ref = reference(inter, p)
        assert ref, "the random case must produce pairs"
        pairs = compute(spark_inter, p).cache()
        assert_same_scores(pairs, id_col, other_col, ref)
        ranked = top_k(
            both_directions(pairs, id_col, other_col, id_col, other_col), id_col, other_col, p.top_k
        )
        assert_same_top_k(ranked, id_col, other_col, ref, p.top_k)
        pairs.unpersist()
    spark_inter.unpersist()


def test_window_days_keeps_only_the_window(spark):
    events = [
        ("a", "x", "click", DAY0),
        ("a", "x", "like", DAY0 + dt.timedelta(days=5)),
        ("a", "y", "impression", DAY0 + dt.timedelta(days=5)),
        ("b", "x", "purchase", DAY0 + dt.timedelta(days=6)),
    ]
    df = events_df(spark, events)
    day5 = (DAY0 + dt.timedelta(days=5)).date()
    got = {(r.user_id, r.item_id): r.r for r in interest_weights(df, day5, 0).collect()}
    assert got == {("a", "x"): 3.0}  # day 6 is after --date, the impression weighs 0
    assert {(r.user_id, r.item_id): r.r for r in interest_weights(df, day5, 1).collect()} == {("a", "x"): 2.0}


def test_top_k_orders_by_score_then_id_and_drops_self_and_non_positive(spark):
    pairs = spark.createDataFrame(
        [
            ("a", "a", 9.0),
            ("a", "c", 1.0),
            ("a", "b", 1.0),
            ("a", "d", 2.0),
            ("a", "e", 0.0),
            ("a", "f", -1.0),
        ],
        "item_id string, sim_item_id string, score double",
    )
    got = [tuple(r) for r in top_k(pairs, "item_id", "sim_item_id", 3).orderBy("rank").collect()]
    assert got == [("a", "d", 2.0, 1), ("a", "b", 1.0, 2), ("a", "c", 1.0, 3)]


# -- skew -----------------------------------------------------------------------------------------
def skewed_events(n_users=1200, n_items=300, seed=7):
    rng = random.Random(seed)
    events = [
        (f"u{u:04d}", "hot", "click", DAY0 + dt.timedelta(minutes=rng.randint(0, 1400)))
        for u in range(0, n_users, 2)
    ]
    for u in range(n_users):
        events += [(f"u{u:04d}", f"i{rng.randint(0, n_items - 1):03d}", "click", DAY0) for _ in range(2)]
    return events


def max_pairs_per_task(per_item, block_size):
    pairs = blocked_pairs(per_item, ["item_id"], "users", block_size, partitions=8)
    counts = pairs.groupBy(F.spark_partition_id().alias("task")).count().collect()
    return max(r["count"] for r in counts), sum(r["count"] for r in counts)


def test_a_hot_item_is_paired_on_many_tasks_and_swing_stays_exact(spark):
    events = skewed_events()
    p = params(max_users_per_item=400, block_size=50, top_k=10)
    inter = interest_weights(events_df(spark, events), DAY0.date(), 0).cache()
    kept = filtered_interactions(inter, p.min_user_items, p.max_user_items, p.max_users_per_item)
    per_item = (
        kept.groupBy("item_id").agg(F.array_sort(F.collect_list(F.struct("user_id"))).alias("users")).cache()
    )
    sizes = {r.item_id: r.n for r in per_item.select("item_id", F.size("users").alias("n")).collect()}
    assert sizes["hot"] == 400  # 600 users clicked it; the cap keeps the 400 most recent
    hot_pairs = 400 * 399 // 2
    biggest, total = max_pairs_per_task(per_item, p.block_size)
    assert total == sum(n * (n - 1) // 2 for n in sizes.values())
    assert biggest <= hot_pairs // 3, "the hot item's pairs must be spread over several tasks"
    unblocked, _ = max_pairs_per_task(per_item, block_size=10_000)
    assert unblocked >= hot_pairs  # control: without blocks one task makes every hot pair
    ref = ref_swing(ref_interactions(events, DAY0.date(), 0), p)
    ranked = top_k(
        both_directions(swing_similarity(inter, p), "item_id", "sim_item_id", "item_id", "sim_item_id"),
        "item_id",
        "sim_item_id",
        p.top_k,
    )
    assert_same_top_k(ranked, "item_id", "sim_item_id", ref, p.top_k)
    per_item.unpersist()
    inter.unpersist()


# -- job and command line -------------------------------------------------------------------------
def test_job_writes_the_tables_and_the_cli_runs(spark, lake, tmp_path):
    from recsys_spark.cli import main

    events = random_events(5)
    lake.overwrite("events", events_df(spark, events))
    last_day = max(ts for *_, ts in events).date()
    assert main(["similarity", "--lake", lake.root, "--algo", "usercf", "--top-k", "5"], spark=spark) == 0
    ref = ref_usercf(ref_interactions(events, last_day, 0), params())
    assert_same_top_k(lake.read("usercf_sim"), "user_id", "sim_user_id", ref, 5)
    assert [c.name for c in lake.read("usercf_sim").schema] == ["user_id", "sim_user_id", "score", "rank"]
    assert str(last_day) in str(lake.history("usercf_sim", limit=1)[0])

    env = {**os.environ, "RECSYS_DRIVER_MEMORY": "2g", "SPARK_MASTER": "local[2]"}
    cmd = [
        sys.executable,
        "-m",
        "recsys_spark.cli",
        "similarity",
        "--lake",
        lake.root,
        "--algo",
        "swing",
        "--date",
        str(last_day - dt.timedelta(days=2)),
        "--window-days",
        "5",
        "--top-k",
        "3",
    ]
    done = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rows to swing_sim" in done.stdout
    ref = ref_swing(ref_interactions(events, last_day - dt.timedelta(days=2), 5), params())
    assert_same_top_k(lake.read("swing_sim"), "item_id", "sim_item_id", ref, 3)
