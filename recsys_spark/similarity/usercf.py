"""UserCF with the hot-item penalty.

    sim(u,v) = Σ_{l ∈ I_u ∩ I_v} 1/log(1 + |U_l|) / sqrt(|I_u| · |I_v|)        (natural log)

`|I_u|` and `|U_l|` are taken on `R` (users passing the user filter, see `interactions`), so the
penalty reflects an item's real popularity. The common items `I_u ∩ I_v` are taken on `T`: a user
pair shares item l only when both are among l's `max_users_per_item` most recent users, which is
what keeps a hot item from pairing all of its users. Users with more than `max_user_items` items are
ignored; `min_user_items` does not apply (light users are the ones UserCF helps most).

References
----------
J. S. Breese, D. Heckerman, C. Kadie. "Empirical Analysis of Predictive Algorithms for
Collaborative Filtering." UAI 1998 (inverse user frequency: the 1/log(1 + |U_l|) penalty).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.similarity.interactions import filtered_interactions
from recsys_spark.similarity.pairs import blocked_pairs, exact_sum, exact_value
from recsys_spark.similarity.params import SimilarityParams


def usercf_similarity(interactions: DataFrame, cfg: SimilarityParams) -> DataFrame:
    """Unordered user pairs `(user_id, sim_user_id, score)` with user_id < sim_user_id and score > 0.

    Parameters
    ----------
    interactions : DataFrame
        `(user_id, item_id, r, last_ts)` from `interest_weights` (only `r > 0` rows).
    cfg : SimilarityParams
        Supplies max_user_items, max_users_per_item, block_size and pair_partitions.

    Returns
    -------
    DataFrame
        `(user_id: string, sim_user_id: string, score: double)`, one row per unordered pair,
        `user_id < sim_user_id`, `score > 0`.
    """
    kept = filtered_interactions(interactions, 1, cfg.max_user_items, cfg.max_users_per_item)
    per_item = kept.groupBy("item_id").agg(
        F.array_sort(F.collect_list(F.struct("user_id", "n_user"))).alias("users"),
        F.max("n_item").alias("n_item"),
    )
    pairs = blocked_pairs(
        per_item.withColumn("penalty", 1.0 / F.log(1.0 + F.col("n_item"))),
        ["item_id", "penalty"],
        "users",
        cfg.block_size,
        cfg.pair_partitions or None,
    )
    sums = pairs.groupBy(F.col("l.user_id").alias("user_id"), F.col("r.user_id").alias("sim_user_id")).agg(
        *exact_sum(F.col("penalty"), "s"),
        F.max("l.n_user").alias("nu"),
        F.max("r.n_user").alias("nv"),
    )
    return sums.select(
        "user_id", "sim_user_id", (exact_value("s") / F.sqrt(F.col("nu") * F.col("nv"))).alias("score")
    ).filter(F.col("score") > 0)
