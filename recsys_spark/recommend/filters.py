"""What a user must not be recommended: items already engaged with (seen) and items shown too often.

- Seen: `(u, i)` with `r_ui > 0` over all history up to and including day D (DESIGN's interest weight;
  impressions weigh 0, so merely shown items are not "seen"). Passed to every channel builder as its
  `exclude`, so each channel removes them *before* its top-K cut and still fills its quota.
- Over-exposed: `(u, i)` with at least `max_exposures` `impression` events in the `exposure_days`
  days ending at D. Checked on the merged candidates through a per-user Bloom filter
  (`recommend.bloom`): a false positive drops a candidate that was fine, an over-exposed one is
  never kept.

References
----------
Bloom, B. H. (1970). Space/time trade-offs in hash coding with allowable errors. CACM 13(7).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.events import interest_weights, window_bounds
from recsys_spark.recommend.bloom import build_bloom_filters, might_contain


def seen_pairs(events: DataFrame, day: dt.date, users: DataFrame | None = None) -> DataFrame:
    """`(user_id, item_id)` with r_ui > 0 over all events up to and including `day`.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date
        Last day counted (inclusive).
    users : DataFrame, optional
        `(user_id)`: keep only these users' pairs.

    Returns
    -------
    DataFrame
        `(user_id, item_id)`, one row per seen pair, shape (pairs, 2).
    """
    seen = interest_weights(events, day, 0).select("user_id", "item_id")
    return seen if users is None else seen.join(users.select("user_id"), "user_id", "left_semi")


def over_exposed(
    events: DataFrame, day: dt.date, exposure_days: int, max_exposures: int, users: DataFrame | None = None
) -> DataFrame:
    """`(user_id, item_id, exposures)`: pairs shown at least `max_exposures` times in the window.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date
        Last day of the window (inclusive).
    exposure_days : int
        Days in the window ending at `day`, >= 1.
    max_exposures : int
        A pair with at least this many `impression` events is over-exposed, >= 1.
    users : DataFrame, optional
        `(user_id)`: keep only these users' pairs.

    Returns
    -------
    DataFrame
        `(user_id, item_id, exposures long)`, shape (pairs, 3).
    """
    if exposure_days < 1 or max_exposures < 1:
        raise ValueError(
            f"exposure_days and max_exposures must be >= 1, got {exposure_days}, {max_exposures}"
        )
    first, last = window_bounds(day, exposure_days)
    shown = events.filter((F.col("dt") >= F.lit(first)) & (F.col("dt") <= F.lit(last))).filter(
        F.col("event") == "impression"
    )
    if users is not None:
        shown = shown.join(users.select("user_id"), "user_id", "left_semi")
    return (
        shown.groupBy("user_id", "item_id")
        .agg(F.count(F.lit(1)).alias("exposures"))
        .filter(F.col("exposures") >= max_exposures)
    )


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
