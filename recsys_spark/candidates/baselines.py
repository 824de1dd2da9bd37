"""The classic baselines users already know, as recall channels: implicit ALS and EASE.

- `fit_implicit_als` / `als_candidates`: Spark MLlib ALS with implicit feedback (Hu, Koren & Volinsky): confidence
  1 + α·r_ui on the binary preference r_ui > 0, rank-f factors; score(u, j) = x_u · y_j.
- `ease_weights` / `ease_candidates`: EASE (Steck): on the binary user × item matrix X of the `max_items`
  items most users engaged with, G = XᵀX, P = (G + λI)⁻¹ and B_ij = −P_ij / P_jj (B_jj = 0);
  score(u, j) = Σ_{i ∈ I_u} B_ij = (x_u B)_j.

Both return candidates in the shape of `lists` (`user_id, item_id, score, rank`; ties by item_id),
remove an optional `exclude` before the top-K cut, and list positive scores only. The Gram matrix
is summed inside Spark tasks, a dense `max_items²` block per task (so a task's memory is set by
`max_items`, not by the data), and only that N × N matrix reaches the driver; the inversion is one
dense N³ solve there.

References
----------
Hu, Koren, Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008.
Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_spark.candidates.lists import check_k, rank_top_k

# Users of one partial Gram product: a (chunk × max_items) float32 block per step.
GRAM_CHUNK_USERS = 1024


def _indexed(ids: DataFrame, name: str, index: str) -> DataFrame:
    """Dense 0-based int ids, assigned in a distributed pass (no driver-side vocabulary)."""
    spark = ids.sparkSession
    pairs = ids.select(name).distinct().orderBy(name).rdd.zipWithIndex().map(lambda p: (p[0][0], int(p[1])))
    schema = T.StructType([T.StructField(name, T.StringType()), T.StructField(index, T.IntegerType())])
    return spark.createDataFrame(pairs, schema)


@dataclass
class ImplicitAls:
    """A fitted MLlib ALS model with the id maps it was trained on.

    Parameters
    ----------
    model : pyspark.ml.recommendation.ALSModel
        User factors [U, rank] and item factors [I, rank].
    user_ix, item_ix : DataFrame
        `(user_id, u)` and `(item_id, i)`: the dense int ids of the model.
    """

    model: Any
    user_ix: DataFrame
    item_ix: DataFrame


def fit_implicit_als(
    interactions: DataFrame,
    rank: int = 32,
    iterations: int = 10,
    reg: float = 0.05,
    alpha: float = 10.0,
    seed: int = 0,
    checkpoint_dir: str | None = None,
) -> ImplicitAls:
    """Spark MLlib's implicit ALS on `interactions`, with ids mapped to ints in a distributed pass.

    Parameters
    ----------
    interactions : DataFrame
        `(user_id, item_id, r)`, r > 0 the interest weight (the confidence is 1 + alpha · r).
    rank, iterations, reg, alpha, seed
        ALS's rank, maxIter, regParam, alpha and seed.
    checkpoint_dir : str, optional
        A folder every executor can write (e.g. `Lake.scratch_dir`): the factor RDDs are checkpointed
        there every 3 iterations. Without it their lineage grows with every iteration and
        deserialising a task overflows the stack (seen at 10 iterations with a C1-only JIT).

    Returns
    -------
    ImplicitAls
        The model (user factors [U, rank], item factors [I, rank]) and the id maps.
    """
    from pyspark.ml.recommendation import ALS

    if checkpoint_dir:
        interactions.sparkSession.sparkContext.setCheckpointDir(checkpoint_dir)
    rated = interactions.filter(F.col("r") > 0)
    user_ix = _indexed(rated, "user_id", "u").cache()
    item_ix = _indexed(rated, "item_id", "i").cache()
    ratings = (
        rated.join(user_ix, "user_id").join(item_ix, "item_id").select("u", "i", F.col("r").cast("float"))
    )
    als = ALS(
        rank=rank,
        maxIter=iterations,
        regParam=reg,
        alpha=alpha,
        implicitPrefs=True,
        userCol="u",
        itemCol="i",
        ratingCol="r",
        seed=seed,
        coldStartStrategy="drop",
        checkpointInterval=3,  # only acts when the context has a checkpoint folder
    )
    return ImplicitAls(als.fit(ratings), user_ix, item_ix)


def als_candidates(
    fitted: ImplicitAls, users: DataFrame, k: int, exclude: DataFrame | None = None
) -> DataFrame:
    """Top-k items per user by score(u, j) = x_u · y_j of a fitted implicit ALS.

    Parameters
    ----------
    fitted : ImplicitAls
        From `fit_implicit_als`.
    users : DataFrame
        `(user_id)` to list for; users the model never saw get no rows.
    k : int
        List length.
    exclude : DataFrame, optional
        `(user_id, item_id)` pairs removed before the cut.

    Returns
    -------
    DataFrame
        `(user_id, item_id, score, rank)`.
    """
    k = check_k(k)
    # Enough per user that k remain after the exclusions: k + the most pairs any user excludes.
    extra = 0
    if exclude is not None:
        most = exclude.join(users.select("user_id").distinct(), "user_id").groupBy("user_id").count()
        extra = int(most.agg(F.max("count")).first()[0] or 0)
    return rank_top_k(als_scores(fitted, users, k + extra), k, exclude)


def als_scores(fitted: ImplicitAls, users: DataFrame, n: int) -> DataFrame:
    """`(user_id, item_id, score)`: each known user's n best items by x_u · y_j (MLlib's exact top-n).

    Parameters
    ----------
    fitted : ImplicitAls
        From `fit_implicit_als`.
    users : DataFrame
        `(user_id)`; users the model never saw get no rows.
    n : int
        Items per user.

    Returns
    -------
    DataFrame
        At most users × n rows.
    """
    wanted = users.select("user_id").distinct().join(fitted.user_ix, "user_id")
    recs = fitted.model.recommendForUserSubset(wanted.select("u"), check_k(n))
    return (
        recs.select("u", F.explode("recommendations").alias("rec"))
        .select("u", F.col("rec.i").alias("i"), F.col("rec.rating").cast("double").alias("score"))
        .join(fitted.user_ix, "u")
        .join(fitted.item_ix, "i")
        .select("user_id", "item_id", "score")
    )


def _partial_gram(rows, n: int):
    """XᵀX of the users in one partition (rows sorted by user), summed over chunks of users."""
    gram = np.zeros((n, n), dtype=np.float64)
    block = np.zeros((GRAM_CHUNK_USERS, n), dtype=np.float32)
    slot, current = -1, None
    for user, index in rows:
        if user != current:
            current, slot = user, slot + 1
            if slot == GRAM_CHUNK_USERS:
                gram += block.T @ block  # float32 counts: exact below 2**24 users
                block[:] = 0
                slot = 0
        block[slot, index] = 1.0
    if slot >= 0:
        used = block[: slot + 1]
        gram += used.T @ used
    yield gram


def ease_weights(interactions: DataFrame, max_items: int, l2: float) -> tuple[list[str], np.ndarray]:
    """EASE's item-item matrix B over the `max_items` items with the most users.

    Parameters
    ----------
    interactions : DataFrame
        `(user_id, item_id, r)`; a pair with r > 0 is a 1 in X.
    max_items : int
        N, the items kept (most users first, ties by item_id): B is N × N on the driver.
    l2 : float
        λ, the L2 weight on B.

    Returns
    -------
    tuple of (list of str, numpy.ndarray)
        The N item ids, and B (N × N float64, zero diagonal) in their order.
    """
    pairs = interactions.filter(F.col("r") > 0).select("user_id", "item_id").distinct()
    top = (
        pairs.groupBy("item_id")
        .count()
        .orderBy(F.col("count").desc(), F.col("item_id"))
        .limit(max_items)
        .collect()
    )
    ids = [r.item_id for r in top]
    n = len(ids)
    if n == 0:
        return ids, np.zeros((0, 0))
    spark = interactions.sparkSession
    index = spark.createDataFrame(list(enumerate(ids)), "i int, item_id string")
    kept = pairs.join(F.broadcast(index), "item_id").select("user_id", "i")
    # Few partitions: each sends one N × N partial sum to the reduce.
    parts = spark.sparkContext.defaultParallelism
    ordered = kept.repartition(parts, "user_id").sortWithinPartitions("user_id")
    gram = ordered.rdd.map(tuple).mapPartitions(lambda rows: _partial_gram(rows, n)).treeReduce(np.add)
    precision = np.linalg.inv(gram + l2 * np.eye(n))
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return ids, weights


def ease_candidates(
    ids: list[str],
    weights: np.ndarray,
    histories: dict[str, set[str]],
    k: int,
    exclude: dict[str, set[str]] | None = None,
) -> pd.DataFrame:
    """Top-k per user of score = x_u B, for users' histories already on the driver (a bounded sample).

    Parameters
    ----------
    ids, weights
        `ease_weights`' item ids and B.
    histories : dict of str to set of str
        Per user, the items of I_u (items outside `ids` are ignored).
    k : int
        List length.
    exclude : dict of str to set of str, optional
        Per user, items removed before the cut.

    Returns
    -------
    pandas.DataFrame
        `(user_id, item_id, score, rank)`.
    """
    k = check_k(k)
    position = {item: j for j, item in enumerate(ids)}
    order = np.argsort(np.array(ids, dtype=object), kind="stable")  # ties by item_id ascending
    rows = []
    for user in sorted(histories):
        x = np.zeros(len(ids))
        x[[position[i] for i in histories[user] if i in position]] = 1.0
        if not x.any():
            continue
        score = x @ weights
        banned = (exclude or {}).get(user, ())
        for item in banned:
            if item in position:
                score[position[item]] = -np.inf
        # Descending score, ascending item id among equals: a stable sort of the id-sorted order.
        ranked = order[np.argsort(-score[order], kind="stable")]
        kept = [j for j in ranked[:k] if score[j] > 0]  # excluded items (-inf) sort last
        rows += [(user, ids[j], float(score[j]), r + 1) for r, j in enumerate(kept)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "score", "rank"])
