"""The baseline channels against references written from their papers' formulas (NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_spark.candidates.baselines import (
    als_candidates,
    ease_candidates,
    ease_weights,
    fit_implicit_als,
)


def _random_interactions(seed: int, users: int = 40, items: int = 15, density: float = 0.25):
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u:02d}", f"i{i:02d}", float(rng.integers(1, 4)))
        for u in range(users)
        for i in range(items)
        if rng.random() < density
    ]
    return rows


def _reference_lists(ids, scores_by_user, k, exclude):
    out = {}
    for user, scores in scores_by_user.items():
        ranked = sorted(
            (item for item in ids if item not in exclude.get(user, ()) and scores[item] > 0),
            key=lambda item: (-scores[item], item),
        )
        if ranked[:k]:
            out[user] = ranked[:k]
    return out


def test_ease_matches_the_closed_form(spark):
    rows = _random_interactions(3)
    frame = spark.createDataFrame(rows, "user_id string, item_id string, r double").repartition(3)
    max_items, l2, k = 10, 5.0, 4
    ids, weights = ease_weights(frame, max_items, l2)
    # Reference (Steck 2019): the max_items items with most users (ties by id), X binary,
    # P = (XᵀX + λI)⁻¹, B = −P / diag(P) column-wise, diag(B) = 0.
    users_of: dict[str, set[str]] = {}
    for user, item, _ in rows:
        users_of.setdefault(item, set()).add(user)
    kept = sorted(users_of, key=lambda item: (-len(users_of[item]), item))[:max_items]
    assert ids == kept
    everyone = sorted({u for u, _, _ in rows})
    x = np.array([[1.0 if u in users_of[i] else 0.0 for i in kept] for u in everyone])
    p = np.linalg.inv(x.T @ x + l2 * np.eye(len(kept)))
    b = np.array(
        [[0.0 if i == j else -p[i, j] / p[j, j] for j in range(len(kept))] for i in range(len(kept))]
    )
    np.testing.assert_allclose(weights, b, rtol=1e-9, atol=1e-12)

    histories = {u: {i for uu, i, _ in rows if uu == u} for u in everyone[:12]}
    exclude = {u: set(sorted(h)[:2]) for u, h in histories.items()}
    for banned in (None, exclude):
        got = ease_candidates(ids, weights, histories, k, banned)
        scores = {u: dict(zip(kept, x[everyone.index(u)] @ b, strict=True)) for u in histories}
        want = _reference_lists(kept, scores, k, banned or {})
        listed = {u: list(g.sort_values("rank")["item_id"]) for u, g in got.groupby("user_id")}
        assert listed == want
        assert (got["rank"].groupby(got["user_id"]).max() <= k).all()


def test_als_lists_are_the_top_k_of_the_factor_dot_products(spark):
    rows = _random_interactions(5, users=30, items=12, density=0.3)
    frame = spark.createDataFrame(rows, "user_id string, item_id string, r double")
    fitted = fit_implicit_als(frame, rank=4, iterations=5, reg=0.1, alpha=5.0, seed=1)
    users = spark.createDataFrame([(f"u{u:02d}",) for u in range(10)] + [("stranger",)], "user_id string")
    exclude_rows = [(u, i) for u, i, _ in rows if u in {"u00", "u01", "u02"}]
    exclude = spark.createDataFrame(exclude_rows, "user_id string, item_id string")
    k = 5
    user_vec = {
        r.user_id: np.array(r.features)
        for r in fitted.model.userFactors.join(fitted.user_ix.withColumnRenamed("u", "id"), "id").collect()
    }
    item_vec = {
        r.item_id: np.array(r.features)
        for r in fitted.model.itemFactors.join(fitted.item_ix.withColumnRenamed("i", "id"), "id").collect()
    }
    ids = sorted(item_vec)
    banned: dict[str, set[str]] = {}
    for user, item in exclude_rows:
        banned.setdefault(user, set()).add(item)
    wanted = [f"u{u:02d}" for u in range(10)]
    for ex_frame, ex in ((None, {}), (exclude, banned)):
        got = als_candidates(fitted, users, k, ex_frame).toPandas()
        assert "stranger" not in set(got["user_id"])  # never trained on: no list, no error
        scores = {u: {i: float(user_vec[u] @ item_vec[i]) for i in ids} for u in wanted if u in user_vec}
        want = _reference_lists(ids, scores, k, ex)
        listed = {u: list(g.sort_values("rank")["item_id"]) for u, g in got.groupby("user_id")}
        assert listed == want
        for r in got.itertuples():
            assert r.score == pytest.approx(scores[r.user_id][r.item_id], rel=1e-5, abs=1e-6)
