"""Leak-free features for a sample day D: everything here uses data strictly before D.

User and item features come from `user_stats` / `item_stats` of day D-1 (windows ending D-1) and the
profiles; the behaviour sequence is the user's last-N clicked items before D. A sample of day D
therefore sees exactly what a model serving on day D could have known, which is what the tests check
by rewriting day D's events and asserting that no feature moves.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

# Dense inputs, in this order, of `user_dense` / `item_dense` (documented in docs/samples.md). Every
# value is a log count, a smoothed rate or a fraction, so they need no further scaling. `is_new` is 1
# for an id with no statistics row on D-1 (its other values are then 0).
USER_DENSE: tuple[str, ...] = (
    "log1p_impression_7d",
    "log1p_click_7d",
    "ctr_7d",
    "log1p_impression_30d",
    "log1p_click_30d",
    "ctr_30d",
    "like_rate_30d",
    "active_days_7d/7",
    "active_days_30d/30",
    "is_new",
)
ITEM_DENSE: tuple[str, ...] = (
    "log1p_impression_7d",
    "log1p_click_7d",
    "ctr_7d",
    "log1p_click_30d",
    "ctr_30d",
    "like_rate_30d",
    "share_rate_30d",
    "log1p_age_days",
    "is_new",
)
# Dense inputs of the (user, item) pair (`pair_dense`, docs/samples.md): how much of the user's
# interest profile of D-1 (`user_profiles`, L1 weights per kind) the item matches, each in [0, 1] and
# all 0 for a user without a profile or an item without a catalogue row; then how often the pair was
# shown and clicked in the PAIR_EXPOSURE_DAYS days before D (a day's label is "any click on D", so
# how often D will show the pair matters, and its past exposure is the best estimate a model serving
# on D has). New inputs are only ever appended: a ranker trained with fewer reads the prefix it knows.
PAIR_DENSE: tuple[str, ...] = (
    "profile_category_weight",
    "profile_author_weight",
    "profile_tag_weight_sum",
    "log1p_pair_impression_7d",
    "log1p_pair_click_7d",
)
PAIR_EXPOSURE_DAYS = 7


def _dense(names: tuple[str, ...], present: Column, extra: dict[str, Column] | None = None) -> Column:
    values = []
    for name in names:
        if name == "is_new":
            value = F.when(present, F.lit(0.0)).otherwise(F.lit(1.0))
        elif extra and name in extra:
            value = extra[name]
        elif "/" in name:
            column, divisor = name.split("/")
            value = F.col(column) / float(divisor)
        else:
            value = F.col(name)
        values.append(F.coalesce(value.cast("double"), F.lit(0.0)).cast("float"))
    return F.array(*values)


def new_id_dense(names: tuple[str, ...]) -> Column:
    """The dense vector of an id with neither a profile row nor statistics: zeros with `is_new` = 1.

    Parameters
    ----------
    names : tuple of str
        Names of the dense features, in vector order.

    Returns
    -------
    Column
        array<float> of `len(names)`: 1.0 at `is_new`, 0.0 elsewhere.
    """
    return F.array(*[F.lit(1.0 if name == "is_new" else 0.0).cast("float") for name in names])


def features_day(day: dt.date) -> dt.date:
    """The statistics day a sample of `day` may use.

    Parameters
    ----------
    day : datetime.date
        The sample's day.

    Returns
    -------
    datetime.date
        The day before (statistics of `day` itself would leak the labels).
    """
    return day - dt.timedelta(days=1)


def user_features(users: DataFrame, user_stats: DataFrame, day: dt.date) -> DataFrame:
    """`(user_id, gender, age_bucket, region, user_dense)` for every user seen in the profile or the stats.

    Parameters
    ----------
    users : DataFrame
        The `users` table.
    user_stats : DataFrame
        The `user_stats` table.
    day : datetime.date
        The sample's day; statistics of `features_day(day)` are used.

    Returns
    -------
    DataFrame
        `(user_id, gender, age_bucket, region, user_dense: array<float>)`.
    """
    stats = user_stats.filter(F.col("dt") == F.lit(features_day(day))).withColumn("_present", F.lit(True))
    profile = users.select("user_id", "gender", "age_bucket", "region")
    joined = profile.join(stats, "user_id", "full_outer")
    return joined.select(
        "user_id",
        "gender",
        "age_bucket",
        "region",
        _dense(USER_DENSE, F.col("_present").isNotNull()).alias("user_dense"),
    )


def item_features(items: DataFrame, item_stats: DataFrame, day: dt.date) -> DataFrame:
    """`(item_id, category, author_id, item_dense)`; item age is measured at the start of `day`.

    Parameters
    ----------
    items : DataFrame
        The `items` table.
    item_stats : DataFrame
        The `item_stats` table.
    day : datetime.date
        The sample's day; statistics of `features_day(day)` are used.

    Returns
    -------
    DataFrame
        `(item_id, category, author_id, item_dense: array<float>)`.
    """
    stats = item_stats.filter(F.col("dt") == F.lit(features_day(day))).withColumn("_present", F.lit(True))
    profile = items.select("item_id", "category", "author_id", "created_ts")
    joined = profile.join(stats, "item_id", "full_outer")
    start = F.lit(dt.datetime.combine(day, dt.time())).cast("timestamp")
    age_days = (F.unix_timestamp(start) - F.unix_timestamp("created_ts")) / 86400.0
    # An item created later on day D gets age 0, not a negative number that would reveal how much later.
    log_age = F.log1p(F.greatest(age_days, F.lit(0.0)))
    return joined.select(
        "item_id",
        "category",
        "author_id",
        _dense(ITEM_DENSE, F.col("_present").isNotNull(), {"log1p_age_days": log_age}).alias("item_dense"),
    )


def last_n_clicks(events: DataFrame, day: dt.date, n: int, lookback_days: int) -> DataFrame:
    """`(user_id, hist)`: the user's last `n` distinct clicked items before `day`, most recent first.

    Only the `lookback_days` days before `day` are scanned (partition-pruned on `dt`); an item clicked
    several times counts once, at its latest click.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date
        Clicks strictly before this day count.
    n : int
        History length.
    lookback_days : int
        Days before `day` scanned.

    Returns
    -------
    DataFrame
        `(user_id, hist: array<string>)`, at most `n` item ids, most recent first.
    """
    first = day - dt.timedelta(days=lookback_days)
    clicks = (
        events.filter((F.col("dt") < F.lit(day)) & (F.col("dt") >= F.lit(first)))
        .filter(F.col("event") == "click")
        .groupBy("user_id", "item_id")
        .agg(F.max("ts").alias("ts"))
    )
    recent = Window.partitionBy("user_id").orderBy(F.desc("ts"), "item_id")
    top = clicks.withColumn("_r", F.row_number().over(recent)).filter(F.col("_r") <= n)
    return top.groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("_r", "item_id"))), lambda s: s["item_id"]).alias(
            "hist"
        )
    )


def pair_exposure(
    pairs: DataFrame, events: DataFrame, day: dt.date, days: int = PAIR_EXPOSURE_DAYS
) -> DataFrame:
    """`(user_id, item_id, exposure)`: how often the pair was shown and clicked in the days before `day`.

    exposure(u, i) = [log1p(#impressions), log1p(#clicks)] of u on i over the `days` days before
    `day` (dt in [day − days, day − 1], partition-pruned); [0, 0] for a pair never shown.

    Parameters
    ----------
    pairs : DataFrame
        `(user_id, item_id, ...)`; each distinct pair gets one row.
    events : DataFrame
        The `events` table.
    day : datetime.date
        The sample day D; only events strictly before it count.
    days : int
        Days looked back.

    Returns
    -------
    DataFrame
        `(user_id, item_id, exposure: array<float>)`, one row per distinct pair of `pairs`.
    """
    keys = pairs.select("user_id", "item_id").distinct()
    first = day - dt.timedelta(days=days)
    shown = events.filter((F.col("dt") < F.lit(day)) & (F.col("dt") >= F.lit(first))).filter(
        F.col("event").isin("impression", "click")
    )
    # Only the wanted pairs are counted: the semi-join and the count share one shuffle on the pair.
    counts = (
        shown.join(keys, ["user_id", "item_id"], "left_semi")
        .groupBy("user_id", "item_id")
        .agg(
            F.count(F.when(F.col("event") == "impression", 1)).alias("_imp"),
            F.count(F.when(F.col("event") == "click", 1)).alias("_clk"),
        )
    )
    return keys.join(counts, ["user_id", "item_id"], "left").select(
        "user_id",
        "item_id",
        F.array(
            *[F.log1p(F.coalesce(F.col(c), F.lit(0)).cast("double")).cast("float") for c in ("_imp", "_clk")]
        ).alias("exposure"),
    )


def profile_match(pairs: DataFrame, profiles: DataFrame, items: DataFrame) -> DataFrame:
    """`(user_id, item_id, pair_dense)`: the weights of the item's category, author and tags in the user's profile.

    For a pair (u, i), with w(u, kind, key) the `user_profiles` weight (0 when the key is not in u's
    profile): `[w(u, category, category(i)), w(u, author, author_id(i)), Σ_{t ∈ distinct tags(i)}
    w(u, tag, t)]`. Tag weights of one user sum to 1, so the sum lies in [0, 1] like the other two.

    Parameters
    ----------
    pairs : DataFrame
        `(user_id, item_id, ...)`; each distinct pair gets one row.
    profiles : DataFrame
        `user_profiles` rows of one day: `(user_id, kind, key, weight, ...)`.
    items : DataFrame
        The `items` table (`item_id, category, author_id, tags`).

    Returns
    -------
    DataFrame
        `(user_id, item_id, pair_dense: array<float>)`: the first three values of `PAIR_DENSE`,
        one row per distinct pair of `pairs` (zeros when nothing matches).
    """
    keys = pairs.select("user_id", "item_id").distinct()
    catalogue = items.select("item_id", "category", "author_id", "tags").dropDuplicates(["item_id"])
    with_item = keys.join(catalogue, "item_id")
    wanted = (
        with_item.select(
            "user_id", "item_id", F.lit("category").alias("kind"), F.col("category").alias("key")
        )
        .unionByName(
            with_item.select(
                "user_id", "item_id", F.lit("author").alias("kind"), F.col("author_id").alias("key")
            )
        )
        .unionByName(
            with_item.select(
                "user_id",
                "item_id",
                F.lit("tag").alias("kind"),
                F.explode(F.array_distinct(F.coalesce("tags", F.array().cast("array<string>")))).alias("key"),
            )
        )
        .filter(F.col("key").isNotNull())
    )
    weights = profiles.select("user_id", "kind", "key", F.col("weight").cast("double"))
    matched = (
        wanted.join(weights, ["user_id", "kind", "key"])
        .groupBy("user_id", "item_id")
        .agg(
            *[
                F.sum(F.when(F.col("kind") == kind, F.col("weight"))).alias(kind)
                for kind in ("category", "author", "tag")
            ]
        )
    )
    return keys.join(matched, ["user_id", "item_id"], "left").select(
        "user_id",
        "item_id",
        F.array(
            *[F.coalesce(F.col(k), F.lit(0.0)).cast("float") for k in ("category", "author", "tag")]
        ).alias("pair_dense"),
    )
