"""ItemCF: cosine similarity of items over users' interest weights.

    sim(i,j) = Σ_u r_ui·r_uj / (sqrt(Σ_u r_ui²) · sqrt(Σ_u r_uj²))

Norms Σ_u r_ui² are taken on `R` (all users passing the user filter, see `interactions`); the
co-occurrence sum Σ_u r_ui·r_uj on `T` (each item capped to its `max_users_per_item` most recent
users). Users with more than `max_user_items` items are ignored: a bot's n items would otherwise add
n²/2 pairs. `min_user_items` does not apply (a one-item user still counts in the norms).
With integer event weights the dot products are integer sums, exact in any order.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.similarity.interactions import filtered_interactions
from recsys_spark.similarity.pairs import blocked_pairs
from recsys_spark.similarity.params import SimilarityParams


def itemcf_similarity(interactions: DataFrame, cfg: SimilarityParams) -> DataFrame:
    """Unordered item pairs `(item_id, sim_item_id, score)` with item_id < sim_item_id and score > 0.

    `interactions` is `interest_weights(...)`; `cfg` supplies max_user_items, max_users_per_item,
    block_size and pair_partitions (see `SimilarityConfig`).
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
    return dots.select(
        "item_id", "sim_item_id", (F.col("dot") / (F.sqrt("na") * F.sqrt("nb"))).alias("score")
    ).filter(F.col("score") > 0)
