"""Cohort popularity: what the users of the same region and age bucket click (user cold start).

A user with no history has no neighbours, no vector and no profile; their `users` row still names a
region and an age bucket. The cohort channel lists, for every user, the items most clicked in the
`days` ending at D by the users of their cohort:

    cohort(u) = region(u) | age_bucket(u),   score(u, j) = #clicks on j by users v with cohort(v) = cohort(u),

ranked by score (ties by item_id), the user's excluded pairs removed before the cut.

References
----------
X. N. Lam, T. Vu, T. D. Le, A. D. Duong. "Addressing cold-start problem in recommendation systems."
ICUIMC 2008 (demographic segments as the prior of a user without ratings).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.candidates.lists import check_k, rank_top_k
from recsys_spark.events import clicks_in_window


def user_cohorts(users: DataFrame) -> DataFrame:
    """`(user_id, cohort)`: the user's region and age bucket, "region|age_bucket" (null if either is).

    Parameters
    ----------
    users : DataFrame
        The `users` table (`user_id`, `region`, `age_bucket`).

    Returns
    -------
    DataFrame
        `(user_id, cohort string)`, shape (users, 2).
    """
    cohort = F.when(
        F.col("region").isNotNull() & F.col("age_bucket").isNotNull(),
        F.concat_ws("|", F.col("region").cast("string"), F.col("age_bucket").cast("string")),
    )
    return users.select("user_id", cohort.alias("cohort")).dropDuplicates(["user_id"])


def cohort_click_counts(events: DataFrame, cohorts: DataFrame, day: dt.date, days: int) -> DataFrame:
    """`(cohort, item_id, count)`: clicks in the `days` days ending at `day` by the users of each cohort.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    cohorts : DataFrame
        `(user_id, cohort)` (`user_cohorts`); users without a cohort are not counted.
    day : datetime.date
        Last day counted (inclusive).
    days : int
        Window length, >= 1.

    Returns
    -------
    DataFrame
        `(cohort, item_id, count long)`, shape (cohorts × items clicked, 3).
    """
    return (
        clicks_in_window(events, day, days)
        .select("user_id", "item_id")
        .join(cohorts.filter(F.col("cohort").isNotNull()), "user_id")
        .groupBy("cohort", "item_id")
        .agg(F.count(F.lit(1)).alias("count"))
    )


def cohort_candidates(
    users: DataFrame, cohort_counts: DataFrame, k: int, exclude: DataFrame | None = None
) -> DataFrame:
    """The top-k of each user's cohort: popularity within a segment of users (user cold start).

    `users (user_id, cohort)`: the cohort of each user (e.g. region and age bucket; users whose cohort
    is null get no rows). `cohort_counts (cohort, item_id, count)`: the items' counts among the cohort's
    users. score(u, j) = count(cohort(u), j), only count > 0, highest first, ties by item_id.

    Cohorts are few (regions × age buckets), so each cohort's top is cut first, at 2k (room for the
    `exclude`d pairs, removed before the per-user cut), and broadcast-joined to its users: the cost is
    |counts| + |users| · 2k, never |users| · |items|. A user who excluded more than k of their cohort's
    2k best items gets fewer than k rows.

    Parameters
    ----------
    users : DataFrame
        `(user_id, cohort string)`, one row per user.
    cohort_counts : DataFrame
        `(cohort, item_id, count)`, one row per (cohort, item).
    k : int
        List length, >= 1.
    exclude : DataFrame, optional
        `(user_id, item_id)` pairs never listed.

    Returns
    -------
    DataFrame
        `(user_id, item_id, score double, rank int)`, at most k rows per user.

    References
    ----------
    X. N. Lam, T. Vu, T. D. Le, A. D. Duong. "Addressing cold-start problem in recommendation systems."
    ICUIMC 2008 (demographic segments as the prior of a user without ratings).
    """
    k = check_k(k)
    best = Window.partitionBy("cohort").orderBy(F.col("score").desc(), F.col("item_id").asc())
    top = (
        cohort_counts.filter(F.col("count") > 0)
        .select("cohort", "item_id", F.col("count").cast("double").alias("score"))
        .withColumn("_r", F.row_number().over(best))
        .filter(F.col("_r") <= 2 * k)
        .drop("_r")
    )
    scored = users.filter(F.col("cohort").isNotNull()).join(F.broadcast(top), "cohort")
    return rank_top_k(scored.select("user_id", "item_id", "score"), k, exclude)
