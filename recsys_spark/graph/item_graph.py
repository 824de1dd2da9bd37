"""`item_graph` from behaviour sequences.

Definition (DESIGN.md): within a session (given `session_id`, else a gap of more than
`session_gap_minutes` starts a new one), each pair of consecutive positive interactions (event weight
> 0, ordered by `ts`) adds weight 1 to the directed edge `prev -> next`; self-loops are dropped.

Ties in `ts` are ordered by `item_id`, then `event`, so the graph does not depend on how Spark
happens to order equal timestamps. `max_user_events` caps what one over-active user (a bot, a
crawler) contributes: only their latest `max_user_events` positive events in the window count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.events import DEFAULT_WEIGHTS, window_bounds


def positive_events(
    events: DataFrame, date: dt.date, window_days: int = 0, weights: Mapping[str, float] | None = None
) -> DataFrame:
    """Events with a positive weight in the window ending at `date` (0 = all history up to `date`).

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    date : datetime.date
        Last day of the window.
    window_days : int
        Days in the window; 0 = all history up to `date`.
    weights : Mapping[str, float], optional
        Weight per event type; default the DESIGN weights (impression 0).

    Returns
    -------
    DataFrame
        `(user_id, item_id, event, ts, session_id)`.
    """
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    positive = sorted(e for e, w in weights.items() if w > 0)
    first, last = window_bounds(date, window_days)
    keep = (F.col("dt") <= F.lit(last)) & F.col("event").isin(positive)
    if first is not None:
        keep &= F.col("dt") >= F.lit(first)
    return events.filter(keep).select("user_id", "item_id", "event", "ts", "session_id")


def sessionize(events: DataFrame, session_gap_minutes: float = 30.0) -> DataFrame:
    """Adds `session`: the given `session_id`, or for events without one, a per-user session that a
    silence of more than `session_gap_minutes` ends. The two kinds never mix in one session.

    Parameters
    ----------
    events : DataFrame
        Events with `user_id`, `ts`, `session_id` (nullable).
    session_gap_minutes : float
        Silence that ends an inferred session.

    Returns
    -------
    DataFrame
        The input columns plus `session: string`.
    """
    order = Window.partitionBy("user_id", F.col("session_id").isNull()).orderBy("ts", "item_id", "event")
    gap = F.col("ts").cast("double") - F.lag(F.col("ts").cast("double")).over(order)
    new_session = F.when(gap.isNull() | (gap > session_gap_minutes * 60.0), 1).otherwise(0)
    inferred = F.concat(
        F.lit("~gap-"), F.sum(new_session).over(order.rowsBetween(Window.unboundedPreceding, 0))
    )
    return events.withColumn(
        "session",
        F.when(F.col("session_id").isNotNull(), F.concat(F.lit("s-"), "session_id")).otherwise(inferred),
    )


def cap_user_events(events: DataFrame, max_user_events: int) -> DataFrame:
    """Keep each user's latest `max_user_events` positive events (0 = no cap).

    Parameters
    ----------
    events : DataFrame
        Positive events (`user_id`, `item_id`, `event`, `ts`, ...).
    max_user_events : int
        Events kept per user; 0 keeps all.

    Returns
    -------
    DataFrame
        The kept rows, same columns.
    """
    if max_user_events <= 0:
        return events
    latest_first = Window.partitionBy("user_id").orderBy(F.desc("ts"), F.desc("item_id"), F.desc("event"))
    return (
        events.withColumn("_n", F.row_number().over(latest_first))
        .filter(F.col("_n") <= max_user_events)
        .drop("_n")
    )


def item_graph(
    events: DataFrame,
    date: dt.date,
    window_days: int = 0,
    session_gap_minutes: float = 30.0,
    max_user_events: int = 0,
    weights: Mapping[str, float] | None = None,
) -> DataFrame:
    """`(src_item, dst_item, weight)` edges of the item graph for the window ending at `date`.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    date : datetime.date
        Last day of the window.
    window_days : int
        Days in the window; 0 = all history up to `date`.
    session_gap_minutes : float
        Silence that ends a session without `session_id`.
    max_user_events : int
        Latest positive events kept per user (0 = no cap).
    weights : Mapping[str, float], optional
        Weight per event type; default the DESIGN weights (impression 0).

    Returns
    -------
    DataFrame
        `(src_item: string, dst_item: string, weight: double)`, weight = number of transitions.
    """
    positive = cap_user_events(positive_events(events, date, window_days, weights), max_user_events)
    sessions = sessionize(positive, session_gap_minutes)
    order = Window.partitionBy("user_id", "session").orderBy("ts", "item_id", "event")
    transitions = sessions.select(
        F.lag("item_id").over(order).alias("src_item"), F.col("item_id").alias("dst_item")
    ).filter(F.col("src_item").isNotNull() & (F.col("src_item") != F.col("dst_item")))
    return transitions.groupBy("src_item", "dst_item").agg(F.count(F.lit(1)).cast("double").alias("weight"))
