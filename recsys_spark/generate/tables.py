"""The five generated tables as lazy DataFrames: `events`, `items`, `users`, `truth_items`, `truth_users`.

Events grow from `spark.range(users * days)` (one row per user-day) by exploding sessions and then
positions, all with built-in column functions: no UDF, no shuffle, no join, nothing collected.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_spark.generate.config import (
    ACTION_BOOST_OTHER,
    ACTION_BOOST_PREFERRED,
    GenerateConfig,
    auto_partitions,
)
from recsys_spark.generate.model import DAY_MS, HOUR_MS, Model, mixture_hour, power_law_index

TABLES = ("items", "users", "truth_items", "truth_users", "events")
# Draws of an item for one impression before falling back to the cluster's head (always old).
ITEM_DRAWS = 3


def generate_tables(spark: SparkSession, cfg: GenerateConfig) -> dict[str, DataFrame]:
    """All five tables for `cfg`, lazily; columns as in schemas/tables/<table>.json."""
    m = Model.of(cfg)
    return {
        "items": items_df(spark, m),
        "users": users_df(spark, m),
        "truth_items": truth_items_df(spark, m),
        "truth_users": truth_users_df(spark, m),
        "events": events_df(spark, m),
    }


def _small_range(spark: SparkSession, n: int) -> DataFrame:
    parts = max(1, min(spark.sparkContext.defaultParallelism, n // 50_000 + 1))
    return spark.range(0, n, 1, parts)


def items_df(spark: SparkSession, m: Model) -> DataFrame:
    i = "id"
    return _small_range(spark, m.cfg.items).select(
        m.item_id(i).alias("item_id"),
        m.item_category(i).alias("category"),
        m.item_author(i).alias("author_id"),
        m.item_tags(i).alias("tags"),
        F.timestamp_millis(m.item_created_ms(i)).alias("created_ts"),
    )


def truth_items_df(spark: SparkSession, m: Model) -> DataFrame:
    i = "id"
    return _small_range(spark, m.cfg.items).select(
        m.item_id(i).alias("item_id"),
        m.item_cluster(i).alias("cluster"),
        m.item_rank(i).alias("popularity_rank"),
        m.item_quality(i).alias("quality"),
    )


def _users_base(spark: SparkSession, m: Model) -> DataFrame:
    return _small_range(spark, m.cfg.users).select(
        F.col("id").alias("uid"), m.user_tastes("id").alias("tastes")
    )


def users_df(spark: SparkSession, m: Model) -> DataFrame:
    uid = "uid"
    return _users_base(spark, m).select(
        m.user_id(uid).alias("user_id"),
        m.user_gender(uid, F.col("tastes")[0]["c"]).alias("gender"),
        m.user_age_bucket(uid).alias("age_bucket"),
        m.user_region(uid).alias("region"),
        F.timestamp_millis(m.user_signup_ms(uid)).alias("signup_ts"),
    )


def truth_users_df(spark: SparkSession, m: Model) -> DataFrame:
    uid = "uid"
    return _users_base(spark, m).select(
        m.user_id(uid).alias("user_id"),
        F.col("tastes.c").alias("clusters"),
        F.col("tastes.w").alias("weights"),
        m.user_activity(uid).alias("activity"),
    )


def _pick_taste(tastes: Column, u: Column, max_tastes: int) -> Column:
    """The cluster of the first taste whose cumulative weight exceeds u (categorical draw)."""
    expr = None
    cumulative: Column = F.lit(0.0)
    for j in range(max_tastes):
        cumulative = cumulative + F.coalesce(F.get(tastes, j)["w"], F.lit(0.0))
        hit = (u < cumulative) & (F.size(tastes) > j)
        value = F.get(tastes, j)["c"]
        expr = F.when(hit, value) if expr is None else expr.when(hit, value)
    assert expr is not None
    # Weights sum to 1 up to rounding; a u in the rounding gap takes the last taste.
    return expr.otherwise(F.element_at(tastes, -1)["c"])


def events_df(spark: SparkSession, m: Model) -> DataFrame:
    """Impressions with their clicks, dwell and follow-up actions, one row per event."""
    cfg = m.cfg
    parts = cfg.partitions or auto_partitions(cfg, spark.sparkContext.defaultParallelism)
    # Row r = day * users + uid: consecutive rows share a day, so each task writes few dt partitions.
    rows = spark.range(0, cfg.users * cfg.days, 1, parts).select(
        F.floor(F.col("id") / cfg.users).cast("int").alias("day"), (F.col("id") % cfg.users).alias("uid")
    )
    uid, day, s, p = "uid", "day", "s", "p"
    # Randomised rounding keeps the mean exact; a log-normal day factor adds day-to-day variation.
    day_factor = F.exp(F.lit(0.3) * m.z("day-activity", uid, day) - F.lit(0.045))
    n_sessions = F.floor(m.user_activity(uid) * day_factor + m.u("day-sessions", uid, day)).cast("int")
    user_days = rows.select(
        "day",
        "uid",
        n_sessions.alias("n_sessions"),
        m.user_tastes(uid).alias("tastes"),
        m.user_signup_ms(uid).alias("signup_ms"),
    ).where(F.col("n_sessions") > 0)

    sessions = user_days.select("*", F.explode(F.sequence(F.lit(0), F.col("n_sessions") - 1)).alias("s"))
    start_ms = (
        F.lit(m.start_ms)
        + F.col("day").cast("long") * DAY_MS
        + F.floor(mixture_hour(m, uid, day, s) * HOUR_MS)
    )
    sessions = sessions.select(
        "uid",
        "day",
        "s",
        "tastes",
        start_ms.cast("long").alias("start_ms"),
        _session_length(m).alias("length"),
    ).where(F.col("start_ms") > F.col("signup_ms") if cfg.new_user_fraction > 0 else F.lit(True))
    # Segment of each position: after each impression the session moves on to a freshly drawn cluster
    # w.p. 1 / segment_length. The running count of cuts is folded once per session (lambdas run
    # interpreted, so they stay off the per-impression path); posexplode yields (position, segment).
    cut = F.lit(1.0 / cfg.segment_length)
    keys = (F.col("uid"), F.col("day"), F.col("s"))  # columns: a lambda variable cannot go into SQL text
    later = F.when(F.col("length") > 1, F.sequence(F.lit(1), F.col("length") - 1)).otherwise(
        F.array().cast("array<int>")
    )
    segments = F.aggregate(
        later,
        F.array(F.lit(0)),
        lambda acc, q: F.concat(
            acc,
            F.array(F.element_at(acc, -1) + F.when(m.u("segment-cut", *keys, q) < cut, 1).otherwise(0)),
        ),
    )
    positions = sessions.select(
        "uid", "day", "s", "tastes", "start_ms", F.posexplode(segments).alias("p", "segment")
    )
    positions = positions.select(
        "uid",
        "day",
        "s",
        "p",
        "tastes",
        "start_ms",
        _segment_cluster(m, (uid, day, s), "segment").alias("cluster"),
    )
    gap_ms = cfg.gap_seconds * 1000
    # Impression k sits in [k, k + 0.8) gaps after the start: increasing inside a session by construction.
    imp_ms = F.col("start_ms") + F.floor((F.col(p) + m.u("impression-jitter", uid, day, s, p) * 0.8) * gap_ms)
    positions = positions.select("*", imp_ms.cast("long").alias("imp_ms"))
    return _explode_events(m, _draw_item(m, positions, (uid, day, s, p)))


def _session_length(m: Model) -> Column:
    """Geometric length with mean session_length: P(L = l) = q (1-q)^(l-1), q = 1 / session_length."""
    mean = m.cfg.session_length
    if mean <= 1:
        return F.lit(1)
    u = m.u("session-length", "uid", "day", "s")
    ratio = F.log(F.lit(1.0) - u) / F.lit(math.log1p(-1.0 / mean))
    return (F.floor(ratio) + 1).cast("int")


def _segment_cluster(m: Model, keys: tuple[str, ...], segment: str) -> Column:
    """The cluster of one segment: a uniformly random one w.p. explore, else one of the user's tastes."""
    explore = F.floor(m.u("segment-explore-cluster", *keys, segment) * m.n_clusters).cast("int")
    taste = _pick_taste(F.col("tastes"), m.u("segment-taste", *keys, segment), m.cfg.tastes)
    return F.when(m.u("segment-explore", *keys, segment) < m.cfg.explore, explore).otherwise(taste)


def _draw_item(m: Model, positions: DataFrame, keys: tuple[str, ...]) -> DataFrame:
    """Adds the item index `i` drawn from the cluster's power law, redrawn while it is too new.

    A draw created after the impression is replaced by the next one; after ITEM_DRAWS such draws the
    cluster's head (rank 0, never new) is shown. So an item never appears before its created_ts, and
    the impression stays in its segment's cluster.
    """
    size = m.cluster_size("cluster")
    draws = [
        m.item_index("cluster", power_law_index(m.u(f"item-draw{t}", *keys), size, m.cfg.popularity_exponent))
        .cast("long")
        .alias(f"i{t}")
        for t in range(ITEM_DRAWS)
    ]
    expr = None
    for t in range(ITEM_DRAWS):
        ok = m.item_created_ms(f"i{t}") <= F.col("imp_ms")
        expr = F.when(ok, F.col(f"i{t}")) if expr is None else expr.when(ok, F.col(f"i{t}"))
    assert expr is not None
    head = m.item_index("cluster", F.lit(0).cast("long")).cast("long")
    return positions.select("*", *draws).select(*positions.columns, expr.otherwise(head).alias("i"))


def _explode_events(m: Model, positions: DataFrame) -> DataFrame:
    cfg = m.cfg
    uid, day, s, i = F.col("uid"), F.col("day"), F.col("s"), "i"
    keys = ("uid", "day", "s", "p")
    preferred = F.array_contains(F.col("tastes.c"), F.col("cluster"))
    boost = F.when(preferred, F.lit(cfg.taste_boost)).otherwise(F.lit(1.0))
    ctr = F.least(F.lit(0.95), F.lit(cfg.base_ctr) * m.item_quality(i) * boost)
    clicked = m.u("click", *keys) < ctr
    click_ms = F.col("imp_ms") + 300 + F.floor(m.u("click-delay", *keys) * 2700)
    dwell_median = F.when(preferred, F.lit(1.5)).otherwise(F.lit(1.0)) * (cfg.dwell_seconds * 1000)
    dwell = F.floor(dwell_median * F.exp(F.lit(0.8) * m.z("dwell", *keys))).cast("long")
    action_boost = F.when(preferred, F.lit(ACTION_BOOST_PREFERRED)).otherwise(F.lit(ACTION_BOOST_OTHER))

    def event(name: str, ts_ms: Column, dwell_ms: Column) -> Column:
        return F.struct(
            F.lit(name).alias("event"), ts_ms.cast("long").alias("ts_ms"), dwell_ms.alias("dwell_ms")
        )

    no_dwell = F.lit(None).cast("long")
    candidates = [
        event("impression", F.col("imp_ms"), no_dwell),
        F.when(F.col("clicked"), event("click", F.col("click_ms"), F.col("dwell"))),
    ]
    for name, rate in cfg.action_rates().items():
        # Actions happen while the item is open: after the click, within its dwell.
        happens = F.col("clicked") & (m.u(f"action-{name}", *keys) < action_boost * rate)
        at = F.col("click_ms") + 1 + F.floor(m.u(f"action-{name}-at", *keys) * F.col("dwell"))
        candidates.append(F.when(happens, event(name, at, no_dwell)))
    # Explode all candidates and drop the nulls after: filtering inside the array would need a lambda,
    # which Spark evaluates (with every expression under it) without code generation.
    events = (
        positions.select(
            "*", clicked.alias("clicked"), click_ms.cast("long").alias("click_ms"), dwell.alias("dwell")
        )
        .select("uid", "day", "s", "i", F.explode(F.array(*candidates)).alias("e"))
        .where(F.col("e").isNotNull())
    )
    ts_ms = F.col("e.ts_ms")
    return events.where(ts_ms < m.end_ms).select(
        m.user_id(uid).alias("user_id"),
        m.item_id(i).alias("item_id"),
        F.col("e.event").alias("event"),
        F.timestamp_millis(ts_ms).alias("ts"),
        F.concat_ws("-", F.lit("s"), uid.cast("string"), day.cast("string"), s.cast("string")).alias(
            "session_id"
        ),
        F.col("e.dwell_ms").alias("dwell_ms"),
        # The UTC day from epoch millis, independent of the session time zone.
        F.date_add(F.lit(m.cfg.start_date), F.floor((ts_ms - m.start_ms) / DAY_MS).cast("int")).alias("dt"),
    )
