"""Swing: item pairs scored by the user pairs that share them, damped by how much else they share.

    sim(i,j) = Σ_{u<v; u,v ∈ U_i ∩ U_j} w_u·w_v / (alpha2 + |I_u ∩ I_v|)
    w_u = (alpha1 + |I_u|)^(-beta)

- Users outside `[min_user_items, max_user_items]` items are ignored (the set `R`, see `interactions`).
- `|I_u|` in w_u is taken on `R`, before the per-item cap: it measures the user's whole activity.
- `U_i`, `U_j` and `|I_u ∩ I_v|` are taken on `T`, after each item keeps its `max_users_per_item`
  most recent users: u and v share item l only if both are kept on l.

Plan (three shuffles of pair data, each reduced before it moves):
1. per item, the sorted list of kept users → user pairs (item, u, v, w_u·w_v), blocked (`pairs`);
2. per user pair: c = |I_u ∩ I_v| and the sorted list of common items; pairs with c < 2 name no item
   pair and stop here (most of them, on sparse data);
3. per user pair with c ≥ 2, item pairs from the common list (blocked again) with term
   w_u·w_v / (alpha2 + c), summed exactly per item pair.

References
----------
X. Yang, Y. Zhu, Y. Zhang, X. Wang, Q. Yuan. "Large Scale Product Graph Construction for
Recommendation in E-commerce." arXiv:2010.05525, 2020 (Swing).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.similarity.interactions import filtered_interactions
from recsys_spark.similarity.pairs import blocked_pairs, exact_sum, exact_value
from recsys_spark.similarity.params import SimilarityParams


def swing_similarity(interactions: DataFrame, cfg: SimilarityParams) -> DataFrame:
    """Unordered item pairs `(item_id, sim_item_id, score)` with item_id < sim_item_id and score > 0.

    Parameters
    ----------
    interactions : DataFrame
        `(user_id, item_id, r, last_ts)` from `interest_weights` (only `r > 0` rows).
    cfg : SimilarityConfig
        Supplies alpha1, alpha2, beta (all >= 0), min_user_items, max_user_items,
        max_users_per_item, block_size and pair_partitions.

    Returns
    -------
    DataFrame
        `(item_id: string, sim_item_id: string, score: double)`, one row per unordered pair,
        `item_id < sim_item_id`, `score > 0`; rank with `top_k` after `both_directions`.

    Raises
    ------
    ValueError
        If alpha1, alpha2 or beta is negative.
    """
    if cfg.alpha1 < 0 or cfg.alpha2 < 0 or cfg.beta < 0:
        raise ValueError("alpha1, alpha2 and beta must be >= 0")  # keeps every term in (0, 1]
    parts = cfg.pair_partitions or None
    kept = filtered_interactions(interactions, cfg.min_user_items, cfg.max_user_items, cfg.max_users_per_item)
    weight = F.pow(F.lit(float(cfg.alpha1)) + F.col("n_user"), F.lit(-float(cfg.beta)))
    per_item = kept.groupBy("item_id").agg(
        F.array_sort(F.collect_list(F.struct(F.col("user_id"), weight.alias("w")))).alias("users")
    )
    user_pairs = blocked_pairs(per_item, ["item_id"], "users", cfg.block_size, parts).select(
        "item_id",
        F.col("l.user_id").alias("u"),
        F.col("r.user_id").alias("v"),
        (F.col("l.w") * F.col("r.w")).alias("wuv"),
    )
    common = (
        user_pairs.groupBy("u", "v")
        .agg(
            F.count(F.lit(1)).alias("c"),
            F.max("wuv").alias("wuv"),
            F.array_sort(F.collect_list("item_id")).alias("items"),
        )
        .filter(F.col("c") >= 2)
        .withColumn("term", F.col("wuv") / (F.lit(float(cfg.alpha2)) + F.col("c")))
    )
    item_pairs = blocked_pairs(common, ["u", "v", "term"], "items", cfg.block_size, parts)
    sums = item_pairs.groupBy(F.col("l").alias("item_id"), F.col("r").alias("sim_item_id")).agg(
        *exact_sum(F.col("term"), "s")
    )
    return sums.select("item_id", "sim_item_id", exact_value("s").alias("score")).filter(F.col("score") > 0)
