"""What a served list must not hold: items the user engaged with (seen) and items shown too often.

Shared by `recommend` (which removes them from the lists it serves) and `evaluate` (which scores every
channel as it would serve, with the same pairs removed from its lists and from the truth), so what is
measured is what is served.

- Seen: `(u, i)` with `r_ui > 0` over all history up to and including day D (DESIGN's interest weight;
  impressions weigh 0, so merely shown items are not "seen").
- Over-exposed: `(u, i)` with at least `max_exposures` `impression` events in the `exposure_days`
  days ending at D (`ExposureParams`; `max_exposures = 0` turns the rule off).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.config import option
from recsys_spark.events import interest_weights, window_bounds


@dataclass
class ExposureParams:
    """The exposure rule, defaults and help written once (recall and evaluate take it).

    Parameters
    ----------
    exposure_days : int
        Days of impressions ending at the lists' day that count, >= 1.
    max_exposures : int
        A pair shown at least this many times in them is over-exposed; 0 turns the rule off.
    """

    exposure_days: int = option(
        7, "Days of impressions ending at --date counted for the exposure filter.", minimum=1
    )
    max_exposures: int = option(
        3, "Drop an item shown to the user at least this many times (0 = no filter).", minimum=0
    )


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
