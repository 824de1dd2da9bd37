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
from fractions import Fraction

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


# -- brute-force references, written from the definitions in DESIGN.md ------------------------
# They loop over users, pairs and sets the way the formulas read; they share no code and no
# intermediate set with the implementation.
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


def ref_item_sets(inter, min_items, max_items):
    """I_u: the whole item set (r > 0) of every user with min..max items; other users are ignored."""
    items = defaultdict(set)
    for u, i in inter:
        items[u].add(i)
    return {u: s for u, s in items.items() if min_items <= len(s) <= max_items}


def ref_user_sets(items_of):
    """U_i: every (kept) user of item i."""
    users = defaultdict(set)
    for u, s in items_of.items():
        for i in s:
            users[i].add(u)
    return users


def ref_capped(inter, users_of, cap):
    """U_i after max_users_per_item: its `cap` most recent users (latest positive event), ties by user_id."""
    return {
        i: set(sorted(us, key=lambda u: (-inter[(u, i)][1].timestamp(), u))[:cap])
        for i, us in users_of.items()
    }


def ref_itemcf(inter, p):
    """{(i, j): (exact key, score)}: cosine over the capped users; the key is cos² as a Fraction."""
    items_of = ref_item_sets(inter, 1, p.max_user_items)
    capped = ref_capped(inter, ref_user_sets(items_of), p.max_users_per_item)

    def r(u, i):
        return Fraction(inter[(u, i)][0])

    out = {}
    for i, j in itertools.combinations(sorted(capped), 2):
        dot = sum((r(u, i) * r(u, j) for u in capped[i] & capped[j]), Fraction(0))
        if dot > 0:
            na = sum(r(u, i) ** 2 for u in capped[i])
            nb = sum(r(u, j) ** 2 for u in capped[j])
            out[(i, j)] = (dot**2 / (na * nb), float(dot) / math.sqrt(na * nb))
    return out


def ref_usercf(inter, p):
    """{(u, v): (score, score)}: common items are those that kept both users under the cap."""
    items_of = ref_item_sets(inter, 1, p.max_user_items)
    users_of = ref_user_sets(items_of)
    capped = ref_capped(inter, users_of, p.max_users_per_item)
    out = {}
    for u, v in itertools.combinations(sorted(items_of), 2):
        common = [i for i in items_of[u] & items_of[v] if {u, v} <= capped[i]]
        if common:
            s = math.fsum(1 / math.log(1 + len(users_of[i])) for i in common)
            s /= math.sqrt(len(items_of[u]) * len(items_of[v]))
            out[(u, v)] = (s, s)
    return out


def ref_swing(inter, p):
    """{(i, j): (score, score)}: Σ_{u<v in capped U_i ∩ U_j} w_u·w_v / (alpha2 + |I_u ∩ I_v|), whole I_u."""
    items_of = ref_item_sets(inter, p.min_user_items, p.max_user_items)
    capped = ref_capped(inter, ref_user_sets(items_of), p.max_users_per_item)
    w = {u: (p.alpha1 + len(s)) ** -p.beta for u, s in items_of.items()}
    out = {}
    for i, j in itertools.combinations(sorted(capped), 2):
        terms = [
            w[u] * w[v] / (p.alpha2 + len(items_of[u] & items_of[v]))
            for u, v in itertools.combinations(sorted(capped[i] & capped[j]), 2)
        ]
        if terms:
            s = math.fsum(terms)
            out[(i, j)] = (s, s)
    return out


def ref_top_k(sims, k):
    """Per id: highest score first (by the exact key), ties by the other id ascending; never self."""
    lists = defaultdict(list)
    for (a, b), (key, s) in sims.items():
        if s > 0 and a != b:
            lists[a].append((b, key, s))
            lists[b].append((a, key, s))
    return {
        a: [(o, s) for o, _, s in sorted(lst, key=lambda x: (-x[1], x[0]))[:k]] for a, lst in lists.items()
    }


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
    for key, (_, s) in ref.items():
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
    # A hot item (and ordinary ones) far over a small cap, light users and a bot left out: the cap
    # drops users from items, while |I_u|, |I_u ∩ I_v| (Swing) stay whole and ItemCF norms follow it.
    4: (
        dict(max_users_per_item=5, min_user_items=3, max_user_items=10, block_size=3, alpha2=0.5, top_k=5),
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


@pytest.mark.parametrize("algo", sorted(ALGOS))
@pytest.mark.parametrize("seed", sorted(CASES))
def test_spark_equals_reference(spark, seed, algo):
    options, window, hot, bot = CASES[seed]
    p = params(**options)
    events = random_events(seed, hot=hot, bot=bot)
    date = (DAY0 + dt.timedelta(days=7)).date()  # days 8 and 9 lie after --date
    inter = ref_interactions(events, date, window)
    spark_inter = interest_weights(events_df(spark, events), date, window).cache()
    assert {(r.user_id, r.item_id): r.r for r in spark_inter.collect()} == {k: v[0] for k, v in inter.items()}
    compute, reference, id_col, other_col = ALGOS[algo]
    if p.max_users_per_item < 1000:  # the case must exercise the cap: some item loses users to it
        users = defaultdict(int)
        for u, i in inter:
            users[i] += u in ref_item_sets(inter, p.min_user_items, p.max_user_items)
        assert max(users.values()) > p.max_users_per_item
    ref = reference(inter, p)
    assert ref, "the random case must produce pairs"
    pairs = compute(spark_inter, p).cache()
    assert_same_scores(pairs, id_col, other_col, ref)
    ranked = top_k(both_directions(pairs, id_col, other_col, id_col, other_col), id_col, other_col, p.top_k)
    assert_same_top_k(ranked, id_col, other_col, ref, p.top_k)
    pairs.unpersist()
    spark_inter.unpersist()


def itemcf_lists(spark, events, **options):
    inter = interest_weights(events_df(spark, events), DAY0.date(), 0)
    pairs = itemcf_similarity(inter, params(**options))
    ranked = top_k(
        both_directions(pairs, "item_id", "sim_item_id", "item_id", "sim_item_id"),
        "item_id",
        "sim_item_id",
        10,
    )
    return {k: [(o, s) for o, s, _ in v] for k, v in spark_lists(ranked, "item_id", "sim_item_id").items()}


def test_itemcf_identical_hot_items_score_exactly_one(spark):
    # 10 users click both h1 and h2 (same recency order on both), the cap keeps 4: the dot product
    # and both norms run over the same 4 users, so the cosine is 1, not 4/10.
    events = [
        (f"u{u}", item, "click", DAY0 + dt.timedelta(minutes=u)) for u in range(10) for item in ("h1", "h2")
    ]
    events += [("u9", "x", "like", DAY0)]  # a third item, so that 1 must also outrank it
    lists = itemcf_lists(spark, events, max_users_per_item=4)
    assert lists["h1"][0] == ("h2", 1.0) and lists["h2"][0] == ("h1", 1.0)
    ref = ref_top_k(ref_itemcf(ref_interactions(events, DAY0.date(), 0), params(max_users_per_item=4)), 10)
    assert [o for o, _ in lists["h1"]] == [o for o, _ in ref["h1"]]


def test_itemcf_mathematically_tied_scores_are_bit_equal_and_fall_to_the_id_order(spark):
    # a = {u1: 1, u2: 1}, b = {u1: 1}, c = {u1: 7}: cos(a,b) = 1/sqrt(1·2) and cos(a,c) = 7/sqrt(2·49)
    # are both 1/sqrt(2); computed as dot/(sqrt(na)·sqrt(nb)) or dot/sqrt(na·nb) they differ by one
    # ulp and c would outrank b. Tied, b comes first (id order) with the very same double.
    events = [
        ("u1", "a", "click", DAY0),
        ("u2", "a", "click", DAY0),
        ("u1", "b", "click", DAY0),
        ("u1", "c", "purchase", DAY0),
        ("u1", "c", "share", DAY0),
    ]
    lists = itemcf_lists(spark, events)
    assert [o for o, _ in lists["a"]] == ["b", "c"]
    assert lists["a"][0][1] == lists["a"][1][1] == math.sqrt(0.5)
    assert lists["b"] == [("c", 1.0), ("a", math.sqrt(0.5))]


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
