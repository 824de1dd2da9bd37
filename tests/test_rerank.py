"""Rerank (`recommend/diversity.py`, `recommend/rules.py`, `recsys-spark rerank`) against references.

The references are written from the formulas of the module docstrings, not from the code: MMR
recomputes every candidate's marginal value with plain loops; the DPP reference is the naive greedy
that recomputes log det of every candidate subset with `numpy.linalg.slogdet` (no Cholesky update);
the rules are checked on every window of every list.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from recsys_spark import cli
from recsys_spark.lake.tables import table_schema
from recsys_spark.quality.gate import QualityGateError, disable_gates, enable_gates
from recsys_spark.recommend.diversity import cosine_similarity, dpp, mmr, relevance, select
from recsys_spark.recommend.rerank import RerankParams, reason_for
from recsys_spark.recommend.rules import ListRules

D = dt.date(2026, 11, 9)


# -- references (plain Python from the formulas) -----------------------------------------------------
def ref_cos(vectors: np.ndarray) -> list[list[float]]:
    n = len(vectors)
    out = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            a, b = vectors[i], vectors[j]
            na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
            out[i][j] = (
                1.0 if i == j else (sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else 0.0)
            )
    return out


def ref_allowed(selected, cand, cats, auths, max_same, window, author_rule=True) -> bool:
    """Appending `cand` keeps every window of `window` positions at <= max_same of one category and
    never puts two items of one author side by side (None = unconstrained)."""
    seq = [*selected, cand]
    if max_same > 0:
        for start in range(max(0, len(seq) - window), len(seq)):
            block = seq[start : start + window]
            for c in {cats[i] for i in block if cats[i] is not None}:
                if sum(1 for i in block if cats[i] == c) > max_same:
                    return False
    adjacent = len(seq) > 1 and auths[seq[-1]] is not None and auths[seq[-1]] == auths[seq[-2]]
    return not (author_rule and adjacent)


def ref_mmr(rel, sim, k, lam, window, cats=None, auths=None, max_same=0, rule_window=1):
    n, selected = len(rel), []
    while len(selected) < min(k, n):
        best, best_value = None, -math.inf
        for i in range(n):
            if i in selected:
                continue
            if cats is not None and not ref_allowed(selected, i, cats, auths, max_same, rule_window):
                continue
            recent = selected[-window:] if window > 0 else selected
            redundancy = max((sim[i][j] for j in recent), default=0.0)
            value = lam * rel[i] - (1 - lam) * redundancy
            if value > best_value:  # strict: ties keep the lower index
                best, best_value = i, value
        if best is None:
            break
        selected.append(best)
    return selected


def ref_dpp(rel, sim, k, theta, cats=None, auths=None, max_same=0, rule_window=1):
    alpha = theta / (2 * (1 - theta))
    q = [math.exp(alpha * r) for r in rel]
    n = len(rel)
    kernel = np.array([[q[i] * sim[i][j] * q[j] for j in range(n)] for i in range(n)])
    selected = []
    while len(selected) < min(k, n):
        best, best_value = None, -math.inf
        for i in range(n):
            if i in selected:
                continue
            if cats is not None and not ref_allowed(selected, i, cats, auths, max_same, rule_window):
                continue
            idx = [*selected, i]
            sign, logdet = np.linalg.slogdet(kernel[np.ix_(idx, idx)])
            value = logdet if sign > 0 else -math.inf
            if value > best_value:
                best, best_value = i, value
        if best is None:
            break
        selected.append(best)
    return selected


def ref_relevance(scores):
    lo, hi = min(scores), max(scores)
    return [1.0] * len(scores) if hi == lo else [(s - lo) / (hi - lo) for s in scores]


def random_user(rng: np.random.Generator, n: int, dim: int, n_cats: int, n_auths: int):
    scores = np.sort(rng.random(n))[::-1]
    vectors = rng.normal(size=(n, dim))
    cats = np.array([f"c{x}" if x < n_cats else None for x in rng.integers(0, n_cats + 1, n)], dtype=object)
    auths = np.array(
        [f"a{x}" if x < n_auths else None for x in rng.integers(0, n_auths + 1, n)], dtype=object
    )
    return scores, vectors, cats, auths


# -- diversity against the references ----------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_mmr_equals_the_formula(seed):
    rng = np.random.default_rng(seed)
    scores, vectors, cats, auths = random_user(rng, 15, 4, 3, 4)
    rel = ref_relevance(list(scores))
    sim = ref_cos(vectors)
    lam, window = [0.0, 0.3, 0.7, 1.0, 0.5, 0.9][seed], [0, 1, 3, 5, 2, 0][seed]
    got = mmr(relevance(scores), cosine_similarity(vectors, 15), 10, lam, window)
    assert got == ref_mmr(rel, sim, 10, lam, window)
    rules = ListRules(2, 4, True)
    got = mmr(relevance(scores), cosine_similarity(vectors, 15), 10, lam, window, rules.checker(cats, auths))
    assert got == ref_mmr(rel, sim, 10, lam, window, cats, auths, 2, 4)
    if lam == 1.0:  # pure relevance: the score order
        assert ref_mmr(rel, sim, 10, lam, window) == list(range(10))


@pytest.mark.parametrize("seed", range(6))
def test_dpp_equals_brute_force_log_det_greedy(seed):
    rng = np.random.default_rng(100 + seed)
    n, dim, k = 14, 9, 8  # k < dim: the kernel restricted to any k items is non-singular
    scores, vectors, cats, auths = random_user(rng, n, dim, 3, 4)
    theta = [0.0, 0.3, 0.5, 0.7, 0.9, 0.95][seed]
    rel = ref_relevance(list(scores))
    sim = ref_cos(vectors)
    got = dpp(relevance(scores), cosine_similarity(vectors, n), k, theta)
    assert got == ref_dpp(rel, sim, k, theta)
    rules = ListRules(2, 3, True)
    got = dpp(relevance(scores), cosine_similarity(vectors, n), k, theta, rules.checker(cats, auths))
    assert got == ref_dpp(rel, sim, k, theta, cats, auths, 2, 3)


def test_dpp_past_the_vector_rank_fills_by_relevance_and_identity_is_score_order():
    rng = np.random.default_rng(7)
    scores, vectors, _, _ = random_user(rng, 10, 2, 1, 1)  # rank 2: only two items add volume
    got = dpp(relevance(scores), cosine_similarity(vectors, 10), 6, 0.5)
    assert len(got) == 6 and len(set(got)) == 6
    assert got[:2] == ref_dpp(ref_relevance(list(scores)), ref_cos(vectors), 2, 0.5)
    rest = [i for i in range(10) if i not in got[:2]][:4]  # then the best remaining by score
    assert got[2:] == rest
    for method in ("mmr", "dpp", "none"):
        assert select(method, scores, None, 5) == [0, 1, 2, 3, 4]


def test_items_without_vectors_are_orthogonal():
    v = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    sim = cosine_similarity(v, 3)
    assert np.allclose(sim, [[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    assert np.all(np.linalg.eigvalsh(sim) > -1e-12)


# -- rules on random inputs ----------------------------------------------------------------------------
def assert_rules_hold(chosen, cats, auths, max_same, window):
    for start in range(len(chosen)):
        block = chosen[start : start + window]
        for c in {cats[i] for i in block if cats[i] is not None}:
            assert sum(cats[i] == c for i in block) <= max_same, (chosen, start)
    for a, b in zip(chosen, chosen[1:]):
        assert auths[a] is None or auths[a] != auths[b], chosen


@pytest.mark.parametrize("method", ["none", "mmr", "dpp"])
def test_rules_hold_in_every_window_of_every_list(method):
    rng = np.random.default_rng(11)
    for trial in range(40):
        n = int(rng.integers(1, 40))
        max_same, window = int(rng.integers(1, 4)), int(rng.integers(1, 8))
        scores, vectors, cats, auths = random_user(
            rng, n, 6, int(rng.integers(1, 5)), int(rng.integers(1, 5))
        )
        checker = ListRules(max_same, window, True).checker(cats, auths)
        chosen = select(method, scores, vectors, 20, checker)
        assert len(set(chosen)) == len(chosen) <= min(20, n)
        assert_rules_hold(chosen, cats, auths, max_same, window)
        if len(chosen) < min(20, n):  # the list ends only when nothing left keeps the rules
            left = [i for i in range(n) if i not in chosen]
            assert not any(ref_allowed(chosen, i, cats, auths, max_same, window) for i in left), trial


def test_reason_names_channels_position_and_what_moved_it():
    assert reason_for(["itemcf", "swing"], "swing", 3, 3, True, "mmr") == (
        "itemcf+swing: similar to items you engaged with; ranker #3"
    )
    moved = reason_for(["popularity"], "popularity", 9, 4, False, "dpp")
    assert moved == "popularity: popular right now; recall score #9; placed by dpp diversity"
    assert reason_for(["x"], "x", 2, 1, True, "none").endswith("placed by list rules")


# -- the job on small Spark data ----------------------------------------------------------------------
def _ranked_frame(spark, rng, users: int, per_user: int):
    rows = []
    for u in range(users):
        scores = np.sort(rng.random(per_user))[::-1]
        for r, s in enumerate(scores, start=1):
            item = f"i{(u * 7 + r * 3) % 40:02d}"
            rows.append(
                (f"u{u}", item, float(s), r, {"click": float(s)}, ["swing"], {"swing": 0.5}, {"swing": r})
            )
    df = spark.createDataFrame(
        rows,
        "user_id string, item_id string, score double, rank int, task_scores map<string,double>, "
        "channels array<string>, channel_scores map<string,double>, channel_ranks map<string,int>",
    )
    # re-rank per user by score desc, item asc (duplicate item ids per user dropped first)
    from recsys_spark.recommend.rank import number_ranks

    df = df.dropDuplicates(["user_id", "item_id"]).drop("rank")
    return number_ranks(df).withColumn("model_version", F.lit("full-2026-11-09")).withColumn("dt", F.lit(D))


def _items(spark):
    rows = [(f"i{k:02d}", f"c{k % 3}", f"a{k % 5}", [], None) for k in range(40)]
    return spark.createDataFrame(rows, table_schema("items").spark_schema())


def test_rerank_job_writes_gated_lists_equal_to_numpy(spark, lake):
    rng = np.random.default_rng(5)
    lake.overwrite("items", _items(spark))
    ranked = _ranked_frame(spark, rng, users=6, per_user=18)
    lake.overwrite_dates("ranked_candidates", ranked, [D])
    vectors = spark.createDataFrame(
        [(f"i{k:02d}", "deepwalk", [float(x) for x in rng.normal(size=4)]) for k in range(0, 40, 2)],
        "item_id string, method string, vector array<float>",
    )
    meta = {"date": str(D), "method": "deepwalk"}
    lake.overwrite_partitions("item_embeddings", vectors, "method", ["deepwalk"], metadata=meta)
    args = ["rerank", "--lake", lake.root, "--date", str(D), "--k", "10", "--diversity", "dpp"]
    assert cli.main([*args, "--max-same-category", "2", "--rule-window", "4"], spark=spark) == 0
    got = lake.read("recommendations").filter(F.col("dt") == F.lit(D)).toPandas()
    summary = json.loads(Path(lake.path("_reports", "quality", "recommendations", f"{D}.json")).read_text())
    assert summary["table"] == "recommendations"  # the gate validated the table before the commit
    items = {r.item_id: (r.category, r.author_id) for r in _items(spark).collect()}
    vec = {r.item_id: np.array(r.vector, dtype=np.float64) for r in vectors.collect()}
    params = RerankParams(k=10, diversity="dpp", max_same_category=2, rule_window=4)
    for user, pool in ranked.toPandas().groupby("user_id"):
        pool = pool.sort_values("rank")
        ids = list(pool["item_id"])
        mat = np.stack([vec.get(i, np.zeros(4)) for i in ids])
        cats = np.array([items[i][0] for i in ids], dtype=object)
        auths = np.array([items[i][1] for i in ids], dtype=object)
        rel = ref_relevance(list(pool["score"]))
        expected = [ids[j] for j in ref_dpp(rel, ref_cos(mat), 10, params.dpp_theta, cats, auths, 2, 4)]
        mine = got[got.user_id == user].sort_values("rank")
        assert list(mine["rank"]) == list(range(1, len(mine) + 1))  # 1..K, no gaps
        assert list(mine["item_id"]) == expected, user
        assert all(mine["reason"].str.len() > 0) and set(mine["model_version"]) == {"full-2026-11-09"}
        assert_rules_hold(
            list(range(len(mine))),
            [items[i][0] for i in mine["item_id"]],
            [items[i][1] for i in mine["item_id"]],
            2,
            4,
        )


def test_the_gate_blocks_recommendations_with_a_rank_gap(spark, lake):
    lake.overwrite("items", _items(spark))
    bad = spark.createDataFrame(
        [("u0", "i00", 1, 0.9, ["swing"], "r", None, D), ("u0", "i01", 3, 0.8, ["swing"], "r", None, D)],
        table_schema("recommendations").spark_schema(),
    )
    enable_gates(lake, D, ["recommendations"])
    try:
        with pytest.raises(QualityGateError, match="rank_gap|without gaps"):
            lake.overwrite_dates("recommendations", bad, [D])
    finally:
        disable_gates(lake)
    assert not lake.exists("recommendations")


# -- new-item slots (item cold start) -----------------------------------------------------------------
def test_reserved_positions_are_evenly_spaced():
    from recsys_spark.recommend.rules import reserved_positions

    # p_j = round((j + 1) k / (slots + 1)) − 1, 0-based
    assert reserved_positions(50, 2) == [16, 32]
    assert reserved_positions(10, 1) == [4]
    assert reserved_positions(10, 0) == []
    for k in range(1, 12):
        for slots in range(0, k + 3):
            got = reserved_positions(k, slots)
            assert len(got) == min(slots, k) == len(set(got)) and all(0 <= p < k for p in got)


@pytest.mark.parametrize("seed", range(4))
def test_new_item_slots_hold_the_best_remaining_new_item(seed):
    from recsys_spark.recommend.rules import no_rules, reserved_positions, with_new_item_slots

    rng = np.random.default_rng(seed)
    n, k, slots = 30, 10, 2
    scores = rng.random(n)
    order = np.argsort(-scores, kind="stable")  # candidates come sorted by score in the job
    scores = scores[order]
    new = np.zeros(n, dtype=bool)
    new[rng.choice(n, size=[0, 1, 3, 6][seed], replace=False)] = True
    positions = reserved_positions(k, slots)
    got = select("none", scores, None, k, with_new_item_slots(no_rules(n), new, positions))
    # Reference: fill positions in turn; a reserved one takes the best remaining new item if any is left.
    left, expected = list(range(n)), []
    for p in range(k):
        pick = [i for i in left if new[i]] if p in positions and any(new[i] for i in left) else left
        best = max(pick, key=lambda i: (scores[i], -i))
        expected.append(best)
        left.remove(best)
    assert got == expected
    n_new = int(new.sum())
    held = [p for p in positions if new[got[p]]]
    assert len(held) == min(n_new, slots)  # slots always filled when new items exist


def test_rerank_job_fills_new_item_slots(spark, lake):
    rng = np.random.default_rng(8)
    created = dt.datetime.combine(D, dt.time(9), dt.timezone.utc)
    old = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    # i00..i39; every fifth item was created on D (new), the rest long before.
    rows = [(f"i{k:02d}", f"c{k % 3}", f"a{k % 5}", [], created if k % 5 == 4 else old) for k in range(40)]
    lake.overwrite("items", spark.createDataFrame(rows, table_schema("items").spark_schema()))
    ranked = _ranked_frame(spark, rng, users=5, per_user=20)
    lake.overwrite_dates("ranked_candidates", ranked, [D])
    argv = ["rerank", "--lake", lake.root, "--date", str(D), "--k", "10", "--diversity", "none"]
    assert (
        cli.main([*argv, "--max-same-category", "0", "--author-rule", "false", "--pool", "8"], spark=spark)
        == 0
    )
    got = lake.read("recommendations").filter(F.col("dt") == F.lit(D)).toPandas()
    new = {f"i{k:02d}" for k in range(40) if k % 5 == 4}
    for user, pool in ranked.toPandas().groupby("user_id"):
        pool = pool.sort_values("rank")
        mine = got[got.user_id == user].sort_values("rank")
        fresh = [i for i in pool["item_id"] if i in new]  # best new first, wherever they ranked
        assert fresh and len(mine) == 10, user
        slots = [2, 6]  # reserved_positions(10, 2)
        held = min(2, len(fresh))
        # The best new items, in their order, take the reserved slots (unless score order put them
        # earlier already: then the next new ones do).
        shown_new = [i for i in mine["item_id"] if i in new]
        assert shown_new[:held] == fresh[:held], user
        assert all(mine["item_id"].iloc[p] in new for p in slots[:held]), user
        assert all("reserved slot" in mine["reason"].iloc[p] for p in slots[:held]), user
        assert not any("reserved slot" in r for p, r in enumerate(mine["reason"]) if p not in slots)


def test_variant_by_serves_each_user_the_method_of_their_bucket(spark, lake):
    # Default spec, layer rerank: holdout 0-9, mmr 10-54, dpp 55-99 (bucket_of: the plain-Python twin
    # of the Spark hash). A variant named like a method uses it; holdout runs the options as given.
    from recsys_spark.experiments.buckets import DEFAULT_SPEC, bucket_of, parse_spec

    rng = np.random.default_rng(4)
    lake.overwrite("items", _items(spark))
    ranked = _ranked_frame(spark, rng, users=12, per_user=15)
    lake.overwrite_dates("ranked_candidates", ranked, [D])
    vectors = spark.createDataFrame(
        [(f"i{k:02d}", "deepwalk", [float(x) for x in rng.normal(size=4)]) for k in range(40)],
        "item_id string, method string, vector array<float>",
    )
    lake.overwrite_partitions(
        "item_embeddings", vectors, "method", ["deepwalk"], metadata={"date": str(D), "method": "deepwalk"}
    )
    base = ["rerank", "--lake", lake.root, "--date", str(D), "--k", "8", "--gate", "false"]

    def lists() -> dict:
        got = lake.read("recommendations").filter(F.col("dt") == F.lit(D)).toPandas()
        return {
            u: (list(g.sort_values("rank")["item_id"]), list(g["reason"])) for u, g in got.groupby("user_id")
        }

    by_method = {}
    for method in ("none", "mmr", "dpp"):
        assert cli.main([*base, "--diversity", method], spark=spark) == 0
        by_method[method] = lists()
    assert by_method["mmr"] != by_method["dpp"]  # the variants differ, so the check below can fail
    assert cli.main([*base, "--diversity", "none", "--variant-by", "rerank"], spark=spark) == 0
    served = lists()
    layer = parse_spec(DEFAULT_SPEC).layer("rerank")
    seen_variants = set()
    for user, (items, reasons) in served.items():
        variant = layer.variant_of_bucket(bucket_of(user, layer, 100))
        seen_variants.add(variant)
        method = variant if variant in ("mmr", "dpp") else "none"
        assert items == by_method[method][user][0], (user, variant)
        assert all(r.endswith(f"; A/B rerank={variant}") for r in reasons)
    assert served.keys() == by_method["none"].keys() and len(seen_variants) >= 2
