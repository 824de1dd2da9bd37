"""Ranking samples: one row per (user, item) shown in the period, one 0/1 label per task.

A pair counts as shown when it has an impression or any engagement (an engagement implies the item
was on screen; logs such as Taobao's have no impressions at all). `label_<event>` is 1 when the user
did `<event>` on the item in the period.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

TASK_EVENTS: tuple[str, ...] = ("click", "like", "share", "comment", "follow", "purchase")


def rank_examples(period_events: DataFrame) -> DataFrame:
    """`(user_id, item_id, impressions, ts, label_click, label_like, ...)` for the shown pairs.

    Parameters
    ----------
    period_events : DataFrame
        The events of the sample period.

    Returns
    -------
    DataFrame
        One row per shown (user, item) pair: `impressions: int`, first `ts`, one 0/1 `label_<event>`
        per event of `TASK_EVENTS`.
    """
    labels = [
        F.max(F.when(F.col("event") == e, 1).otherwise(0)).cast("int").alias(f"label_{e}")
        for e in TASK_EVENTS
    ]
    return period_events.groupBy("user_id", "item_id").agg(
        F.count(F.when(F.col("event") == "impression", 1)).cast("int").alias("impressions"),
        F.min("ts").alias("ts"),
        *labels,
    )
