"""Weights of reciprocal-rank fusion learned from yesterday: each voter weighs by how well it ranked.

The lists of day D are fused from the recall channels' ranks and the ranker's task ranks
(`rank.rank_fusion_score`). Channels differ a lot in quality (on ratings-like data the item-based
channels beat the embedding channels several times over), and an unweighted fusion lets the weak
ones dilute the strong. With `--channel-weights auto` each voter v (a channel, or a ranker task) gets

    q_v = NDCG@k of v's own order of yesterday's candidates (the `ranked_candidates` of D−1, served
          on D) against what each user engaged with on D, over users with a positive among them;
    weight_v = (q_v / max_v' q_v') ^ power        (power = `--auto-weight-power`, default 2)

A candidate outside a channel's list is outside that channel's order. NDCG's ideal is the user's
positives among yesterday's candidates (every voter ranks the same pool, so the ideal cancels
between voters). Everything read is as of the end of D: yesterday's lists and D's engagements.
This is weighted reciprocal-rank fusion with per-ranker weights from held-out quality; the power
sharpens the weights toward the best voters (power 0: plain RRF).

References
----------
Cormack, G. V., Clarke, C. L. A. and Büttcher, S. (2009). Reciprocal rank fusion outperforms
Condorcet and individual rank learning methods. SIGIR.
Järvelin, K. and Kekäläinen, J. (2002). Cumulated gain-based evaluation of IR techniques. TOIS 20(4).
"""

from __future__ import annotations

import math

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def voter_ranks(candidates: DataFrame, tasks: tuple[str, ...]) -> DataFrame:
    """`(user_id, item_id, voter, rank)`: every channel's rank and every task's rank of each candidate.

    Parameters
    ----------
    candidates : DataFrame
        `ranked_candidates` rows: `user_id, item_id, channel_ranks map<string,int>, task_scores
        map<string,double>`.
    tasks : tuple of str
        Tasks whose order counts as a voter (named `task:<name>`), ranked by their probability desc,
        item_id asc, among the user's candidates.

    Returns
    -------
    DataFrame
        One row per (candidate, voter that ranks it).
    """
    channel = candidates.select(
        "user_id", "item_id", F.explode("channel_ranks").alias("voter", "rank")
    ).select("user_id", "item_id", "voter", F.col("rank").cast("int"))
    frames = [channel]
    for task in tasks:
        p = F.col("task_scores")[task]
        order = Window.partitionBy("user_id").orderBy(p.desc(), F.col("item_id"))
        frames.append(
            candidates.filter(p.isNotNull()).select(
                "user_id",
                "item_id",
                F.lit(f"task:{task}").alias("voter"),
                F.row_number().over(order).cast("int").alias("rank"),
            )
        )
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out


def voter_ndcg(
    candidates: DataFrame, positives: DataFrame, tasks: tuple[str, ...], k: int
) -> dict[str, float]:
    """NDCG@k of each voter's order of `candidates` against `positives` (see the module docstring).

    Parameters
    ----------
    candidates : DataFrame
        Yesterday's `ranked_candidates` rows (one day).
    positives : DataFrame
        `(user_id, item_id)` engaged with on the next day (distinct pairs).
    tasks : tuple of str
        Ranker tasks counted as voters `task:<name>`.
    k : int
        Cut-off.

    Returns
    -------
    dict of str to float
        Voter -> mean NDCG@k over users with a positive among their candidates; `{}` when none has.
        One small row per voter reaches the driver.
    """
    labels = positives.select("user_id", "item_id").distinct().withColumn("hit", F.lit(1))
    pool = candidates.select("user_id", "item_id").join(labels, ["user_id", "item_id"])
    ideal = pool.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"))
    idcg = F.aggregate(
        F.sequence(F.lit(1), F.least(F.col("n"), F.lit(k)).cast("int")),
        F.lit(0.0),
        lambda acc, j: acc + F.lit(1.0) / F.log2(j.cast("double") + 1),
    )
    ideal = ideal.select("user_id", idcg.alias("idcg"))
    users = ideal.count()
    if not users:
        return {}
    gains = (
        voter_ranks(candidates.join(ideal, "user_id", "left_semi"), tasks)
        .filter(F.col("rank") <= k)
        .join(labels, ["user_id", "item_id"])
        .groupBy("voter", "user_id")
        .agg(F.sum(F.lit(1.0) / F.log2(F.col("rank").cast("double") + 1)).alias("dcg"))
        .join(ideal, "user_id")
        .groupBy("voter")
        .agg(F.sum(F.col("dcg") / F.col("idcg")).alias("total"))
    )
    # One row per channel (a handful): the voters present, so one that never hit scores 0.
    channels = candidates.select(F.explode(F.map_keys("channel_ranks")).alias("voter")).distinct()
    voters = {r.voter for r in channels.collect()} | {f"task:{t}" for t in tasks}
    found = {r.voter: r.total / users for r in gains.collect()}
    return {v: found.get(v, 0.0) for v in sorted(voters | set(found))}


def quality_weights(quality: dict[str, float], power: float) -> dict[str, float]:
    """`(q_v / max q) ^ power` per voter; all 1 when no voter scored above 0.

    Parameters
    ----------
    quality : dict of str to float
        Voter -> NDCG@k (`voter_ndcg`).
    power : float
        Sharpening exponent, >= 0.

    Returns
    -------
    dict of str to float
        Voter -> weight in [0, 1], the best voter 1.
    """
    best = max(quality.values(), default=0.0)
    if best <= 0 or not math.isfinite(best):
        return {v: 1.0 for v in quality}
    return {v: (q / best) ** power if q > 0 else 0.0 for v, q in quality.items()}
