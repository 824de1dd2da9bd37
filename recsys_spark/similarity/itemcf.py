"""ItemCF: cosine similarity of items over users' interest weights.

    sim(i,j) = Σ_u r_ui·r_uj / (sqrt(Σ_u r_ui²) · sqrt(Σ_u r_uj²))

Every sum runs over the same users of an item: its `max_users_per_item` most recent ones (the set
`T`, see `interactions`), so two items with identical users score exactly 1 whatever the cap drops.
Users with more than `max_user_items` items are ignored: a bot's n items would otherwise add n²/2
pairs. `min_user_items` does not apply (a one-item user still counts).

Exact ties: the score is computed as `sqrt(dot² / (na·nb))`. With integer event weights (the
defaults) `dot`, `na`, `nb` are integer sums, exact in any order, and `dot²`, `na·nb` stay exact
below 2^53; the division then rounds the exact rational cos² once and `sqrt` rounds once more, so the
double depends only on the value of cos², and mathematically equal scores are bit-equal (identical
items give sqrt(1) = 1) and fall to the id order in `top_k`. `dot/(sqrt(na)·sqrt(nb))` or
`dot/sqrt(na·nb)` do not: 1/sqrt(1·2) and 7/sqrt(2·49) differ there by one ulp. Both steps are
monotone, so a higher cosine never gets a lower double.

References
----------
B. Sarwar, G. Karypis, J. Konstan, J. Riedl. "Item-Based Collaborative Filtering Recommendation
Algorithms." WWW 2001.
G. Linden, B. Smith, J. York. "Amazon.com Recommendations: Item-to-Item Collaborative Filtering."
IEEE Internet Computing 7(1), 2003.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.similarity.interactions import filtered_interactions
from recsys_spark.similarity.pairs import blocked_pairs
from recsys_spark.similarity.params import SimilarityParams


def itemcf_similarity(interactions: DataFrame, cfg: SimilarityParams) -> DataFrame:
    """Unordered item pairs `(item_id, sim_item_id, score)` with item_id < sim_item_id and score > 0.

    Parameters
    ----------
    interactions : DataFrame
        `(user_id, item_id, r, last_ts)` from `interest_weights` (only `r > 0` rows).
    cfg : SimilarityConfig
        Supplies max_user_items, max_users_per_item, block_size and pair_partitions.

    Returns
    -------
    DataFrame
        `(item_id: string, sim_item_id: string, score: double)`, one row per unordered pair,
        `item_id < sim_item_id`, cosine `score` in (0, 1]; rank with `top_k` after `both_directions`.
    """
    kept = filtered_interactions(interactions, 1, cfg.max_user_items, cfg.max_users_per_item)
    per_user = kept.groupBy("user_id").agg(
        F.array_sort(F.collect_list(F.struct("item_id", "r", "norm2"))).alias("items")
    )
    pairs = blocked_pairs(per_user, ["user_id"], "items", cfg.block_size, cfg.pair_partitions or None)
    dots = pairs.groupBy(F.col("l.item_id").alias("item_id"), F.col("r.item_id").alias("sim_item_id")).agg(
        F.sum(F.col("l.r") * F.col("r.r")).alias("dot"),
        F.max("l.norm2").alias("na"),
        F.max("r.norm2").alias("nb"),
    )
    cos2 = (F.col("dot") * F.col("dot")) / (F.col("na") * F.col("nb"))
    return dots.select("item_id", "sim_item_id", F.sqrt(cos2).alias("score")).filter(F.col("score") > 0)
