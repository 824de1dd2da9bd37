"""The incremental state the stream refreshes after each micro-batch: per-day counters and co-occurrence.

Both are pure functions of `events` for the days a micro-batch touched, and the stream replaces
exactly those `dt` partitions with them. That makes them exactly-once for free: a batch replayed after
a crash recomputes the same rows from the same events, and the tables always equal a batch
recomputation (`stats.daily_counts_for`, `graph.item_graph`) over the events committed so far, even
when `recsys-spark ingest` adds events of the same day. The cost is one scan of the touched days'
events per micro-batch (partition-pruned; usually today only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.graph.item_graph import item_graph
from recsys_spark.stats import daily_counts_for

STREAM_COUNTERS = "stream_counters"
STREAM_COOCCURRENCE = "stream_cooccurrence"


def _union(frames: list[DataFrame]) -> DataFrame:
    return reduce(DataFrame.unionByName, frames)


def counters_for_days(events: DataFrame, days: Iterable[dt.date], updated_at: dt.datetime) -> DataFrame:
    """`stream_counters` rows of `days`: the `daily_counts` row of every user and item active that day.

    One `daily_counts_for` per day: each filter prunes to one `dt` partition, so the union reads every
    day once, and the definitions stay those of `recsys-spark stats` (docs/stats.md).

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    days : iterable of datetime.date
        Days a micro-batch touched, at least one.
    updated_at : datetime.datetime
        Stamp written to every row.

    Returns
    -------
    DataFrame
        `daily_counts` columns (with `dt`) plus `updated_at: timestamp`.

    Raises
    ------
    ValueError
        If `days` is empty.
    """
    days = sorted(set(days))
    if not days:
        raise ValueError("counters_for_days needs at least one day")
    counts = _union([daily_counts_for(events, day) for day in days])
    return counts.withColumn("updated_at", F.lit(updated_at).cast("timestamp"))


def cooccurrence_for_days(
    events: DataFrame,
    days: Iterable[dt.date],
    updated_at: dt.datetime,
    session_gap_minutes: float = 30.0,
) -> DataFrame:
    """`stream_cooccurrence` rows of `days`: `item_graph`'s transitions of each day, made symmetric.

    Within one user's session (its `session_id`, else a silence of more than `session_gap_minutes`),
    each pair of consecutive positive interactions a -> b (a != b, ordered by ts, then item_id, then
    event) adds 1 to (a, b) and 1 to (b, a). Only the day's own events count, so a session crossing
    midnight contributes its pairs to the day of both events and not the pair across midnight. No
    per-user cap: a count is what happened, and ItemCF-style consumers normalise it themselves.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    days : iterable of datetime.date
        Days a micro-batch touched, at least one.
    updated_at : datetime.datetime
        Stamp written to every row.
    session_gap_minutes : float
        Silence that ends a session without `session_id`.

    Returns
    -------
    DataFrame
        `(item_id, other_item_id, count: long, dt: date, updated_at: timestamp)`, both directions.

    Raises
    ------
    ValueError
        If `days` is empty.
    """
    days = sorted(set(days))
    if not days:
        raise ValueError("cooccurrence_for_days needs at least one day")
    frames = []
    for day in days:
        edges = item_graph(
            events.filter(F.col("dt") == F.lit(day)),
            day,
            window_days=1,
            session_gap_minutes=session_gap_minutes,
            max_user_events=0,
        )
        both = edges.select(
            F.col("src_item").alias("item_id"), F.col("dst_item").alias("other_item_id"), "weight"
        ).unionByName(
            edges.select(
                F.col("dst_item").alias("item_id"), F.col("src_item").alias("other_item_id"), "weight"
            )
        )
        frames.append(
            both.groupBy("item_id", "other_item_id")
            .agg(F.sum("weight").cast("long").alias("count"))
            .withColumn("dt", F.lit(day))
        )
    return _union(frames).withColumn("updated_at", F.lit(updated_at).cast("timestamp"))


def item_neighbours(cooccurrence: DataFrame, items: Iterable[str], top_k: int = 20) -> DataFrame:
    """The `top_k` most co-occurring items of each of `items`, summed over the days in `cooccurrence`.

    `(item_id, other_item_id, count, rank)`, highest count first, ties by `other_item_id`: what a
    serving layer blends with the daily ItemCF list to give a hot new item neighbours within minutes.

    Parameters
    ----------
    cooccurrence : DataFrame
        `stream_cooccurrence` rows (any days).
    items : iterable of str
        Item ids to look up.
    top_k : int
        Neighbours kept per item.

    Returns
    -------
    DataFrame
        `(item_id, other_item_id, count, rank: int)`, rank 1 = most co-occurring.
    """
    from pyspark.sql import Window

    wanted = sorted(set(items))
    totals = (
        cooccurrence.filter(F.col("item_id").isin(wanted))
        .groupBy("item_id", "other_item_id")
        .agg(F.sum("count").alias("count"))
    )
    order = Window.partitionBy("item_id").orderBy(F.desc("count"), F.asc("other_item_id"))
    ranked = totals.withColumn("rank", F.row_number().over(order))
    return ranked.filter(F.col("rank") <= top_k)
