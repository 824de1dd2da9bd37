"""Candidate generation: the ranked list each recall channel gives a user.

Every channel turns what was known before the evaluation day into a ranked list per user, in one shape:
`(user_id, item_id, score double, rank int)`, rank 1..K, highest score first, ties by `item_id`
ascending, at most K rows per user. The metrics (`metrics.topk_metrics`) then compare those lists with
what each user actually engaged with on the day.

- `item_to_item_candidates` (ItemCF, Swing): score(u, j) = Σ_{i ∈ history(u)} weight(u, i) · sim(i, j).
- `user_to_user_candidates` (UserCF): score(u, j) = Σ_v sim(u, v) · weight(v, j).
- `popularity_candidates`: the same global top-K for everyone (the baseline every channel must beat).
- `cohorts.cohort_candidates` (cohort): the top-K of the user's cohort (region × age bucket), so a user
  with no history at all (user cold start) still gets a list shaped by people like them.
- `vector_candidates` (two-tower, graph embeddings): exact brute-force top-K by dot product.
- `profile_candidates` (profile): score(u, j) = Σ_{(kind, key) ∈ keys(j)} weight_u(kind, key), the
  user's interest profile (`user_profiles`: category, author, tag shares) matched against the item's
  category, author and tags. It needs no click on the item, so it recalls items created today
  (item cold start); each (kind, key) offers only its `per_key` newest items.

Every channel takes an optional `exclude` of `(user_id, item_id)` pairs (the items a user already
engaged with): they are removed *before* the top-K cut, so a user still gets K items where K unseen
ones exist. Without it, history items stay in the lists (re-reads, re-purchases are real engagement);
serving and the `--exclude-seen` evaluation pass it, since on ratings data nobody rates a film twice.

The Spark channels use built-in functions only and never bring input-sized data to the driver. Scores
are sums of products accumulated in a fixed order (the products sorted ascending, then added left to
right), so a score does not depend on partitioning and mathematically equal scores stay bit-equal —
which keeps tie-breaking, and therefore the metrics, reproducible from run to run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

CANDIDATE_COLUMNS = ("user_id", "item_id", "score", "rank")

# Default memory budget of one score block in `vector_candidates` (float64 chunk × items).
VECTOR_BLOCK_BYTES = 64 * 1024 * 1024


def check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def _ordered_sum(col: Column) -> Column:
    """Σ of `col` over the group, adding the values in ascending order: partitioning-independent bits."""
    return F.aggregate(F.array_sort(F.collect_list(col)), F.lit(0.0).cast("double"), lambda acc, x: acc + x)


def rank_top_k(scored: DataFrame, k: int, exclude: DataFrame | None = None) -> DataFrame:
    """Drop `exclude`d pairs, keep positive scores, rank per user (score desc, item_id asc), keep 1..k."""
    if exclude is not None:
        scored = scored.join(exclude.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
    order = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("item_id").asc())
    return (
        scored.filter(F.col("score") > 0)
        .withColumn("rank", F.row_number().over(order))
        .filter(F.col("rank") <= k)
        .select("user_id", "item_id", F.col("score").cast("double"), F.col("rank").cast("int"))
    )


def item_to_item_candidates(
    history: DataFrame, sim: DataFrame, k: int, exclude: DataFrame | None = None
) -> DataFrame:
    """Top-k items per user from an item–item similarity table (ItemCF, Swing).

    `history`: `(user_id, item_id, weight)`, one row per (user, item) — each user's interactions before
    the evaluation day (rows are summed as given, so duplicates count twice). `sim`: `(item_id,
    sim_item_id, score, rank)`, used as given (filter `rank` first to use fewer neighbours).

    score(u, j) = Σ_{i ∈ history(u)} weight(u, i) · sim(i, j); only score > 0 is listed. Items already in
    u's history are kept when they are neighbours of other history items, unless `exclude (user_id,
    item_id)` names them (removed before the cut). A user without history rows, or whose items have no
    neighbours, gets no rows.
    Returns `(user_id, item_id, score double, rank int)`.
    """
    k = check_k(k)
    neighbours = sim.select(
        F.col("item_id").alias("src_item"), F.col("sim_item_id").alias("item_id"), F.col("score").alias("sim")
    )
    products = history.select("user_id", F.col("item_id").alias("src_item"), "weight").join(
        neighbours, "src_item"
    )
    scored = products.groupBy("user_id", "item_id").agg(
        _ordered_sum(F.col("weight").cast("double") * F.col("sim").cast("double")).alias("score")
    )
    return rank_top_k(scored, k, exclude)


def user_to_user_candidates(
    history: DataFrame,
    usercf_sim: DataFrame,
    interactions: DataFrame,
    k: int,
    exclude: DataFrame | None = None,
) -> DataFrame:
    """Top-k items per user from similar users' interactions (UserCF).

    `history` names the users to produce lists for (its distinct `user_id`s — the evaluated users; other
    columns are ignored), so a user with no history gets no rows, as in `item_to_item_candidates`.
    `usercf_sim`: `(user_id, sim_user_id, score, rank)`, used as given. `interactions`: `(user_id, item_id,
    weight)`, the neighbours' interest weights, one row per (user, item).

    score(u, j) = Σ_v sim(u, v) · weight(v, j); only score > 0 is listed; items u already has are kept
    unless `exclude (user_id, item_id)` names them (removed before the cut).
    Returns `(user_id, item_id, score double, rank int)`.
    """
    k = check_k(k)
    users = history.select("user_id").distinct()
    neighbours = usercf_sim.join(users, "user_id", "left_semi").select(
        "user_id", F.col("sim_user_id").alias("neighbour"), F.col("score").alias("sim")
    )
    their_items = interactions.select(F.col("user_id").alias("neighbour"), "item_id", "weight")
    scored = (
        neighbours.join(their_items, "neighbour")
        .groupBy("user_id", "item_id")
        .agg(_ordered_sum(F.col("sim").cast("double") * F.col("weight").cast("double")).alias("score"))
    )
    return rank_top_k(scored, k, exclude)


def _top_items(item_counts: DataFrame, n: int) -> DataFrame:
    """The n most counted items (count > 0; ties by item_id), ranked, as a small local frame."""
    top = (
        item_counts.select("item_id", F.col("count").cast("double").alias("score"))
        .filter(F.col("score") > 0)
        .orderBy(F.col("score").desc(), F.col("item_id").asc())
        .limit(n)
        .collect()
    )
    schema = T.StructType(
        [
            T.StructField("item_id", T.StringType()),
            T.StructField("score", T.DoubleType()),
            T.StructField("rank", T.IntegerType()),
        ]
    )
    return item_counts.sparkSession.createDataFrame(
        [(row.item_id, row.score, rank) for rank, row in enumerate(top, start=1)], schema
    )


def popularity_candidates(
    users: DataFrame, item_counts: DataFrame, k: int, exclude: DataFrame | None = None
) -> DataFrame:
    """The global top-k of `item_counts (item_id, count)` for every user of `users (user_id)`.

    score = count (only count > 0), highest first, ties by item_id ascending. The k best items are found
    first (a top-k over the items, then k rows to the driver) and only those k rows are crossed with the
    distinct users, so the cost is |items| + |users| · k, never |users| · |items|.

    With `exclude (user_id, item_id)`, each user gets the k best items they are not excluded from. The
    global prefix is widened to n = k + (the most excluded items any user has inside it), doubling
    until it holds k allowed items for everyone (or the catalogue ends), so the driver holds n rows,
    n ≤ k + the largest exclusion set, and ranks are renumbered 1..k per user.
    Returns `(user_id, item_id, score double, rank int)`.
    """
    k = check_k(k)
    users = users.select("user_id").distinct()
    if exclude is None:
        ranked = _top_items(item_counts, k)
        return users.crossJoin(F.broadcast(ranked)).select("user_id", "item_id", "score", "rank")
    excluded = exclude.select("user_id", "item_id").join(users, "user_id", "left_semi")
    n = k
    while True:
        ranked = _top_items(item_counts, n)
        size = ranked.count()
        worst = (
            (
                excluded.join(F.broadcast(ranked.select("item_id")), "item_id")
                .groupBy("user_id")
                .count()
                .agg(F.max("count"))
                .first()[0]
            )
            or 0
        )
        if size - worst >= k or size < n:
            break
        n = max(2 * n, k + worst)
    allowed = users.crossJoin(F.broadcast(ranked)).join(excluded, ["user_id", "item_id"], "left_anti")
    order = Window.partitionBy("user_id").orderBy(F.col("rank").asc())
    return (
        allowed.withColumn("rank", F.row_number().over(order).cast("int"))
        .filter(F.col("rank") <= k)
        .select("user_id", "item_id", "score", "rank")
    )


def item_keys(items: DataFrame) -> DataFrame:
    """`(item_id, kind, key, created_ts)`: each item's category, author and tags as profile keys.

    Parameters
    ----------
    items : DataFrame
        The `items` table: `item_id, category, author_id, tags, created_ts`.

    Returns
    -------
    DataFrame
        One row per (item, kind, key) with kind in {category, author, tag}; null keys dropped.
    """
    base = items.select("item_id", "category", "author_id", "tags", "created_ts")
    parts = [
        base.select("item_id", F.lit("category").alias("kind"), F.col("category").alias("key"), "created_ts"),
        base.select("item_id", F.lit("author").alias("kind"), F.col("author_id").alias("key"), "created_ts"),
        base.select(
            "item_id", F.lit("tag").alias("kind"), F.explode_outer("tags").alias("key"), "created_ts"
        ),
    ]
    out = parts[0].unionByName(parts[1]).unionByName(parts[2])
    return out.filter(F.col("key").isNotNull()).dropDuplicates(["item_id", "kind", "key"])


def profile_candidates(
    profiles: DataFrame, keys: DataFrame, k: int, per_key: int = 50, exclude: DataFrame | None = None
) -> DataFrame:
    """Top-k items per user whose category, author and tags match the user's interest profile.

    Parameters
    ----------
    profiles : DataFrame
        `(user_id, kind, key, weight)`: `user_profiles` rows of one day (weights sum to 1 per kind).
    keys : DataFrame
        `(item_id, kind, key, created_ts)` from `item_keys` (only items that may be served).
    k : int
        List length.
    per_key : int
        Items each (kind, key) offers: its newest by `created_ts` (then item_id), which bounds the
        join to users × keys × per_key rows and favours the items no other channel knows yet.
    exclude : DataFrame, optional
        `(user_id, item_id)` pairs removed before the cut.

    Returns
    -------
    DataFrame
        `(user_id, item_id, score double, rank int)`, score = Σ over matched keys of the weights.
    """
    k = check_k(k)
    newest = Window.partitionBy("kind", "key").orderBy(F.col("created_ts").desc_nulls_last(), "item_id")
    offered = keys.withColumn("_n", F.row_number().over(newest)).filter(F.col("_n") <= int(per_key))
    scored = (
        profiles.select("user_id", "kind", "key", F.col("weight").cast("double"))
        .join(offered.select("item_id", "kind", "key"), ["kind", "key"])
        .groupBy("user_id", "item_id")
        .agg(_ordered_sum(F.col("weight")).alias("score"))
    )
    return rank_top_k(scored, k, exclude)


def vector_candidates(
    user_ids: Sequence[str],
    user_matrix: np.ndarray,
    item_ids: Sequence[str],
    item_matrix: np.ndarray,
    k: int,
    chunk: int | None = None,
    exclude: Mapping[str, Collection[str]] | None = None,
) -> pd.DataFrame:
    """Exact top-k items per user by dot product over the whole catalogue (two-tower, embeddings).

    `user_matrix[r]` is the vector of `user_ids[r]` ([U, d]); `item_matrix[c]` that of `item_ids[c]`
    ([I, d]). Scores are computed in float64; every item is a candidate (negative scores included, no
    history filtering), ties broken by item_id ascending; each user gets min(k, I) rows. `exclude` maps
    a user id to item ids never to list for them (removed before the cut: such a user gets
    min(k, I − excluded) rows).

    Memory: users are scored `chunk` at a time. One block holds the chunk × I float64 scores plus, at
    most, as many int64 row/column indices and a boolean mask, so the peak working set is bounded by
    about 3 × chunk × I × 8 bytes on top of the inputs (float64 copies) and the output. The default
    `chunk` keeps one score block within `VECTOR_BLOCK_BYTES` (64 MiB), i.e. ~200 MiB of working set.
    Returns a pandas DataFrame `(user_id, item_id, score float64, rank int32)`, by user then rank.
    """
    k = check_k(k)
    users_m = np.asarray(user_matrix, dtype=np.float64)
    items_m = np.asarray(item_matrix, dtype=np.float64)
    if users_m.ndim != 2 or items_m.ndim != 2 or users_m.shape[1] != items_m.shape[1]:
        raise ValueError(f"need [U, d] and [I, d] matrices, got {users_m.shape} and {items_m.shape}")
    if len(user_ids) != users_m.shape[0] or len(item_ids) != items_m.shape[0]:
        raise ValueError("ids and matrix rows differ in number")
    if not (np.isfinite(users_m).all() and np.isfinite(items_m).all()):
        raise ValueError("vectors contain NaN or infinite values")
    n_items = items_m.shape[0]
    if n_items == 0 or users_m.shape[0] == 0:
        return _candidates_frame([], [], np.empty(0), np.empty(0, dtype=np.int32))

    # Sort the catalogue by id once: then "item_id ascending" is "column index ascending".
    item_order = np.argsort(np.asarray(item_ids, dtype=object), kind="stable")
    items_sorted = items_m[item_order]
    sorted_ids = np.asarray(item_ids, dtype=object)[item_order]
    column_of = {item: c for c, item in enumerate(sorted_ids)} if exclude else {}
    kk = min(k, n_items)
    if chunk is None:
        chunk = max(1, VECTOR_BLOCK_BYTES // (8 * n_items))
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    out_users, out_items, out_scores, out_ranks = [], [], [], []
    uids = np.asarray(user_ids, dtype=object)
    for start in range(0, users_m.shape[0], chunk):
        block = users_m[start : start + chunk] @ items_sorted.T  # [c, I]
        if exclude:
            for r, user in enumerate(uids[start : start + chunk]):
                cols = [column_of[i] for i in exclude.get(user, ()) if i in column_of]
                block[r, cols] = -np.inf
        # Everything scoring at least the k-th best score is a candidate (more than k when tied) ...
        kth = -np.partition(-block, kk - 1, axis=1)[:, kk - 1]
        rows, cols = np.nonzero((block >= kth[:, None]) & np.isfinite(block))
        scores = block[rows, cols]
        del block
        # ... then order by (row, score desc, column asc) and keep each row's first kk.
        order = np.lexsort((cols, -scores, rows))
        rows, cols, scores = rows[order], cols[order], scores[order]
        first = np.searchsorted(rows, rows, side="left")
        rank = np.arange(rows.size) - first + 1
        keep = rank <= kk
        out_users.append(uids[start + rows[keep]])
        out_items.append(sorted_ids[cols[keep]])
        out_scores.append(scores[keep])
        out_ranks.append(rank[keep].astype(np.int32))
    return _candidates_frame(
        np.concatenate(out_users),
        np.concatenate(out_items),
        np.concatenate(out_scores),
        np.concatenate(out_ranks),
    )


def _candidates_frame(users, items, scores, ranks) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=object),
            "item_id": pd.Series(items, dtype=object),
            "score": pd.Series(scores, dtype=np.float64),
            "rank": pd.Series(ranks, dtype=np.int32),
        }
    )


def topk_lists(candidates: DataFrame | pd.DataFrame) -> dict[str, list[str]]:
    """`{user_id: [item_id, ...]}` in rank order, from any channel's candidates (Spark or pandas).

    For a Spark DataFrame this collects to the driver: one row per user with its ranked list. Call it only
    on candidates of the evaluated users (which the evaluate job bounds with a user sample) and with a
    bounded k, so the size is users × k, never the input tables'.
    """
    if isinstance(candidates, pd.DataFrame):
        ordered = candidates.sort_values(["user_id", "rank"], kind="stable")
        return {user: list(group["item_id"]) for user, group in ordered.groupby("user_id", sort=False)}
    rows = (
        candidates.groupBy("user_id")
        .agg(F.sort_array(F.collect_list(F.struct(F.col("rank").cast("int"), "item_id"))).alias("ranked"))
        .collect()
    )
    return {row.user_id: [entry.item_id for entry in row.ranked] for row in rows}
