"""What a user must not be recommended: items already engaged with (seen) and items shown too often.

The pairs are defined once in `candidates.exclusions` (shared with `evaluate`):
- Seen pairs are passed to every channel builder as its `exclude`, so each channel removes them
  *before* its top-K cut and still fills its quota.
- Over-exposed pairs are checked on the merged candidates through a per-user Bloom filter
  (`recommend.bloom`): a false positive drops a candidate that was fine, an over-exposed one is
  never kept.

`seen_pairs` and `over_exposed` are re-exported here for the recall job.

References
----------
Bloom, B. H. (1970). Space/time trade-offs in hash coding with allowable errors. CACM 13(7).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.candidates.exclusions import over_exposed, seen_pairs
from recsys_spark.recommend.bloom import build_bloom_filters, might_contain

__all__ = ["drop_exposed", "exposure_blooms", "flag_exposed", "over_exposed", "seen_pairs"]


def exposure_blooms(exposed: DataFrame, fpr: float) -> DataFrame:
    """The per-user Bloom filters of the over-exposed pairs (see `bloom.build_bloom_filters`).

    Parameters
    ----------
    exposed : DataFrame
        `(user_id, item_id, ...)` over-exposed pairs.
    fpr : float
        Target false-positive rate of each user's filter.

    Returns
    -------
    DataFrame
        `(user_id, bloom_m, bloom_k, bloom_n, bloom_bits)`, one row per user with exposed items.
    """
    return build_bloom_filters(exposed.select("user_id", "item_id"), fpr)


def flag_exposed(candidates: DataFrame, blooms: DataFrame) -> DataFrame:
    """`candidates` with a boolean `bloom_hit`: the user's filter may hold the item (false without one).

    Parameters
    ----------
    candidates : DataFrame
        Any frame with `user_id, item_id`, shape (rows, c).
    blooms : DataFrame
        Filters from `exposure_blooms`.

    Returns
    -------
    DataFrame
        The same rows and columns plus `bloom_hit`, shape (rows, c + 1).
    """
    joined = candidates.join(blooms, "user_id", "left")
    hit = F.coalesce(
        might_contain(F.col("item_id"), F.col("bloom_bits"), F.col("bloom_m"), F.col("bloom_k")), F.lit(False)
    )
    return joined.withColumn("bloom_hit", hit).drop("bloom_m", "bloom_k", "bloom_n", "bloom_bits")


def drop_exposed(candidates: DataFrame, blooms: DataFrame) -> DataFrame:
    """`candidates` without the rows whose item tests positive in the user's exposure filter.

    Parameters
    ----------
    candidates : DataFrame
        Any frame with `user_id, item_id`.
    blooms : DataFrame
        Filters from `exposure_blooms`.

    Returns
    -------
    DataFrame
        The kept rows, same columns; every over-exposed pair is gone (plus ≈ fpr of the others).
    """
    return flag_exposed(candidates, blooms).filter(~F.col("bloom_hit")).drop("bloom_hit")
