"""Ranking samples: one row per (user, item) shown in the period, one 0/1 label per task.

A pair counts as shown when it has an impression or any engagement (an engagement implies the item
was on screen; logs such as Taobao's have no impressions at all). `label_<event>` is 1 when the user
did `<event>` on the item in the period.

A log without impressions (MovieLens ratings: every row is an engagement) would give the ranker
positives only. For a period with no impression at all, `sampled_rank_negatives` adds items the user
had no event on in the period, drawn like the recall easy negatives (∝ clicks^power over the
catalogue, hash-seeded), as all-zero-label rows with `impressions = 0`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.samples.recall import easy_negatives, engaged_or_shown, positives

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


def sampled_rank_negatives(
    period_events: DataFrame, item_clicks: DataFrame, per_pair: int, power: float, seed: int
) -> DataFrame:
    """Negatives of a period without impressions: unengaged items, rows shaped like `rank_examples`.

    Per engaged pair (interest weight > 0) `per_pair` items are drawn ∝ clicks^power (the recall easy
    negatives' distribution, a different seed stream); an item the user had any event on in the
    period is dropped, and a pair drawn twice is kept once. Each row gets every label 0,
    `impressions = 0` and the user's first event time of the period as `ts` (so it lies on the day).

    Parameters
    ----------
    period_events : DataFrame
        The events of the sample period.
    item_clicks : DataFrame
        `(item_id, clicks)` with clicks > 0 (30-day clicks of the statistics day).
    per_pair : int
        Draws per engaged pair; <= 0 gives none.
    power : float
        Exponent of the click count.
    seed : int
        Seed of the hash uniforms (offset from the recall negatives' seed).

    Returns
    -------
    DataFrame
        `(user_id, item_id, impressions, ts, label_<event>...)` like `rank_examples`, labels 0.
    """
    pos = positives(period_events)
    drawn = easy_negatives(pos, item_clicks, engaged_or_shown(period_events), per_pair, power, seed + 7919)
    first = period_events.groupBy("user_id").agg(F.min("ts").alias("ts"))
    return (
        drawn.distinct()
        .join(first, "user_id")
        .select(
            "user_id",
            "item_id",
            F.lit(0).cast("int").alias("impressions"),
            "ts",
            *[F.lit(0).cast("int").alias(f"label_{e}") for e in TASK_EVENTS],
        )
    )
