"""Swing: item pairs scored by the user pairs that share them, damped by how much else they share.

    sim(i,j) = Σ_{u<v; u,v ∈ U_i ∩ U_j} w_u·w_v / (alpha2 + |I_u ∩ I_v|)
    w_u = (alpha1 + |I_u|)^(-beta)

as DESIGN.md defines it:

- Users outside `[min_user_items, max_user_items]` items are ignored (the set `R`, see `interactions`).
- The cap shrinks only `U_i`: an item pair (i, j) gets the user pairs of `U_i ∩ U_j` taken on `T`,
  each item keeping its `max_users_per_item` most recent users.
- `I_u`, in w_u and in `|I_u ∩ I_v|`, is the user's whole item set (on `R`, before the cap): a user
  the cap drops from a hot item still shares that item with everyone else who engaged with it.

Plan (three shuffles of pair data and one join, each reduced before it moves; no item's whole
user list is ever paired, only its capped one):
1. per item, the sorted list of kept users → user pairs (item, u, v, w_u·w_v), blocked (`pairs`);
2. per user pair: the sorted list of items that kept both, its size k, and the number of those items
   that are cold (`|U_l| ≤ max_users_per_item`, so the cap dropped nobody there). Pairs with k < 2
   name no item pair and stop here (most of them, on sparse data);
3. `|I_u ∩ I_v|` = (cold items shared: all counted in step 2) + (hot items shared: `H_u ∩ H_v`,
   where `H_u` is the sorted array of u's hot items, kept on them or not). Only the user pairs
   left after step 2 are joined to `H` (one row per user with a hot item, at most `max_user_items`
   long), so the cap still bounds the work;
4. per user pair with k ≥ 2, item pairs from the kept common list (blocked again) with term
   w_u·w_v / (alpha2 + |I_u ∩ I_v|), summed exactly per item pair (`exact_sum`), so a score is a
   function of its multiset of terms: pairs built alike tie to the bit, whatever the partitioning.

References
----------
X. Yang, Y. Zhu, Y. Zhang, X. Wang, Q. Yuan. "Large Scale Product Graph Construction for
Recommendation in E-commerce." arXiv:2010.05525, 2020 (Swing).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.similarity.interactions import filter_users, recency_rank
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
    ranked = recency_rank(filter_users(interactions, cfg.min_user_items, cfg.max_user_items))
    is_hot = F.col("n_item") > F.lit(cfg.max_users_per_item)  # the cap drops some of its users
    hot_items = (
        ranked.filter(is_hot).groupBy("user_id").agg(F.array_sort(F.collect_list("item_id")).alias("hot"))
    )
    weight = F.pow(F.lit(float(cfg.alpha1)) + F.col("n_user"), F.lit(-float(cfg.beta)))
    per_item = (
        ranked.filter(F.col("pos") <= cfg.max_users_per_item)
        .groupBy("item_id")
        .agg(
            F.array_sort(F.collect_list(F.struct(F.col("user_id"), weight.alias("w")))).alias("users"),
            F.max(is_hot.cast("int")).alias("hot"),
        )
    )
    user_pairs = blocked_pairs(per_item, ["item_id", "hot"], "users", cfg.block_size, parts).select(
        "item_id",
        "hot",
        F.col("l.user_id").alias("u"),
        F.col("r.user_id").alias("v"),
        (F.col("l.w") * F.col("r.w")).alias("wuv"),
    )
    common = (
        user_pairs.groupBy("u", "v")
        .agg(
            F.count(F.lit(1)).alias("k"),
            F.sum(1 - F.col("hot")).alias("cold"),
            F.max("wuv").alias("wuv"),
            F.array_sort(F.collect_list("item_id")).alias("items"),
        )
        .filter(F.col("k") >= 2)
    )
    hot_u = hot_items.select(F.col("user_id").alias("u"), F.col("hot").alias("hot_u"))
    hot_v = hot_items.select(F.col("user_id").alias("v"), F.col("hot").alias("hot_v"))
    shared_hot = F.when(
        F.col("hot_u").isNotNull() & F.col("hot_v").isNotNull(),
        F.size(F.array_intersect("hot_u", "hot_v")),
    ).otherwise(F.lit(0))
    terms = (
        common.join(hot_u, "u", "left")
        .join(hot_v, "v", "left")
        .select(
            "u",
            "v",
            "items",
            (F.col("wuv") / (F.lit(float(cfg.alpha2)) + (F.col("cold") + shared_hot))).alias("term"),
        )
    )
    item_pairs = blocked_pairs(terms, ["u", "v", "term"], "items", cfg.block_size, parts)
    sums = item_pairs.groupBy(F.col("l").alias("item_id"), F.col("r").alias("sim_item_id")).agg(
        *exact_sum(F.col("term"), "s")
    )
    return sums.select("item_id", "sim_item_id", exact_value("s").alias("score")).filter(F.col("score") > 0)
