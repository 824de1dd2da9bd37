"""Business metrics per day and A/B variant: DAU, retention, LT7, clicks, engaged time, coverage.

For a day D and a group of users G (everyone: layer = variant = `all`; or the users of one variant of
an `ab_buckets` layer, active users without a row there forming variant `unassigned`):

- active on day d: at least one event other than `impression` on d (exposure alone is not a visit);
  A_d = the users active on d. `active_users` = |A_D ∩ G| (DAU for `all`).
- `clicks` = click events on D of the users of A_D ∩ G; `clicks_per_user` = clicks / active_users.
- `dwell_ms` = sum of the non-null `dwell_ms` of every event on D of the users of A_D ∩ G (engaged
  time); `dwell_ms_per_user` = dwell_ms / active_users.
- `retention_1d` = |{u ∈ A_D ∩ G : u ∈ A_{D+1}}| / active_users (next-day retention).
- `retention_7d` = |{u ∈ A_D ∩ G : u ∈ A_d for some d in D+1..D+7}| / active_users (active again
  within a week, "rolling" retention).
- `lt7` = mean over u ∈ A_D ∩ G of #{d ∈ D+1..D+7 : u ∈ A_d}, in [0, 7] (the user's active days in
  the week after D).
- `coverage` = `items_shown` / `catalog_items`: distinct catalogue items impressed on D to the users of
  G (active or not) over the number of items in `items`.

A day after D is "in the lake" when `events` has its `dt` partition. `retention_1d` (and
`retained_1d`) are null until D+1 is; `retention_7d` and `lt7` (and their counts) until all of
D+1..D+7 are, which `complete` says; `days_after` counts those of D+1..D+7 present. Ratios over a group
without active users are null.

References
----------
R. Kohavi, R. Longbotham, D. Sommerfield, R. M. Henne. "Controlled experiments on the web: survey and
practical guide." Data Mining and Knowledge Discovery 18(1), 140–181, 2009 (per-variant user
metrics of an online controlled experiment; the overall evaluation criterion).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.catalog import AB_BUCKETS, BUSINESS_METRICS
from recsys_spark.config import GatedConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.experiments.buckets import ALL, UNASSIGNED

log = logging.getLogger(__name__)

HORIZON_DAYS = 7  # the week after D that retention_7d and lt7 look at
METRIC_COLUMNS = (
    "dt",
    "layer",
    "variant",
    "active_users",
    "clicks",
    "clicks_per_user",
    "dwell_ms",
    "dwell_ms_per_user",
    "retained_1d",
    "retention_1d",
    "retained_7d",
    "retention_7d",
    "active_days_7d",
    "lt7",
    "items_shown",
    "catalog_items",
    "coverage",
    "days_after",
    "complete",
)


def availability(
    days: Iterable[dt.date], present: Iterable[dt.date]
) -> list[tuple[dt.date, int, bool, bool]]:
    """Per target day: how many of the `HORIZON_DAYS` days after it are in the lake.

    Parameters
    ----------
    days : iterable of datetime.date
        The days metrics are computed for.
    present : iterable of datetime.date
        The days `events` holds.

    Returns
    -------
    list of (date, int, bool, bool)
        `(day, days_after, next_day_present, complete)`, one per day.
    """
    have = set(present)
    out = []
    for day in sorted(set(days)):
        after = [day + dt.timedelta(days=k) for k in range(1, HORIZON_DAYS + 1)]
        found = sum(d in have for d in after)
        out.append((day, found, after[0] in have, found == HORIZON_DAYS))
    return out


def _with_groups(frame: DataFrame, buckets: DataFrame | None) -> DataFrame:
    """`frame` (with `user_id`) once as group all/all and, per layer of `buckets`, under its variant."""
    everyone = frame.withColumn("layer", F.lit(ALL)).withColumn("variant", F.lit(ALL))
    if buckets is None:
        return everyone
    assignment = buckets.select("user_id", "layer", "variant")
    layers = assignment.select("layer").distinct()  # a handful of rows
    per_layer = (
        frame.crossJoin(F.broadcast(layers))
        .join(assignment, ["user_id", "layer"], "left")
        .withColumn("variant", F.coalesce(F.col("variant"), F.lit(UNASSIGNED)))
    )
    return everyone.unionByName(per_layer.select(*everyone.columns))


def business_metrics(
    events: DataFrame,
    items: DataFrame,
    days: Sequence[dt.date],
    present_days: Iterable[dt.date],
    buckets: DataFrame | None = None,
) -> DataFrame:
    """The `business_metrics` rows of `days`: one per (dt, layer, variant) with active users or impressions.

    Parameters
    ----------
    events : DataFrame
        The `events` table; rows of `days` and of the `HORIZON_DAYS` days after each are used.
    items : DataFrame
        The `items` table (the catalogue, for coverage).
    days : sequence of datetime.date
        The days to compute.
    present_days : iterable of datetime.date
        The days `events` holds (decides which after-D metrics are known, see the module docstring).
    buckets : DataFrame, optional
        `ab_buckets` (`user_id, layer, variant`); None gives the `all` rows only.

    Returns
    -------
    DataFrame
        `METRIC_COLUMNS`, as the module docstring defines them.
    """
    days = sorted(set(days))
    if not days:
        raise ValueError("business_metrics needs at least one day")
    spark = events.sparkSession
    last_needed = days[-1] + dt.timedelta(days=HORIZON_DAYS)
    is_active = F.col("event") != F.lit("impression")
    on_days = events.filter(F.col("dt").isin(days))

    # Per (user, day) of the target days: one row per active user; impression-only users have none.
    per_user = (
        on_days.groupBy("user_id", "dt")
        .agg(
            F.max(is_active.cast("int")).alias("_active"),
            F.sum((F.col("event") == F.lit("click")).cast("long")).alias("clicks"),
            F.coalesce(F.sum("dwell_ms"), F.lit(0)).cast("long").alias("dwell_ms"),
        )
        .filter(F.col("_active") == 1)
        .drop("_active")
    )
    # Days active after each target day: a join on user_id bounded to HORIZON_DAYS later days each,
    # so a user contributes at most len(days) * HORIZON_DAYS rows.
    later = (
        events.filter((F.col("dt") > F.lit(days[0])) & (F.col("dt") <= F.lit(last_needed)) & is_active)
        .select("user_id", F.col("dt").alias("_later"))
        .distinct()
    )
    returns = (
        per_user.select("user_id", "dt")
        .join(later, "user_id")
        .filter((F.col("_later") > F.col("dt")) & (F.col("_later") <= F.date_add("dt", HORIZON_DAYS)))
        .groupBy("user_id", "dt")
        .agg(
            F.max((F.col("_later") == F.date_add("dt", 1)).cast("long")).alias("_next"),
            F.countDistinct("_later").cast("long").alias("_days"),
        )
    )
    users = per_user.join(returns, ["user_id", "dt"], "left").select(
        "user_id",
        "dt",
        "clicks",
        "dwell_ms",
        F.coalesce("_next", F.lit(0)).alias("_next"),
        F.coalesce("_days", F.lit(0)).alias("_days"),
    )
    activity = (
        _with_groups(users, buckets)
        .groupBy("dt", "layer", "variant")
        .agg(
            F.count("*").cast("long").alias("active_users"),
            F.sum("clicks").cast("long").alias("clicks"),
            F.sum("dwell_ms").cast("long").alias("dwell_ms"),
            F.sum("_next").cast("long").alias("_retained_1d"),
            F.sum((F.col("_days") > 0).cast("long")).alias("_retained_7d"),
            F.sum("_days").cast("long").alias("_active_days_7d"),
        )
    )

    catalogue = items.select("item_id").distinct()
    shown = (
        on_days.filter(F.col("event") == F.lit("impression"))
        .select("user_id", "item_id", "dt")
        .distinct()
        .join(catalogue, "item_id", "left_semi")
    )
    coverage = (
        _with_groups(shown, buckets)
        .groupBy("dt", "layer", "variant")
        .agg(F.countDistinct("item_id").cast("long").alias("items_shown"))
    )
    n_items = catalogue.agg(F.count("*").cast("long").alias("catalog_items"))
    known = spark.createDataFrame(
        availability(days, present_days), "dt date, days_after int, _has_next boolean, complete boolean"
    )

    def ratio(numerator: str, when=None):
        value = F.when(F.col("active_users") > 0, F.col(numerator) / F.col("active_users"))
        return value if when is None else F.when(when, value)

    rows = (
        activity.join(coverage, ["dt", "layer", "variant"], "full_outer")
        .join(F.broadcast(known), "dt")
        .crossJoin(F.broadcast(n_items))
        .fillna(0, subset=["active_users", "clicks", "dwell_ms", "items_shown"])
    )
    has_next, complete = F.col("_has_next"), F.col("complete")
    return rows.select(
        "dt",
        "layer",
        "variant",
        "active_users",
        "clicks",
        ratio("clicks").alias("clicks_per_user"),
        "dwell_ms",
        ratio("dwell_ms").alias("dwell_ms_per_user"),
        F.when(has_next, F.coalesce("_retained_1d", F.lit(0))).alias("retained_1d"),
        ratio("_retained_1d", has_next).alias("retention_1d"),
        F.when(complete, F.coalesce("_retained_7d", F.lit(0))).alias("retained_7d"),
        ratio("_retained_7d", complete).alias("retention_7d"),
        F.when(complete, F.coalesce("_active_days_7d", F.lit(0))).alias("active_days_7d"),
        ratio("_active_days_7d", complete).alias("lt7"),
        "items_shown",
        "catalog_items",
        F.when(F.col("catalog_items") > 0, F.col("items_shown") / F.col("catalog_items")).alias("coverage"),
        "days_after",
        "complete",
    )


@dataclass
class BusinessMetricsConfig(GatedConfig):
    """Writes business_metrics for --date and the --lookback-days before it (whose retention and LT7 the
    newer days complete): one row per day and A/B variant of every ab_buckets layer, plus variant 'all'.
    Definitions in docs/experiments.md."""

    lookback_days: int = option(
        7,
        "Also recompute the rows of this many days before --date, so their retention and LT7 fill in as "
        "the following days arrive (7 completes each day's week on the daily run).",
        minimum=0,
    )


def run(cfg: BusinessMetricsConfig, spark, lake) -> int:
    """Write `business_metrics` for the days of `cfg` (job entry; see the config's docstring)."""
    if cfg.lookback_days < 0:
        raise UsageError(f"--lookback-days must be >= 0, got {cfg.lookback_days}")
    if cfg.date is None:
        raise ValueError("business-metrics needs a date (the CLI fills in the latest day of events)")
    if not lake.exists("items"):
        raise UsageError(f"business-metrics needs the items table (the catalogue) in lake {lake.root}")
    started = time.time()
    first = cfg.date - dt.timedelta(days=cfg.lookback_days)
    span = [first + dt.timedelta(days=k) for k in range((cfg.date - first).days + HORIZON_DAYS + 1)]
    events = lake.read("events", dates=span)
    present = sorted(r[0] for r in events.select("dt").distinct().collect())  # at most len(span) rows
    days = [d for d in present if first <= d <= cfg.date]
    if cfg.date not in days:
        raise UsageError(f"events has no rows for --date {cfg.date}")
    buckets = None
    if lake.exists(AB_BUCKETS):
        # The assignment in force on the day: the newest version dated on or before it.
        buckets = lake.read_as_of(AB_BUCKETS, cfg.date + dt.timedelta(days=1))
        if buckets is None:
            log.warning("no %s version dated on or before %s: using the latest", AB_BUCKETS, cfg.date)
            buckets = lake.read(AB_BUCKETS)
    table = business_metrics(events, lake.read("items"), days, present, buckets)
    meta = {"recsys.job": "business-metrics", "recsys.date": str(cfg.date)}
    version = lake.overwrite_dates(BUSINESS_METRICS, table, days, metadata=meta)
    overall = (
        lake.read(BUSINESS_METRICS, dates=[cfg.date])
        .filter((F.col("layer") == F.lit(ALL)) & (F.col("dt") == F.lit(cfg.date)))
        .first()
    )
    took = time.time() - started
    print(
        f"business-metrics {cfg.date}: {BUSINESS_METRICS} version {version} for {len(days)} day(s); "
        f"DAU {overall['active_users'] if overall else 0}, retention_1d "
        f"{overall['retention_1d'] if overall else None} in {took:.1f}s"
    )
    return 0
