"""Evaluation building blocks against brute-force references written straight from the formulas."""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import random
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from recsys_spark.candidates.lists import (
    item_keys,
    item_to_item_candidates,
    popularity_candidates,
    profile_candidates,
    topk_lists,
    user_to_user_candidates,
    vector_candidates,
)
from recsys_spark.evaluate.metrics import auc, logloss, topk_metrics, uauc, user_topk_metrics
from recsys_spark.evaluate.report import evaluation_html, write_evaluation_report


# -- metric references --------------------------------------------------------------------------
def ref_user_metrics(ranked, truth, k):
    """Recall, NDCG, HitRate@k of one user by explicit loops."""
    seen, top = set(), []
    for item in ranked:
        if item not in seen:
            seen.add(item)
            top.append(item)
    top = top[:k]
    hits = [item in truth for item in top]
    dcg = 0.0
    for r, hit in enumerate(hits, start=1):
        if hit:
            dcg += 1 / math.log2(r + 1)
    idcg = 0.0
    for r in range(1, min(k, len(truth)) + 1):
        idcg += 1 / math.log2(r + 1)
    return sum(hits) / len(truth), dcg / idcg, float(any(hits))


def ref_auc(labels, scores):
    """Count every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def random_ranking_data(rng, n_users, n_items, max_len):
    ranked, truths = [], []
    for _ in range(n_users):
        length = rng.randint(0, max_len)
        ranked.append([f"i{rng.randrange(n_items)}" for _ in range(length)])  # duplicates likely
        truths.append({f"i{rng.randrange(n_items)}" for _ in range(rng.randint(0, 8))})  # may be empty
    return ranked, truths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_topk_metrics_equal_explicit_loops(seed):
    rng = random.Random(seed)
    ranked, truths = random_ranking_data(rng, 60, 40, 70)
    ks = (1, 3, 10, 50)
    got = topk_metrics(ranked, truths, ks)
    kept = [(r, t) for r, t in zip(ranked, truths) if t]
    assert len(kept) < len(truths)  # some users have no truth and are skipped
    for k in ks:
        refs = np.array([ref_user_metrics(r, t, k) for r, t in kept])
        assert got[f"recall@{k}"] == pytest.approx(refs[:, 0].mean(), abs=1e-12)
        assert got[f"ndcg@{k}"] == pytest.approx(refs[:, 1].mean(), abs=1e-12)
        assert got[f"hitrate@{k}"] == pytest.approx(refs[:, 2].mean(), abs=1e-12)
    assert list(got) == [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "hitrate")]


def test_topk_metrics_hand_computed_and_edge_cases():
    # ranks 1..4 after de-duplication: a, b, c, d; truth {b, d, z}
    ranked, truth = ["a", "b", "a", "c", "b", "d"], {"b", "d", "z"}
    m = user_topk_metrics(ranked, truth, ks=(2, 4, 10))
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["hitrate@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    ideal3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["recall@4"] == pytest.approx(2 / 3)
    assert m["ndcg@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal3)
    assert m["ndcg@10"] == m["ndcg@4"]  # a list shorter than K is simply short
    perfect = user_topk_metrics(["x", "y"], {"x", "y"}, ks=(1, 5))
    assert perfect == {
        "recall@1": 0.5,
        "ndcg@1": 1.0,
        "hitrate@1": 1.0,
        "recall@5": 1.0,
        "ndcg@5": 1.0,
        "hitrate@5": 1.0,
    }
    assert user_topk_metrics([], {"x"}, ks=(10,)) == {"recall@10": 0.0, "ndcg@10": 0.0, "hitrate@10": 0.0}
    with pytest.raises(ValueError):
        user_topk_metrics(["x"], set())
    with pytest.raises(ValueError):
        topk_metrics([["x"]], [{"x"}], ks=(0,))
    with pytest.raises(ValueError):
        topk_metrics([["x"]], [{"x"}, {"y"}])
    assert all(math.isnan(v) for v in topk_metrics([["x"]], [set()], ks=(10,)).values())


def test_topk_metrics_by_user_mapping_counts_missing_users_as_zero():
    lists = {"u1": ["a", "b"], "u3": ["c"]}
    truths = {"u1": {"a"}, "u2": {"b"}, "u4": set()}  # u2 has no list -> 0; u4 skipped; u3 unused
    got = topk_metrics(lists, truths, ks=(10,))
    assert got == {"recall@10": 0.5, "ndcg@10": 0.5, "hitrate@10": 0.5}
    with pytest.raises(TypeError):
        topk_metrics([["a"]], truths)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auc_and_uauc_equal_pair_counting_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 400
    users = rng.choice([f"u{i}" for i in range(25)], n)
    labels = rng.integers(0, 2, n)
    scores = rng.integers(0, 6, n) / 5.0  # few distinct values: many ties
    if seed % 2:
        scores = scores + labels * 0.1  # some signal
    assert auc(labels, scores) == pytest.approx(ref_auc(labels, scores), abs=1e-12)

    num = den = 0.0
    for u in set(users):
        mask = users == u
        value = ref_auc(labels[mask], scores[mask])
        if not math.isnan(value):
            num += mask.sum() * value
            den += mask.sum()
    assert uauc(users, labels, scores) == pytest.approx(num / den, abs=1e-12)
    # integer user ids and bool labels work the same
    codes = np.unique(users, return_inverse=True)[1]
    assert uauc(codes, labels.astype(bool), scores) == pytest.approx(num / den, abs=1e-12)


def test_auc_edge_cases():
    assert auc([0, 1], [0.1, 0.9]) == 1.0
    assert auc([1, 0], [0.1, 0.9]) == 0.0
    assert auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([], []))
    # users with one class only are left out of uAUC; none left -> NaN
    assert uauc(["a", "a", "b", "b", "b"], [1, 0, 1, 1, 1], [0.9, 0.1, 0.1, 0.2, 0.3]) == 1.0
    assert math.isnan(uauc(["a", "b"], [1, 0], [0.3, 0.4]))
    # weights are the users' sample counts: a (2 samples, AUC 1), b (4 samples, AUC 0)
    users = ["a", "a", "b", "b", "b", "b"]
    assert uauc(users, [1, 0, 1, 0, 0, 0], [0.9, 0.1, 0.1, 0.5, 0.6, 0.7]) == pytest.approx(2 / 6)
    with pytest.raises(ValueError):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError):
        uauc(["a"], [0, 1], [0.1, 0.2])


def test_logloss_is_clipped_mean_cross_entropy():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    p[:5] = [0.0, 1.0, 1e-12, 1 - 1e-12, 0.5]
    eps = 1e-7
    expected = -sum(
        yi * math.log(min(max(pi, eps), 1 - eps)) + (1 - yi) * math.log(1 - min(max(pi, eps), 1 - eps))
        for yi, pi in zip(y, p)
    ) / len(y)
    assert logloss(y, p) == pytest.approx(expected, rel=1e-12)
    assert logloss([1, 0], [0.0, 1.0], eps=1e-7) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert logloss([1], np.array([1.0], dtype=np.float32)) == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)
    assert math.isnan(logloss([], []))


# -- channel references -------------------------------------------------------------------------
def ref_rank(scores, k, positive_only=True):
    """{(user, item): score} -> sorted [(user, item, score, rank)]: score desc, item asc, top k."""
    by_user = defaultdict(list)
    for (u, i), s in scores.items():
        if s > 0 or not positive_only:
            by_user[u].append((i, s))
    out = []
    for u, items in by_user.items():
        items.sort(key=lambda t: (-t[1], t[0]))
        out += [(u, i, s, r) for r, (i, s) in enumerate(items[:k], start=1)]
    return sorted(out)


def ordered_sums(products):
    """{key: [values]} -> {key: sum of the values in ascending order} (the channels' exact sum)."""
    return {key: sum(sorted(values)) for key, values in products.items()}


def rows_of(df):
    return sorted((r.user_id, r.item_id, r.score, r.rank) for r in df.collect())


def random_value(rng, dyadic):
    # dyadic values make exact ties common; arbitrary floats check the sum is bit-for-bit reproducible
    return rng.choice([0.25, 0.5, 1.0, 2.0, 3.0]) if dyadic else round(rng.uniform(0.01, 3.0), 6)


def random_history(rng, users, items, dyadic):
    rows = []
    for u in users:
        for i in rng.sample(items, rng.randint(1, 6)):
            rows.append((u, i, 0.0 if rng.random() < 0.1 else random_value(rng, dyadic)))
    return rows


def history_frame(spark, rows):
    return spark.createDataFrame(rows, "user_id string, item_id string, weight double")


@pytest.mark.parametrize("dyadic", [True, False])
def test_item_to_item_candidates_equal_reference(spark, dyadic):
    rng = random.Random(11 if dyadic else 12)
    items = [f"i{n:02d}" for n in range(25)]
    users = [f"u{n}" for n in range(15)]
    history = random_history(rng, users, items, dyadic)
    history.append(("u_lonely", "i_isolated", 3.0))  # an item with no neighbours: no candidates
    history.append(("u_zero", items[0], 0.0))  # only a zero weight: every score is 0, nothing listed
    sim = []
    for i in items:
        for rank, j in enumerate(rng.sample([x for x in items if x != i], rng.randint(0, 6)), start=1):
            sim.append((i, j, random_value(rng, dyadic), rank))
    products = defaultdict(list)
    for u, i, w in history:
        for a, j, s, _ in sim:
            if a == i:
                products[(u, j)].append(w * s)
    sim_df = spark.createDataFrame(sim, "item_id string, sim_item_id string, score double, rank int")
    for k in (1, 5, 100):
        got = item_to_item_candidates(history_frame(spark, history), sim_df, k)
        assert got.dtypes == [
            ("user_id", "string"),
            ("item_id", "string"),
            ("score", "double"),
            ("rank", "int"),
        ]
        assert rows_of(got) == ref_rank(ordered_sums(products), k)
    users_out = {r[0] for r in ref_rank(ordered_sums(products), 100)}
    assert "u_lonely" not in users_out and "u_zero" not in users_out
    # a history item may come back as a candidate (history is not filtered out)
    hist_pairs = {(u, i) for u, i, _ in history}
    assert any((r[0], r[1]) in hist_pairs for r in ref_rank(ordered_sums(products), 100))


@pytest.mark.parametrize("dyadic", [True, False])
def test_user_to_user_candidates_equal_reference(spark, dyadic):
    rng = random.Random(21 if dyadic else 22)
    items = [f"i{n:02d}" for n in range(20)]
    users = [f"u{n:02d}" for n in range(18)]
    interactions = random_history(rng, users, items, dyadic)
    usercf = []
    for u in users:
        for rank, v in enumerate(rng.sample([x for x in users if x != u], rng.randint(0, 5)), start=1):
            usercf.append((u, v, random_value(rng, dyadic), rank))
    # users[12:] have neighbours but no history rows, so they are not evaluated and get nothing;
    # u_new has history but no similar users, so gets nothing either
    evaluated = users[:12] + ["u_new"]
    history = [(u, i, w) for u, i, w in interactions if u in evaluated] + [("u_new", "i00", 1.0)]
    products = defaultdict(list)
    for u, v, s, _ in usercf:
        if u in evaluated:
            for v2, j, w in interactions:
                if v2 == v:
                    products[(u, j)].append(s * w)
    for k in (1, 4, 50):
        got = user_to_user_candidates(
            history_frame(spark, history),
            spark.createDataFrame(usercf, "user_id string, sim_user_id string, score double, rank int"),
            history_frame(spark, interactions),
            k,
        )
        assert got.dtypes == [
            ("user_id", "string"),
            ("item_id", "string"),
            ("score", "double"),
            ("rank", "int"),
        ]
        assert rows_of(got) == ref_rank(ordered_sums(products), k)
    assert {r[0] for r in rows_of(got)} <= set(users[:12])


def test_popularity_candidates_same_top_k_for_everyone(spark):
    counts = [("b", 5), ("a", 5), ("c", 9), ("d", 1), ("e", 0), ("f", 5)]
    users = spark.createDataFrame([("u1",), ("u2",), ("u1",), ("u3",)], "user_id string")
    item_counts = spark.createDataFrame(counts, "item_id string, count long")
    got = popularity_candidates(users, item_counts, 3)
    assert got.dtypes == [("user_id", "string"), ("item_id", "string"), ("score", "double"), ("rank", "int")]
    expected_top = [("c", 9.0, 1), ("a", 5.0, 2), ("b", 5.0, 3)]
    assert rows_of(got) == sorted((u, i, s, r) for u in ("u1", "u2", "u3") for i, s, r in expected_top)
    everything = rows_of(popularity_candidates(users, item_counts, 100))
    assert len(everything) == 3 * 5  # "e" has count 0 and is never listed
    assert [r[1] for r in sorted(everything, key=lambda r: r[3]) if r[0] == "u2"] == ["c", "a", "b", "f", "d"]


@pytest.mark.parametrize("chunk", [None, 1, 3, 100])
def test_vector_candidates_exact_top_k_with_ties(chunk):
    rng = np.random.default_rng(3)
    n_users, n_items, d = 11, 30, 4
    users = [f"u{n}" for n in range(n_users)]
    items = [f"i{n:02d}" for n in rng.permutation(n_items)]  # not in id order
    um = rng.integers(-2, 3, (n_users, d)).astype(np.float32)
    im = rng.integers(-2, 3, (n_items, d)).astype(np.float32)
    um[0] = 0  # a zero vector: every score ties, so ids decide
    for k in (1, 5, 30, 45):
        got = vector_candidates(users, um, items, im, k, chunk=chunk)
        assert list(got.columns) == ["user_id", "item_id", "score", "rank"]
        assert got["rank"].dtype == np.int32 and got["score"].dtype == np.float64
        expected = []
        for u, uv in zip(users, um):
            scored = sorted(((-float(uv @ iv), item) for item, iv in zip(items, im)))
            expected += [(u, item, -neg, r) for r, (neg, item) in enumerate(scored[:k], start=1)]
        assert sorted(got.itertuples(index=False, name=None)) == sorted(expected)
    assert list(got[got.user_id == "u0"].item_id) == sorted(items)
    with pytest.raises(ValueError):
        vector_candidates(users, um[:, :3], items, im, 5)
    with pytest.raises(ValueError):
        vector_candidates(users, np.full_like(um, np.nan), items, im, 5)
    assert vector_candidates([], np.zeros((0, d)), items, im, 5).empty


def test_topk_lists_from_spark_and_pandas(spark):
    rows = [("u1", "b", 1.0, 2), ("u1", "a", 2.0, 1), ("u2", "c", 1.0, 1), ("u1", "z", 0.5, 3)]
    pdf = pd.DataFrame(rows, columns=["user_id", "item_id", "score", "rank"])
    sdf = spark.createDataFrame(rows, "user_id string, item_id string, score double, rank int")
    expected = {"u1": ["a", "b", "z"], "u2": ["c"]}
    assert topk_lists(pdf) == expected
    assert topk_lists(sdf) == expected
    # plugs straight into the metrics
    assert topk_metrics(topk_lists(sdf), {"u1": {"b"}, "u2": {"x"}}, ks=(1, 2))["recall@2"] == 0.5


# -- report -------------------------------------------------------------------------------------
def sample_result(date):
    return {
        "date": date,
        "recall": {
            "swing": {
                "recall@10": 0.12,
                "ndcg@10": 0.08,
                "hitrate@10": 0.4,
                "recall@50": 0.3,
                "ndcg@50": 0.1,
            },
            "itemcf": {"recall@10": 0.15, "ndcg@10": 0.07, "hitrate@10": 0.45, "recall@50": 0.28},
            "popularity": {"recall@10": 0.05, "ndcg@10": float("nan"), "hitrate@10": 0.2},
            "<b>odd & name</b>": {"recall@10": np.float64(0.01)},
        },
        "ranking": {"click": {"auc": 0.71, "uauc": 0.66, "logloss": 0.41}, "like": {"auc": 0.6}},
        "baselines": {"click": {"auc": 0.62, "logloss": 0.45}},
        "users_evaluated": 1500,
        "model_versions": {"two_tower": "v3", "ranker": "v2"},
    }


def test_write_evaluation_report(lake):
    date = "2026-11-07"
    result = sample_result(date)
    details = {"history window": "30 days", "note": "<script>alert(1)</script>", "sample": {"users": 1500}}
    json_path, html_path = write_evaluation_report(lake, date, result, details)
    folder = lake.path("_reports", "evaluation")
    assert json_path == os.path.join(folder, f"{date}.json")
    assert html_path == os.path.join(folder, f"{date}.html")
    assert sorted(os.listdir(folder)) == [f"{date}.html", f"{date}.json"]  # no temporary files left

    with open(json_path) as f:
        loaded = json.load(f)
    assert loaded["date"] == date
    assert loaded["recall"]["popularity"]["ndcg@10"] is None  # NaN -> null: strict JSON
    expected = json.loads(json.dumps(result, default=float).replace("NaN", "null"))
    assert loaded == expected
    assert set(loaded) == {"date", "recall", "ranking", "baselines", "users_evaluated", "model_versions"}

    with open(html_path) as f:
        page = f.read()
    for channel in result["recall"]:
        assert html.escape(channel) in page
    assert "<b>odd & name</b>" not in page and "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<svg") == 3  # Recall/NDCG @10, @50, AUC model vs baseline
    assert "statistics-only baseline" in page
    assert "<b>0.1500</b>" in page  # best recall@10 (itemcf) in bold
    assert "<b>0.4100</b>" in page  # lower log-loss of model vs baseline in bold
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no external assets

    # same date again: both files replaced in place
    result["users_evaluated"] = 7
    write_evaluation_report(lake, date, result)
    with open(json_path) as f:
        assert json.load(f)["users_evaluated"] == 7
    assert sorted(os.listdir(folder)) == [f"{date}.html", f"{date}.json"]


def test_report_rejects_bad_shapes(lake):
    with pytest.raises(ValueError, match="date"):
        write_evaluation_report(lake, "../x", {"date": "../x", "recall": {}, "ranking": {}})
    with pytest.raises(ValueError, match="expected"):
        write_evaluation_report(lake, "2026-11-07", {"date": "2026-11-06", "recall": {}, "ranking": {}})
    with pytest.raises(ValueError, match="ranking"):
        write_evaluation_report(lake, "2026-11-07", {"date": "2026-11-07", "recall": {}})
    page = evaluation_html("2026-11-07", {"date": "2026-11-07", "recall": {}, "ranking": {}})
    assert "No recall channel" in page and "No ranking task" in page


def test_reference_helpers_are_consistent():
    # the reference rank helper itself: ties by item id, non-positive dropped
    scores = {("u", "b"): 1.0, ("u", "a"): 1.0, ("u", "c"): 0.0, ("v", "x"): 2.0}
    assert ref_rank(scores, 5) == [("u", "a", 1.0, 1), ("u", "b", 1.0, 2), ("v", "x", 2.0, 1)]
    assert ordered_sums({"k": [0.3, 0.1, 0.2]}) == {"k": (0.1 + 0.2) + 0.3}


def test_every_channel_removes_excluded_pairs_before_the_cut(spark):
    """`exclude` (the seen pairs) leaves each user the k best *allowed* items, for every channel."""
    rng = random.Random(5)
    items = [f"i{n:02d}" for n in range(12)]
    users = [f"u{n}" for n in range(6)]
    history = random_history(rng, users, items, dyadic=False)
    exclude = [(u, i) for u in users for i in rng.sample(items, rng.randint(0, 9))]
    excluded = set(exclude)
    exclude_df = spark.createDataFrame(exclude, "user_id string, item_id string")
    sim = [(i, j, random_value(rng, False), 1) for i in items for j in items if i != j and rng.random() < 0.5]
    products = defaultdict(list)
    for u, i, w in history:
        for a, j, s, _ in sim:
            if a == i and (u, j) not in excluded:
                products[(u, j)].append(w * s)
    sim_df = spark.createDataFrame(sim, "item_id string, sim_item_id string, score double, rank int")
    got = item_to_item_candidates(history_frame(spark, history), sim_df, 3, exclude=exclude_df)
    assert rows_of(got) == ref_rank(ordered_sums(products), 3)

    counts = [(i, n + 1) for n, i in enumerate(items)]  # i11 most popular
    users_df = spark.createDataFrame([(u,) for u in users], "user_id string")
    counts_df = spark.createDataFrame(counts, "item_id string, count long")
    got = rows_of(popularity_candidates(users_df, counts_df, 3, exclude=exclude_df))
    expected = []
    for u in users:
        allowed = [(i, float(c)) for i, c in sorted(counts, key=lambda t: -t[1]) if (u, i) not in excluded]
        expected += [(u, i, s, r) for r, (i, s) in enumerate(allowed[:3], start=1)]
    assert got == sorted(expected)

    rng_np = np.random.default_rng(1)
    um, im = rng_np.normal(size=(len(users), 3)), rng_np.normal(size=(len(items), 3))
    seen = {u: {i for v, i in exclude if v == u} for u in users}
    frame = vector_candidates(users, um, items, im, 4, exclude=seen)
    for u, uv in zip(users, um):
        allowed = sorted((-(uv @ iv), i) for i, iv in zip(items, im) if i not in seen[u])[:4]
        assert list(frame[frame.user_id == u].item_id) == [i for _, i in allowed]


def test_profile_channel_matches_interest_keys_newest_first(spark):
    """score(u, j) = Σ over j's (kind, key) of u's profile weight; each key offers its per_key newest."""
    rng = random.Random(3)
    base = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    items = [
        (
            f"i{n:02d}",
            f"c{n % 3}",
            f"a{n % 4}",
            rng.sample(["x", "y", "z"], rng.randint(0, 2)),
            base + dt.timedelta(hours=n),
        )
        for n in range(14)
    ]
    users = [f"u{n}" for n in range(4)]
    profiles = [
        (u, kind, key, round(rng.random(), 3))
        for u in users
        for kind, keys in (
            ("category", ["c0", "c1", "c2"]),
            ("author", ["a0", "a1", "a2", "a3"]),
            ("tag", ["x", "y", "z"]),
        )
        for key in rng.sample(keys, 2)
    ]
    exclude = [(u, i[0]) for u in users for i in rng.sample(items, 3)]
    per_key, k = 3, 4
    # Reference: per (kind, key) the per_key newest items (created desc, item_id asc)
    offered: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, col in (("category", 1), ("author", 2)):
        for item in sorted(items, key=lambda r: (-r[4].timestamp(), r[0])):
            if len(offered[(kind, item[col])]) < per_key:
                offered[(kind, item[col])].append(item[0])
    for item in sorted(items, key=lambda r: (-r[4].timestamp(), r[0])):
        for tag in item[3]:
            if len(offered[("tag", tag)]) < per_key:
                offered[("tag", tag)].append(item[0])
    products = defaultdict(list)
    for u, kind, key, w in profiles:
        for item in offered[(kind, key)]:
            if (u, item) not in set(exclude):
                products[(u, item)].append(w)
    item_df = spark.createDataFrame(
        items, "item_id string, category string, author_id string, tags array<string>, created_ts timestamp"
    )
    prof_df = spark.createDataFrame(profiles, "user_id string, kind string, key string, weight double")
    ex_df = spark.createDataFrame(exclude, "user_id string, item_id string")
    got = profile_candidates(prof_df, item_keys(item_df), k, per_key, exclude=ex_df)
    assert rows_of(got) == ref_rank(ordered_sums(products), k)
