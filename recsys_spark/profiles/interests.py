"""Interest profiles: per user, how much of their recent interest goes to each category, author and tag.

For day D, every event e of user u on item i in the `window_days` days ending at D counts

    w(e) = event_weight(e) · 0.5^(a(e) / half_life_days),   a(e) = (end of D − ts(e)) in days,

"end of D" being midnight UTC after D (an event in the last second of D has age ≈ 0, one at the first
second of D age ≈ 1). The event weights are DESIGN's (`events.DEFAULT_WEIGHTS`, impression 0), so
exposure without interest adds nothing. Item interest `d_ui = Σ_e w(e)`; then per kind

    category:  s(u, c) = Σ_{i: category(i) = c} d_ui
    author:    s(u, a) = Σ_{i: author_id(i) = a} d_ui
    tag:       s(u, t) = Σ_{i: t ∈ tags(i)} d_ui · idf(t),   idf(t) = ln(N / (1 + df(t)))

with N the number of items in the catalogue (`items`) and df(t) the number of items carrying tag t
(a tag repeated on one item counts once). A tag with idf(t) ≤ 0 (carried by at least N − 1 items) says
nothing about anyone's taste and is dropped. The weight is the L1 share within the user's kind,
`weight = s / Σ_kind s` over the keys kept (the `max_keys` strongest, ties by key), so each
(user, kind) sums to 1. Items missing from `items`, and null categories and authors, contribute nothing.

References
----------
G. Salton, C. Buckley. "Term-weighting approaches in automatic text retrieval." Information
Processing & Management 24(5), 513–523, 1988 (tf·idf term weighting; here the "term frequency" of a
tag is the user's decayed interest in the items carrying it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.config import option
from recsys_spark.errors import UsageError
from recsys_spark.events import event_weight

KINDS = ("category", "author", "tag")
PROFILE_COLUMNS = ("user_id", "kind", "key", "score", "weight", "rank", "dt")


@dataclass
class ProfileParams:
    """The profile formula's parameters (docs/profiles.md).

    Parameters
    ----------
    half_life_days : float
        An event of age a days weighs event_weight · 0.5^(a / half_life_days).
    window_days : int
        Days of events ending at the day (inclusive) that count.
    max_keys : int
        Keys kept per (user, kind), strongest first; 0 keeps all.
    """

    half_life_days: float = option(
        14.0,
        "An event of age a days (from the end of --date) weighs event_weight * 0.5^(a / half_life_days).",
        exclusive_minimum=0,
    )
    window_days: int = option(60, "Days of events ending at --date (inclusive) that count.", minimum=1)
    max_keys: int = option(
        50,
        "Keys kept per user and kind (strongest first, ties by key); weights sum to 1 over them. 0 = all.",
        minimum=0,
    )


def validate_params(params: ProfileParams) -> None:
    """Refuse parameters the formula cannot use, naming the option.

    Parameters
    ----------
    params : ProfileParams
        The parameters to check.

    Returns
    -------
    None
        Raises `UsageError` on a bad value.
    """
    if not params.half_life_days > 0:
        raise UsageError(f"--half-life-days must be > 0, got {params.half_life_days}")
    if params.window_days < 1:
        raise UsageError(f"--window-days must be >= 1, got {params.window_days}")
    if params.max_keys < 0:
        raise UsageError(f"--max-keys must be >= 0, got {params.max_keys}")


def end_of_day_seconds(day: dt.date) -> int:
    """Seconds since the Unix epoch of midnight UTC after `day`: the point event ages are measured from.

    Parameters
    ----------
    day : datetime.date
        The profile's day D.

    Returns
    -------
    int
        Epoch seconds of D + 1 at 00:00 UTC.
    """
    return ((day + dt.timedelta(days=1)) - dt.date(1970, 1, 1)).days * 86400


def decayed_interests(events: DataFrame, day: dt.date, params: ProfileParams) -> DataFrame:
    """`(user_id, item_id, d)`: time-decayed interest d_ui of each user in each item, d > 0.

    Parameters
    ----------
    events : DataFrame
        The `events` table (`user_id, item_id, event, ts, dt`, ...).
    day : datetime.date
        Last day of the window; ages are measured from its end (midnight UTC after it).
    params : ProfileParams
        Half-life and window.

    Returns
    -------
    DataFrame
        `(user_id, item_id, d: double)`, one row per pair with a positive decayed interest.
    """
    first = day - dt.timedelta(days=params.window_days - 1)
    end_us = F.lit(end_of_day_seconds(day) * 1_000_000)
    # Microseconds, not seconds: two events a fraction of a second apart decay differently, as the
    # formula says. unix_micros reads the instant, so the session time zone plays no part.
    age_days = (end_us - F.unix_micros("ts")).cast("double") / F.lit(86_400_000_000.0)
    decay = F.pow(F.lit(0.5), age_days / F.lit(float(params.half_life_days)))
    return (
        events.filter((F.col("dt") >= F.lit(first)) & (F.col("dt") <= F.lit(day)))
        .select("user_id", "item_id", "ts", event_weight().alias("w"))
        .filter(F.col("w") != 0)  # impressions, most of the volume, weigh 0: drop them before the shuffle
        .groupBy("user_id", "item_id")
        .agg(F.sum(F.col("w") * decay).alias("d"))
        .filter(F.col("d") > 0)
    )


def tag_idf(items: DataFrame) -> DataFrame:
    """`(tag, idf)`: idf(t) = ln(N / (1 + df(t))) over the catalogue, only tags with idf > 0.

    Parameters
    ----------
    items : DataFrame
        The `items` table (`item_id`, `tags`, ...).

    Returns
    -------
    DataFrame
        `(tag: string, idf: double)`, one row per tag carried by fewer than N − 1 items.
    """
    catalogue = items.select("item_id", "tags").dropDuplicates(["item_id"])
    n_items = catalogue.agg(F.count("*").cast("double").alias("_n"))  # one row, broadcast below
    df = (
        catalogue.select("item_id", F.explode(F.array_distinct("tags")).alias("tag"))
        .filter(F.col("tag").isNotNull())
        .groupBy("tag")
        .agg(F.countDistinct("item_id").alias("_df"))
    )
    return (
        df.crossJoin(F.broadcast(n_items))
        .select("tag", F.log(F.col("_n") / (F.col("_df") + F.lit(1.0))).alias("idf"))
        .filter(F.col("idf") > 0)
    )


def user_profiles(events: DataFrame, items: DataFrame, day: dt.date, params: ProfileParams) -> DataFrame:
    """The `user_profiles` rows of `day`: per user and kind, the score and L1 weight of each key.

    Parameters
    ----------
    events : DataFrame
        The `events` table; only the window ending at `day` is read.
    items : DataFrame
        The `items` table (`item_id, category, author_id, tags`).
    day : datetime.date
        The profile's day D.
    params : ProfileParams
        Half-life, window and keys kept.

    Returns
    -------
    DataFrame
        `(user_id, kind, key, score: double, weight: double, rank: int, dt: date)`: kind one of
        category, author, tag; score = s(u, key) of the module docstring; weight = score / Σ score
        over the (user, kind)'s kept keys; rank 1 = strongest (ties by key).
    """
    validate_params(params)
    interests = decayed_interests(events, day, params)
    catalogue = items.select("item_id", "category", "author_id", "tags").dropDuplicates(["item_id"])
    joined = interests.join(catalogue, "item_id")  # items outside the catalogue carry no category/tags

    def per_key(kind: str, key) -> DataFrame:
        return (
            joined.select("user_id", key.alias("key"), "d")
            .filter(F.col("key").isNotNull())
            .groupBy("user_id", "key")
            .agg(F.sum("d").alias("score"))
            .withColumn("kind", F.lit(kind))
        )

    categories = per_key("category", F.col("category"))
    authors = per_key("author", F.col("author_id"))
    tags = (
        joined.select("user_id", F.explode(F.array_distinct("tags")).alias("tag"), "d")
        .filter(F.col("tag").isNotNull())
        .groupBy("user_id", "tag")
        .agg(F.sum("d").alias("tf"))
        .join(tag_idf(items), "tag")
        .select("user_id", F.col("tag").alias("key"), (F.col("tf") * F.col("idf")).alias("score"))
        .withColumn("kind", F.lit("tag"))
    )
    scored = categories.unionByName(authors).unionByName(tags).filter(F.col("score") > 0)

    # One window per (user, kind): its size is that user's number of keys of the kind, never the table.
    by_user_kind = Window.partitionBy("user_id", "kind")
    ranked = scored.withColumn(
        "rank", F.row_number().over(by_user_kind.orderBy(F.col("score").desc(), F.col("key")))
    )
    if params.max_keys > 0:
        ranked = ranked.filter(F.col("rank") <= params.max_keys)
    return ranked.select(
        "user_id",
        "kind",
        "key",
        "score",
        (F.col("score") / F.sum("score").over(by_user_kind)).alias("weight"),
        F.col("rank").cast("int").alias("rank"),
        F.lit(day).alias("dt"),
    )
