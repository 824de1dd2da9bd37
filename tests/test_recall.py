"""Recall: merge and quotas, seen and exposure filters, the Bloom filter, the ANN index, the job end to end.

Each part is checked against a pure-Python reference written from the definitions (docs/recommend.md).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from recsys_spark import cli
from recsys_spark.candidates.cohorts import cohort_candidates, cohort_click_counts, user_cohorts
from recsys_spark.candidates.lists import vector_candidates
from recsys_spark.errors import UsageError
from recsys_spark.recommend import ann
from recsys_spark.recommend.bloom import bloom_size, build_bloom_filters, might_contain
from recsys_spark.recommend.filters import drop_exposed, exposure_blooms, over_exposed
from recsys_spark.recommend.recall import merge_channels, new_users, parse_quotas, session_neighbours


# -- merge, dedup, quotas ---------------------------------------------------------------------------
def random_channel_lists(rng: random.Random, channels, users, items, quotas):
    """Per channel: each user's ranked list of distinct items, cut at the channel's quota."""
    out = {}
    for name in channels:
        rows = []
        for user in users:
            picked = rng.sample(items, rng.randint(0, len(items)))[: quotas[name]]
            scores = sorted((round(rng.uniform(0, 5), 3) for _ in picked), reverse=True)
            rows += [(user, item, s, r) for r, (item, s) in enumerate(zip(picked, scores), start=1)]
        out[name] = rows
    return out


def ref_merge(lists):
    merged = defaultdict(dict)
    for name, rows in lists.items():
        for user, item, score, rank in rows:
            merged[(user, item)][name] = (score, rank)
    return {
        key: (sorted(by), {c: s for c, (s, _) in by.items()}, {c: r for c, (_, r) in by.items()})
        for key, by in merged.items()
    }


def test_merge_keeps_every_channel_score_and_rank(spark):
    rng = random.Random(3)
    channels = ["swing", "itemcf", "popularity", "deepwalk"]
    quotas = parse_quotas(["swing=4", "itemcf=2"], 3)
    assert (quotas["swing"], quotas["itemcf"], quotas["popularity"], quotas["two_tower"]) == (4, 2, 3, 3)
    lists = random_channel_lists(
        rng, channels, [f"u{i}" for i in range(12)], [f"i{j}" for j in range(9)], quotas
    )
    frames = {
        name: spark.createDataFrame(rows, "user_id string, item_id string, score double, rank int")
        for name, rows in lists.items()
    }
    got = {
        (r.user_id, r.item_id): (list(r.channels), dict(r.channel_scores), dict(r.channel_ranks))
        for r in merge_channels(frames).collect()
    }
    assert got == ref_merge(lists)
    per_user = Counter((u, c) for (u, _), (chs, _, _) in got.items() for c in chs)
    assert all(n <= quotas[c] for (_, c), n in per_user.items())


@pytest.mark.parametrize("spec", ["swing", "nope=3", "swing=0", "swing=x"])
def test_bad_quotas_are_usage_errors(spec):
    with pytest.raises(UsageError):
        parse_quotas([spec], 100)


# -- Bloom filter -----------------------------------------------------------------------------------
def test_bloom_sizing_formula():
    m, k = bloom_size(100, 0.01)
    assert m == math.ceil(-100 * math.log(0.01) / math.log(2) ** 2) == 959 and k == 7
    assert bloom_size(1, 0.01) == (10, 7)


def test_bloom_never_misses_a_member_and_its_false_positive_rate_is_near_target(spark):
    rng = random.Random(11)
    fpr = 0.01
    members = {f"u{u}": {f"i{rng.randrange(10**6)}" for _ in range(rng.randint(1, 120))} for u in range(40)}
    rows = [(u, i) for u, items in members.items() for i in items]
    blooms = build_bloom_filters(spark.createDataFrame(rows, "user_id string, item_id string"), fpr).cache()
    for r in blooms.collect():  # each filter sized from its own n
        assert (r.bloom_m, r.bloom_k) == bloom_size(len(members[r.user_id]), fpr)
        assert len(r.bloom_bits) == (r.bloom_m + 63) // 64
    probes = rows + [(u, f"x{rng.randrange(10**6)}") for u in members for _ in range(500)]
    tested = (
        spark.createDataFrame(probes, "user_id string, item_id string")
        .join(blooms, "user_id")
        .select("user_id", "item_id", might_contain(F.col("item_id"), F.col("bloom_bits"), F.col("bloom_m"), F.col("bloom_k")).alias("hit"))
        .collect()
    )  # fmt: skip
    member_hits = [t.hit for t in tested if t.item_id in members[t.user_id]]
    outsider_hits = [t.hit for t in tested if t.item_id not in members[t.user_id]]
    assert len(member_hits) == len(rows) and all(member_hits)  # no false negative, ever
    measured = sum(outsider_hits) / len(outsider_hits)
    print(f"Bloom filter measured FP rate {measured:.4f} on {len(outsider_hits)} non-members (target {fpr})")
    assert 0.002 < measured < 0.025, measured


def test_exposure_filter_matches_exact_counts_and_only_drops(spark):
    rng = random.Random(5)
    day = dt.date(2026, 11, 10)
    events, counts = [], Counter()
    for u in range(30):
        for _ in range(60):
            item, back = f"i{rng.randrange(15)}", rng.randrange(10)  # some impressions fall before the window
            d = day - dt.timedelta(days=back)
            events.append((f"u{u}", item, "impression", dt.datetime.combine(d, dt.time(12)), d))
            if back < 7:
                counts[(f"u{u}", item)] += 1
    frame = spark.createDataFrame(
        events, "user_id string, item_id string, event string, ts timestamp, dt date"
    )
    exposed = over_exposed(frame, day, 7, 3)
    want = {k for k, n in counts.items() if n >= 3}
    assert {(r.user_id, r.item_id) for r in exposed.collect()} == want
    candidates = spark.createDataFrame(
        [(f"u{u}", f"i{j}") for u in range(32) for j in range(20)], "user_id string, item_id string"
    )
    kept = {
        (r.user_id, r.item_id) for r in drop_exposed(candidates, exposure_blooms(exposed, 0.01)).collect()
    }
    every = {(f"u{u}", f"i{j}") for u in range(32) for j in range(20)}
    assert not kept & want  # an over-exposed pair is never kept
    false_positives = every - want - kept  # dropped although fine: only ever a drop
    assert len(false_positives) <= 0.05 * len(every - want)


# -- ANN index --------------------------------------------------------------------------------------
def clustered_vectors(rng: np.random.Generator, n: int, d: int, clusters: int = 20) -> np.ndarray:
    centres = rng.normal(size=(clusters, d))
    return centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d))


def test_ann_recall_against_exact_search_on_random_vectors(lake):
    rng = np.random.default_rng(0)
    item_ids = [f"i{j:04d}" for j in range(2000)]
    items = ann.normalised(clustered_vectors(rng, 2000, 32))
    users = ann.normalised(clustered_vectors(rng, 200, 32))
    user_ids = [f"u{u}" for u in range(200)]
    seen = [list(rng.choice(item_ids, size=rng.integers(0, 30), replace=False)) for _ in user_ids]
    params = ann.AnnParams()  # the defaults
    k = 50
    index = ann.build_index(items, params)
    folder = str(Path(lake.root) / "ann-test")
    Path(folder).mkdir(parents=True)
    import faiss

    faiss.write_index(index, f"{folder}/index.faiss")
    Path(folder, "ids.json").write_text(json.dumps({"ids": item_ids, "params": {}, "dim": 32}))
    batch = pd.DataFrame({"user_id": user_ids, "vector": list(users), "seen": seen})
    found = ann.search_frame(folder, batch, k, params, normalise_users=True)
    lists = {u: list(g.sort_values("rank")["item_id"]) for u, g in found.groupby("user_id")}
    for user, s in zip(user_ids, seen):
        assert len(lists[user]) == k and not set(lists[user]) & set(s)  # seen never listed, k still found
    catalogue = pd.DataFrame({"item_id": item_ids, "vector": list(items)})
    recall = ann.recall_against_exact(batch, catalogue, lists, k)
    exact = vector_candidates(user_ids, users, item_ids, items, k, exclude=dict(zip(user_ids, seen)))
    hits = sum(len(set(g["item_id"]) & set(lists[u])) for u, g in exact.groupby("user_id"))
    assert recall == pytest.approx(hits / (len(user_ids) * k))
    print(f"HNSW (defaults) recall@{k} vs exact on 2000 random clustered vectors, d=32: {recall:.4f}")
    assert recall >= 0.95


def test_ann_search_runs_on_the_executors_and_the_index_is_reused(spark, lake):
    rng = np.random.default_rng(1)
    rows = [(f"i{j}", [float(x) for x in v]) for j, v in enumerate(clustered_vectors(rng, 300, 8))]
    items = spark.createDataFrame(rows, "item_id string, vector array<float>")
    params = ann.AnnParams(ann_index="flat")  # exact: the Spark path must equal vector_candidates
    folder = ann.ensure_index(lake, "deepwalk", "v1", items, params)
    stamp = Path(folder, "index.faiss").stat().st_mtime_ns
    assert ann.ensure_index(lake, "deepwalk", "v1", items, params) == folder
    assert Path(folder, "index.faiss").stat().st_mtime_ns == stamp  # reused, not rebuilt
    users = [(f"u{u}", [float(x) for x in rng.normal(size=8)], [f"i{u}", f"i{u + 1}"]) for u in range(40)]
    frame = spark.createDataFrame(users, "user_id string, vector array<double>, seen array<string>")
    got = ann.search(frame.repartition(3), folder, 10, params).toPandas()
    ids = [r[0] for r in rows]
    matrix = ann.normalised(np.array([r[1] for r in rows])).astype(np.float64)
    queries = ann.normalised(np.array([u[1] for u in users])).astype(np.float64)
    exact = vector_candidates(
        [u[0] for u in users], queries, ids, matrix, 10, exclude={u[0]: u[2] for u in users}
    )
    key = ["user_id", "rank"]
    got, exact = got.sort_values(key).reset_index(drop=True), exact.sort_values(key).reset_index(drop=True)
    assert list(got["item_id"]) == list(exact["item_id"])
    np.testing.assert_allclose(got["score"], exact["score"], rtol=1e-5)


# -- the job end to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lake(spark, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("recall") / "lake")
    args = ["--lake", root, "--users", "120", "--items", "60", "--days", "3", "--seed", "5"]
    assert cli.main(["generate", *args], spark=spark) == 0
    from recsys_spark.lake import Lake

    lake = Lake(spark, root)
    day = lake.latest_date("events")
    # Stand-ins for what `similarity --algo itemcf` and `embed` commit for D (their own tests cover
    # how they are computed): seeded random neighbours and vectors, cheap to make.
    rng = np.random.default_rng(2)
    items = sorted(r.item_id for r in lake.read("items").select("item_id").collect())
    sim = [
        (i, str(j), 1.0 / rank, rank)
        for i in items
        for rank, j in enumerate(rng.choice([x for x in items if x != i], size=6, replace=False), start=1)
    ]
    lake.overwrite(
        "itemcf_sim",
        spark.createDataFrame(sim, "item_id string, sim_item_id string, score double, rank int"),
        metadata={"date": str(day), "algo": "itemcf"},
    )
    rows = [(i, "deepwalk", [float(x) for x in rng.normal(size=8)]) for i in items]
    vectors = spark.createDataFrame(rows, "item_id string, method string, vector array<float>")
    lake.overwrite_partitions(
        "item_embeddings", vectors, "method", ["deepwalk"], metadata={"date": str(day), "method": "deepwalk"}
    )
    # What `stream` keeps for D: session co-occurrence counts, the session channel's neighbours.
    pairs = [
        (i, str(j), int(n), day)
        for i in items
        for j, n in zip(rng.choice(items, 3), rng.integers(1, 5, 3))
        if i != j
    ]
    lake.overwrite_dates(
        "stream_cooccurrence",
        spark.createDataFrame(pairs, "item_id string, other_item_id string, count long, dt date").withColumn(
            "updated_at", F.current_timestamp()
        ),
        [day],
    )
    return lake, day


def test_recall_job_end_to_end(spark, tiny_lake, caplog):
    lake, day = tiny_lake
    args = ["recall", "--lake", lake.root, "--date", str(day), "--quota", "itemcf=7", "--default-quota", "5"]
    assert cli.main(args, spark=spark) == 0
    out = lake.read("recall_candidates", dates=[day]).toPandas()
    assert len(out) > 0 and set(out["dt"]) == {day}
    events = lake.read("events").filter(F.col("dt") <= F.lit(day)).toPandas()
    first = day - dt.timedelta(days=29)
    active = set(events[events["dt"] >= first]["user_id"])
    users = lake.read("users").toPandas()
    end = pd.Timestamp(day + dt.timedelta(days=1))
    signed_up = users[(users["signup_ts"] >= end - pd.Timedelta(days=7)) & (users["signup_ts"] < end)]
    never_seen = set(signed_up["user_id"]) - set(events["user_id"])
    assert set(out["user_id"]) <= active | never_seen
    # Seen: never an item with r > 0 up to D.
    positive = events[events["event"] != "impression"]
    seen = set(zip(positive["user_id"], positive["item_id"]))
    assert not seen & set(zip(out["user_id"], out["item_id"]))
    # Exposure: never an item shown >= 3 times in the 7 days ending at D.
    window = events[(events["event"] == "impression") & (events["dt"] > day - dt.timedelta(days=7))]
    shown = Counter(zip(window["user_id"], window["item_id"]))
    assert not {p for p, n in shown.items() if n >= 3} & set(zip(out["user_id"], out["item_id"]))
    # Channels: sorted, maps keyed by them; each channel within its quota and ranks 1..n.
    quotas = {"itemcf": 7, "popularity": 5, "deepwalk": 5, "profile": 5, "cohort": 5, "session": 5}
    per = Counter()
    for chs, scores, ranks, user in zip(
        out["channels"], out["channel_scores"], out["channel_ranks"], out["user_id"]
    ):
        chs = list(chs)
        assert chs == sorted(chs) and set(dict(scores)) == set(chs) == set(dict(ranks))
        for c in chs:
            per[(user, c)] += 1
            assert 1 <= dict(ranks)[c] <= quotas[c]
    assert {c for _, c in per} == set(quotas)  # usercf, swing, node2vec, two_tower: no artefact, skipped
    # User cold start: a user who signed up but was never seen still gets their cohort's list.
    assert all((u, "cohort") in per for u in never_seen if users.set_index("user_id").at[u, "region"])
    assert all(n <= quotas[c] for (_, c), n in per.items())
    # Popularity from its definition: clicks of the 7 days ending at D, seen items removed before the
    # cut at 5 (so the quota is filled), then the over-exposed ones dropped; a Bloom false positive
    # may drop a few more, never add one.
    recent = events[(events["event"] == "click") & (events["dt"] > day - dt.timedelta(days=7))]
    ranking = sorted(Counter(recent["item_id"]).items(), key=lambda kv: (-kv[1], kv[0]))
    got_pop = defaultdict(set)
    for user, item, chs in zip(out["user_id"], out["item_id"], out["channels"]):
        if "popularity" in chs:
            got_pop[user].add(item)
    missing, listed = 0, 0
    for user in active:
        cut = [i for i, _ in ranking if (user, i) not in seen][:5]
        want = {i for i in cut if shown[(user, i)] < 3}
        assert got_pop[user] <= want, (user, got_pop[user], want)
        missing += len(want - got_pop[user])
        listed += len(want)
    assert missing <= max(2, 0.05 * listed), (missing, listed)
    entry = lake.history("recall_candidates")[0]
    ann_recall = json.loads(entry["ann_recall"])
    assert ann_recall["deepwalk"] >= 0.95
    exposure = json.loads(entry["exposure"])
    assert exposure["target_fpr"] == 0.01 and exposure["measured_fpr"] < 0.05
    assert Path(lake.path("_reports", "quality", "recall_candidates", f"{day}.json")).exists()  # gated
    # Re-running the day replaces it.
    assert cli.main(args, spark=spark) == 0
    assert lake.read("recall_candidates", dates=[day]).count() == len(out)


# -- user cold start: new users, cohort popularity, session neighbours ---------------------------
def test_new_users_and_cohort_popularity_match_their_definitions(spark):
    rng = random.Random(11)
    day = dt.date(2026, 3, 10)
    regions, ages = ["north", "south", None], ["18-24", "25-34"]
    users = [
        (f"u{n}", rng.choice(regions), rng.choice(ages), dt.datetime(2026, 3, rng.randint(1, 12), 6))
        for n in range(40)
    ]
    items = [f"i{n}" for n in range(15)]
    events = [
        (
            u,
            rng.choice(items),
            rng.choice(["click", "click", "impression"]),
            day - dt.timedelta(days=rng.randint(0, 12)),
        )
        for u, *_ in rng.sample(users, 30)
        for _ in range(rng.randint(1, 6))
    ]
    ev = spark.createDataFrame(events, "user_id string, item_id string, event string, dt date")
    us = spark.createDataFrame(users, "user_id string, region string, age_bucket string, signup_ts timestamp")
    exclude = [(u, i) for u, i, e, d in events if e == "click" and d <= day][:10]
    k, days, new_days = 3, 5, 4

    # new: first event in the 4 days ending at D, or signed up then (by the end of D) and never seen.
    first_event = {}
    for u, _, _, d in events:
        if d <= day:
            first_event[u] = min(first_event.get(u, d), d)
    lo = day - dt.timedelta(days=new_days - 1)
    want_new = {u for u, d in first_event.items() if d >= lo} | {
        u for u, _, _, ts in users if u not in first_event and lo <= ts.date() <= day
    }
    got_new = {r.user_id for r in new_users(ev, us, day, new_days).collect()}
    assert got_new == want_new and want_new

    cohort = {u: (f"{r}|{a}" if r is not None else None) for u, r, a, _ in users}
    counts: Counter = Counter()
    for u, i, e, d in events:
        if e == "click" and day - dt.timedelta(days=days - 1) <= d <= day and cohort[u]:
            counts[(cohort[u], i)] += 1
    excluded = set(exclude)
    want = {}
    for u in cohort:
        if cohort[u] is None:
            continue
        top = sorted(((-n, i) for (c, i), n in counts.items() if c == cohort[u]))[: 2 * k]
        kept = [(i, -n) for n, i in top if (u, i) not in excluded][:k]
        if kept:
            want[u] = kept
    cohorts = user_cohorts(us)
    got_rows = cohort_candidates(
        cohorts,
        cohort_click_counts(ev, cohorts, day, days),
        k,
        exclude=spark.createDataFrame(exclude, "user_id string, item_id string"),
    ).collect()
    got = defaultdict(list)
    for r in sorted(got_rows, key=lambda r: (r.user_id, r.rank)):
        got[r.user_id].append((r.item_id, r.score))
    assert dict(got) == want


def test_session_neighbours_sum_the_stream_days(spark):
    rows = [
        ("a", "b", 2, dt.date(2026, 3, 1)),
        ("a", "b", 3, dt.date(2026, 3, 2)),
        ("b", "a", 5, dt.date(2026, 3, 2)),
    ]
    frame = spark.createDataFrame(rows, "item_id string, other_item_id string, count long, dt date")
    got = {(r.item_id, r.sim_item_id): r.score for r in session_neighbours(frame).collect()}
    assert got == {("a", "b"): 5.0, ("b", "a"): 5.0}
