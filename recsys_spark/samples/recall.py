"""Recall (two-tower) samples: positives, easy negatives ∝ clicks^0.75, hard negatives from a channel.

Rules (DESIGN.md): positives are clicked-or-stronger pairs of the sample period; easy negatives are
drawn from the whole catalogue proportionally to `clicks^power`; hard negatives are items a recall
channel ranks high for the user but the user did not engage with. An item the user was *shown* in
the period is never a recall negative (exposure without a click is a ranking signal), so both
negative kinds drop every item the user had any event on.

Sampling is exact and needs no driver-side table: a draw is a hash-uniform x in [0, total) matched
against each item's slice [lo, hi) of the cumulative weights. To keep that an equi-join, [0, total)
is cut into `buckets` equal buckets and each item is listed in the buckets its slice overlaps, so a
draw joins only the few items of its bucket and keeps the one whose slice holds x.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.events import event_weight

_MASK53 = (1 << 53) - 1


def hash_uniform(seed: int, *keys: Column | str) -> Column:
    """A deterministic uniform [0, 1) per row: the same keys and seed give the same number anywhere.

    Parameters
    ----------
    seed : int
        Seed.
    *keys : Column or str
        Columns hashed with the seed (xxhash64).

    Returns
    -------
    Column
        double in [0, 1), 53 bits of the hash.
    """
    return (F.xxhash64(F.lit(seed), *keys).bitwiseAND(F.lit(_MASK53)).cast("double")) / float(1 << 53)


def positives(period_events: DataFrame) -> DataFrame:
    """`(user_id, item_id, weight)`: pairs with interest weight r > 0 in the period (DESIGN weights).

    Parameters
    ----------
    period_events : DataFrame
        The events of the sample period.

    Returns
    -------
    DataFrame
        `(user_id, item_id, weight: double)`, weight = Σ event weights > 0.
    """
    return (
        period_events.select("user_id", "item_id", event_weight().alias("w"))
        .filter(F.col("w") > 0)
        .groupBy("user_id", "item_id")
        .agg(F.sum("w").alias("weight"))
    )


def engaged_or_shown(period_events: DataFrame) -> DataFrame:
    """`(user_id, item_id)` of every pair with any event in the period: never a recall negative.

    Parameters
    ----------
    period_events : DataFrame
        The events of the sample period.

    Returns
    -------
    DataFrame
        `(user_id, item_id)`.
    """
    return period_events.select("user_id", "item_id").distinct()


def sampling_slices(item_weights: DataFrame, buckets: int) -> tuple[DataFrame, Column]:
    """Per item its slice `[lo, hi)` of the cumulative weights and the buckets the slice overlaps.

    Returns `(item_id, lo, hi, total, bucket)` exploded over buckets. The running sum is one
    catalogue-sized window; `lo` is the previous item's `hi` itself, so slices tile [0, total) exactly.

    Parameters
    ----------
    item_weights : DataFrame
        `(item_id, w)` with w > 0.
    buckets : int
        Equal-width buckets of [0, total) used to join draws to slices.

    Returns
    -------
    tuple of (DataFrame, Column)
        The exploded slices and the bucket expression for a position in [0, total).
    """
    ordered = Window.orderBy("item_id")
    running = Window.orderBy("item_id").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    cum = (
        item_weights.filter(F.col("w") > 0)
        .withColumn("hi", F.sum("w").over(running))
        .withColumn("lo", F.coalesce(F.lag("hi").over(ordered), F.lit(0.0)))
        .withColumn("total", F.max("hi").over(Window.partitionBy()))
    )
    to_bucket = _bucket_of(buckets)
    return (
        cum.withColumn(
            "bucket",
            F.explode(F.sequence(to_bucket(F.col("lo"), "total"), to_bucket(F.col("hi"), "total"))),
        ).select("item_id", "lo", "hi", "total", "bucket"),
        to_bucket,
    )


def _bucket_of(buckets: int):
    def to_bucket(value: Column, total: str) -> Column:
        return F.least(F.floor(value / F.col(total) * buckets), F.lit(buckets - 1)).cast("long")

    return to_bucket


def draw_items(draws: DataFrame, item_weights: DataFrame, buckets: int = 1 << 16) -> DataFrame:
    """Each row of `draws` (which holds a uniform `u` in [0, 1)) gets the `item_id` with P ∝ `w`.

    Parameters
    ----------
    draws : DataFrame
        Any columns plus `u: double` in [0, 1).
    item_weights : DataFrame
        `(item_id, w)` with w > 0.
    buckets : int
        Buckets of the slice join (see `sampling_slices`).

    Returns
    -------
    DataFrame
        The columns of `draws` plus `item_id`.
    """
    slices, to_bucket = sampling_slices(item_weights, buckets)
    total = slices.select("total").limit(1)
    located = draws.crossJoin(F.broadcast(total)).withColumn("x", F.col("u") * F.col("total"))
    located = located.withColumn("bucket", to_bucket(F.col("x"), "total")).drop("total")
    return (
        located.join(slices.drop("total"), "bucket")
        .filter((F.col("lo") <= F.col("x")) & (F.col("x") < F.col("hi")))
        .drop("bucket", "lo", "hi", "x")
    )


def easy_negatives(
    pos: DataFrame,
    item_clicks: DataFrame,
    exclude: DataFrame,
    per_positive: int,
    power: float,
    seed: int,
) -> DataFrame:
    """`(user_id, item_id)`: `per_positive` draws ∝ clicks^power per positive, minus `exclude` pairs.

    A draw that hits an excluded pair (the user engaged with or was shown it) is dropped, not redrawn,
    so the realised ratio is slightly below `per_positive` for heavy users of hot items.

    Parameters
    ----------
    pos : DataFrame
        `(user_id, item_id, weight)` from `positives`.
    item_clicks : DataFrame
        `(item_id, clicks)` with clicks > 0.
    exclude : DataFrame
        `(user_id, item_id)` pairs never to return, from `engaged_or_shown`.
    per_positive : int
        Draws per positive; <= 0 gives none.
    power : float
        Exponent of clicks (0.75 as in word2vec's noise distribution).
    seed : int
        Seed of `hash_uniform`.

    Returns
    -------
    DataFrame
        `(user_id, item_id)`.
    """
    if per_positive <= 0:
        return pos.select("user_id", "item_id").limit(0)
    weights = item_clicks.select("item_id", F.pow(F.col("clicks").cast("double"), power).alias("w"))
    draws = pos.select(
        "user_id",
        F.col("item_id").alias("_pos"),
        F.explode(F.sequence(F.lit(1), F.lit(per_positive))).alias("k"),
    ).withColumn("u", hash_uniform(seed, "user_id", "_pos", "k"))
    drawn = draw_items(draws, weights).select("user_id", "item_id")
    return drawn.join(exclude, ["user_id", "item_id"], "left_anti")


def hard_negatives(
    pos: DataFrame,
    hist: DataFrame,
    sim: DataFrame,
    exclude: DataFrame,
    per_positive: int,
    skip_top: int,
    max_rank: int,
    seed: int,
) -> DataFrame:
    """`(user_id, item_id)`: items an item-to-item channel ranks high for the user, never engaged with.

    The channel's candidates for u are `score(j) = Σ_{i ∈ hist(u)} sim(i, j)` over neighbours of rank
    ≤ `max_rank`; items in the history or in `exclude` are removed; the `skip_top` best remaining are
    skipped too (likely true interests not yet shown: false negatives), and from the rest
    `per_positive × (u's positives)` are picked at random (hash order).

    Parameters
    ----------
    pos : DataFrame
        `(user_id, item_id, weight)` from `positives`.
    hist : DataFrame
        `(user_id, hist: array<string>)` history items per user.
    sim : DataFrame
        Top-K item-item table `(item_id, sim_item_id, score, rank)`.
    exclude : DataFrame
        `(user_id, item_id)` pairs never to return, from `engaged_or_shown`.
    per_positive : int
        Hard negatives per positive; <= 0 gives none.
    skip_top : int
        Best remaining candidates skipped as likely false negatives.
    max_rank : int
        Neighbours of rank <= max_rank used.
    seed : int
        Seed of the random pick.

    Returns
    -------
    DataFrame
        `(user_id, item_id)`.
    """
    if per_positive <= 0:
        return pos.select("user_id", "item_id").limit(0)
    seen = hist.select("user_id", F.explode("hist").alias("item_id"))
    candidates = (
        seen.join(
            sim.filter(F.col("rank") <= max_rank).select(
                "item_id", F.col("sim_item_id").alias("cand"), "score"
            ),
            "item_id",
        )
        .groupBy("user_id", F.col("cand").alias("item_id"))
        .agg(F.sum("score").alias("score"))
        .join(seen, ["user_id", "item_id"], "left_anti")
        .join(exclude, ["user_id", "item_id"], "left_anti")
    )
    best = Window.partitionBy("user_id").orderBy(F.desc("score"), "item_id")
    pool = candidates.withColumn("_r", F.row_number().over(best)).filter(F.col("_r") > skip_top)
    quota = pos.groupBy("user_id").agg((F.count(F.lit(1)) * per_positive).alias("quota"))
    shuffled = Window.partitionBy("user_id").orderBy("_h", "item_id")
    return (
        pool.join(quota, "user_id")
        .withColumn("_h", hash_uniform(seed, "user_id", "item_id"))
        .withColumn("_pick", F.row_number().over(shuffled))
        .filter(F.col("_pick") <= F.col("quota"))
        .select("user_id", "item_id")
    )


def recall_examples(
    period_events: DataFrame,
    hist: DataFrame,
    item_clicks: DataFrame,
    sim: DataFrame | None,
    easy_per_positive: int,
    hard_per_positive: int,
    power: float,
    skip_top: int,
    max_rank: int,
    seed: int,
) -> DataFrame:
    """`(user_id, item_id, label, sample_type, weight)`: positives and both kinds of negatives.

    Parameters
    ----------
    period_events : DataFrame
        The events of the sample period.
    hist : DataFrame
        `(user_id, hist)` history items per user (for hard negatives).
    item_clicks : DataFrame
        `(item_id, clicks)` with clicks > 0 (for easy negatives).
    sim : DataFrame or None
        Item-item channel for hard negatives; None gives no hard negatives.
    easy_per_positive, hard_per_positive, power, skip_top, max_rank, seed
        See `easy_negatives` and `hard_negatives`.

    Returns
    -------
    DataFrame
        `label` 1 (sample_type "positive", weight = interest weight) or 0 ("easy_negative",
        "hard_negative", weight 1.0); one row per (user, item, sample_type).
    """
    pos = positives(period_events).cache()
    exclude = engaged_or_shown(period_events)
    parts = [
        pos.select(
            "user_id", "item_id", F.lit(1).alias("label"), F.lit("positive").alias("sample_type"), "weight"
        )
    ]
    easy = easy_negatives(pos, item_clicks, exclude, easy_per_positive, power, seed)
    parts.append(easy.select("user_id", "item_id", F.lit(0), F.lit("easy_negative"), F.lit(1.0)))
    if sim is not None:
        hard = hard_negatives(pos, hist, sim, exclude, hard_per_positive, skip_top, max_rank, seed + 1)
        parts.append(hard.select("user_id", "item_id", F.lit(0), F.lit("hard_negative"), F.lit(1.0)))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part.toDF(*out.columns))
    # An item can be drawn twice for one user (by two of u's positives, or by both kinds): one row each.
    return out.dropDuplicates(["user_id", "item_id", "sample_type"])
