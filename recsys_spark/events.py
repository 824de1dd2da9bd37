"""Events and what they are worth: the event types, their default weights and the interest weights `r_ui`.

Every stage that turns events into interest reads it from here (similarity, the item graph, the
samples, evaluation), so one table of weights (DESIGN.md) holds everywhere:

    r_ui = Σ_{e ∈ events of u on i in the window} w(type(e))

An event type with weight 0 (`impression`) is exposure, not interest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_spark.lake.tables import EVENT_TYPES

__all__ = ["DEFAULT_WEIGHTS", "EVENT_TYPES", "event_weight", "interest_weights", "window_bounds"]

DEFAULT_WEIGHTS: dict[str, float] = {
    "click": 1.0,
    "like": 2.0,
    "comment": 2.0,
    "share": 3.0,
    "follow": 3.0,
    "purchase": 4.0,
    "impression": 0.0,
}


def window_bounds(date: dt.date, window_days: int) -> tuple[dt.date | None, dt.date]:
    """First and last day (inclusive) of the window ending at `date`; first is None for all history.

    Parameters
    ----------
    date : datetime.date
        Last day of the window.
    window_days : int
        Days in the window, >= 0; 0 means all history up to `date`.

    Returns
    -------
    tuple of (datetime.date or None, datetime.date)
        `(first, last)`, both inclusive.
    """
    if window_days < 0:
        raise ValueError(f"window_days must be >= 0, got {window_days}")
    first = date - dt.timedelta(days=window_days - 1) if window_days > 0 else None
    return first, date


def clicks_in_window(events: DataFrame, day: dt.date, days: int) -> DataFrame:
    """The `click` events of the `days` days ending at `day` (both inclusive): what popularity counts.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date
        Last day (inclusive).
    days : int
        Window length, >= 1.

    Returns
    -------
    DataFrame
        The `events` rows that are clicks on those days, same columns.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    first, last = window_bounds(day, days)
    return events.filter(
        (F.col("dt") >= F.lit(first)) & (F.col("dt") <= F.lit(last)) & (F.col("event") == F.lit("click"))
    )


def event_weight(weights: Mapping[str, float] | None = None) -> Column:
    """The weight of each row's `event` (0.0 for a type not in `weights`), as a Spark column.

    Parameters
    ----------
    weights : Mapping[str, float], optional
        Weight per event type; default `DEFAULT_WEIGHTS` (impression 0).

    Returns
    -------
    Column
        A double column over `event`.
    """
    weight = F.lit(0.0)
    for event, value in dict(DEFAULT_WEIGHTS if weights is None else weights).items():
        weight = F.when(F.col("event") == event, F.lit(float(value))).otherwise(weight)
    return weight


def interest_weights(
    events: DataFrame, date: dt.date, window_days: int = 0, weights: Mapping[str, float] | None = None
) -> DataFrame:
    """`(user_id, item_id, r, last_ts)`: `r_ui` = Σ event weights of u's events on i in the window.

    The window is the `window_days` days ending at `date` inclusive (0 = all history up to `date`),
    selected on the `dt` partition column so Delta/Parquet readers prune files. Only `r > 0` rows are
    returned (`I_u`, `U_i` are defined on them). `last_ts` is u's latest event on i with a positive
    weight: an impression is exposure, not interest, so it does not make a user "recent".

    Parameters
    ----------
    events : DataFrame
        The `events` table (`user_id, item_id, event, ts, dt`, ...).
    date : datetime.date
        Last day of the window.
    window_days : int
        Days in the window; 0 = all history up to `date`.
    weights : Mapping[str, float], optional
        Weight per event type; default `DEFAULT_WEIGHTS` (impression 0).

    Returns
    -------
    DataFrame
        `(user_id, item_id, r: double, last_ts: timestamp)` with `r > 0`.
    """
    first, last = window_bounds(date, window_days)
    in_window = F.col("dt") <= F.lit(last)
    if first is not None:
        in_window &= F.col("dt") >= F.lit(first)
    return (
        events.filter(in_window)
        .select("user_id", "item_id", "ts", event_weight(weights).alias("w"))
        .filter(F.col("w") != 0)  # impressions are most of the volume: drop them before the shuffle
        .groupBy("user_id", "item_id")
        .agg(F.sum("w").alias("r"), F.max(F.when(F.col("w") > 0, F.col("ts"))).alias("last_ts"))
        .filter(F.col("r") > 0)
    )
