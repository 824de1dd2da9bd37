"""Per-user and per-item statistics for one day: `daily_counts`, `user_stats`, `item_stats`.

`daily_counts` holds one row per (entity, day) with that day's counts; the trailing-window stats are
rolled up from it, so a daily run reads one day of raw events instead of the longest window's worth.
The first run on a fresh lake backfills the missing days of the longest window once.

Everything is Spark built-ins (no Python UDFs); the driver only collects the list of days already in
`daily_counts` (one row per day) and a few counts for the log. Column formulas are in docs/stats.md.

Rates are Bayesian-smoothed towards the population rate, (x + m·global_rate) / (n + m) with
m = `prior_strength`: the posterior mean under a Beta prior of strength m centred on the global rate,
so an entity with few events gets the global rate rather than 0 or 1.

References
----------
X. Wang, W. Li, Y. Cui, R. Zhang, J. Mao. "Click-Through Rate Estimation for Rare Events in Online
Advertising." In Online Multimedia Advertising: Techniques and Technologies, IGI Global, 2011
(smoothing CTRs with a Beta prior).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from recsys_spark.config import GatedConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.lake.tables import EVENT_TYPES, table_schema

log = logging.getLogger(__name__)

ENTITY_TYPES = ("user", "item")
ID_COLUMN = {"user": "user_id", "item": "item_id"}
STATS_TABLE = {"user": "user_stats", "item": "item_stats"}
# The entity on the other side of an event: distinct items a user touched, distinct users of an item.
PEER = {"user": "items", "item": "users"}
# Rates are "numerator per denominator" event counts, smoothed towards the population rate.
RATES: tuple[tuple[str, str, str], ...] = (
    ("ctr", "click", "impression"),
    ("like_rate", "like", "click"),
    ("share_rate", "share", "click"),
    ("comment_rate", "comment", "click"),
    ("follow_rate", "follow", "click"),
    ("purchase_rate", "purchase", "click"),
)
DAILY_COUNTS = "daily_counts"


@dataclass
class StatsConfig(GatedConfig):
    """Writes daily_counts for --date (backfilling missing days of the longest window), then user_stats
    and item_stats for --date rolled up from daily_counts. Re-running a date replaces that date."""

    windows: list[int] = option([1, 7, 30], "Trailing windows in days, each ending at --date inclusive.")
    prior_strength: float = option(
        20.0,
        "Bayesian prior pseudo-count: rates are (x + prior_strength*global_rate) / (n + prior_strength).",
    )
    quantile_buckets: int = option(10, "Number of quantile buckets (0..N-1) of the bucketed counts.")
    bucket_events: list[str] = option(
        ["impression", "click"], "Event types whose longest-window count gets a quantile bucket column."
    )
    refresh_days: int = option(
        1,
        "Recompute this many most recent days of daily_counts ending at --date even when present "
        "(raise it when events arrive late); older days of the window are computed only when missing.",
    )


# -- pure transforms ---------------------------------------------------------------------------
def daily_counts_for(events, day: dt.date | str):
    """`daily_counts` rows of one day from raw events (rows of other days are ignored).

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date or str
        The day.

    Returns
    -------
    DataFrame
        `daily_counts_columns()`: one row per (entity_type, entity_id) active that day.
    """
    from pyspark.sql import functions as F

    return _daily_counts(events.filter(F.col("dt") == F.lit(_as_date(day))))


def _daily_counts(events):
    """`daily_counts` rows for every day present in `events`, one pass over them."""
    from pyspark.sql import functions as F

    events = events.filter(F.col("event").isin(list(EVENT_TYPES)))
    per_type = [F.sum(F.when(F.col("event") == e, 1).otherwise(0)).cast("long").alias(e) for e in EVENT_TYPES]
    frames = []
    for entity, peer in (("user", "item_id"), ("item", "user_id")):
        frames.append(
            events.groupBy(F.col(ID_COLUMN[entity]).alias("entity_id"), "dt")
            .agg(
                *per_type,
                F.coalesce(F.sum("dwell_ms"), F.lit(0)).cast("long").alias("dwell_ms"),
                F.countDistinct(peer).cast("long").alias("distinct_peers"),
                F.max("ts").alias("last_ts"),
            )
            .withColumn("entity_type", F.lit(entity))
        )
    return frames[0].unionByName(frames[1]).select(*daily_counts_columns())


def daily_counts_columns() -> list[str]:
    """Columns of `daily_counts`, in order.

    Parameters
    ----------
    (none)

    Returns
    -------
    list of str
        Column names.
    """
    return ["entity_type", "entity_id", *EVENT_TYPES, "dwell_ms", "distinct_peers", "last_ts", "dt"]


def rollup_stats(daily_counts, day: dt.date | str, entity_type: str, cfg: StatsConfig):
    """`user_stats` / `item_stats` rows for `day` from `daily_counts` (rows after `day` are ignored).

    One row per entity with any event in the longest window (day - max(windows), day].

    Parameters
    ----------
    daily_counts : DataFrame
        The `daily_counts` table.
    day : datetime.date or str
        The day the stats are for.
    entity_type : str
        "user" or "item".
    cfg : StatsConfig
        Windows, prior strength, buckets and the other stats options.

    Returns
    -------
    DataFrame
        `stats_columns(entity_type, cfg)`: counts per window, smoothed rates, log1p counts, buckets,
        recency.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if entity_type not in ENTITY_TYPES:
        raise ValueError(f"entity_type must be one of {ENTITY_TYPES}, got {entity_type!r}")
    day = _as_date(day)
    windows = sorted(set(cfg.windows))
    longest = windows[-1]

    # Windows test the row's age in days rather than compare dates, so the generated code of the wide
    # aggregation below does not depend on `day` and is compiled once, not once per day.
    dc = daily_counts.filter(
        (F.col("entity_type") == entity_type)
        & (F.col("dt") > F.date_sub(F.lit(day), longest))
        & (F.col("dt") <= F.lit(day))
    ).withColumn("_age", F.datediff(F.lit(day), F.col("dt")))

    def in_window(w: int):
        return F.col("_age") < w

    sums = []
    for w in windows:
        sums += [
            F.sum(F.when(in_window(w), F.col(e)).otherwise(0)).cast("long").alias(f"{e}_{w}d")
            for e in EVENT_TYPES
        ]
        sums.append(
            F.sum(F.when(in_window(w), F.col("dwell_ms")).otherwise(0)).cast("long").alias(f"dwell_ms_{w}d")
        )
        sums.append(F.count(F.when(in_window(w), F.lit(1))).cast("long").alias(f"active_days_{w}d"))
    id_col = ID_COLUMN[entity_type]
    stats = dc.groupBy(F.col("entity_id").alias(id_col)).agg(
        *sums,
        F.coalesce(F.max(F.when(F.col("_age") == 0, F.col("distinct_peers"))), F.lit(0))
        .cast("long")
        .alias(f"distinct_{PEER[entity_type]}_1d"),
        F.max("last_ts").alias("last_active_ts"),
    )

    # Population rates over the same window: one row of totals, broadcast to every entity.
    needed = sorted({f"{e}_{w}d" for w in windows for _, num, den in RATES for e in (num, den)})
    totals = stats.agg(*[F.sum(c).cast("double").alias(f"_total_{c}") for c in needed])
    stats = stats.crossJoin(F.broadcast(totals))
    m = F.lit(float(cfg.prior_strength))
    rate_cols = []
    for w in windows:
        for name, num, den in RATES:
            n_tot, d_tot = F.col(f"_total_{num}_{w}d"), F.col(f"_total_{den}_{w}d")
            global_rate = F.when(d_tot > 0, n_tot / d_tot).otherwise(F.lit(0.0))
            x, n = F.col(f"{num}_{w}d").cast("double"), F.col(f"{den}_{w}d").cast("double")
            # With prior_strength 0 an entity without denominator events has no rate (ANSI mode would
            # raise on the division by zero).
            rate_cols.append(
                F.when(n + m > 0, (x + m * global_rate) / (n + m))
                .otherwise(F.lit(None).cast("double"))
                .alias(f"{name}_{w}d")
            )
    log_cols = [F.log1p(F.col(f"{e}_{w}d")).alias(f"log1p_{e}_{w}d") for w in windows for e in EVENT_TYPES]
    stats = stats.select(
        id_col,
        *[f"{e}_{w}d" for w in windows for e in (*EVENT_TYPES, "dwell_ms", "active_days")],
        *rate_cols,
        *log_cols,
        f"distinct_{PEER[entity_type]}_1d",
        "last_active_ts",
    )

    # Quantile bucket = floor(B * #entities with a strictly smaller value / #entities): equal values share
    # a bucket and the result depends only on the input. Ranks are computed over the distinct values
    # (a few thousand at most for counts), not over the entities, so no single-partition sort of all rows.
    buckets = int(cfg.quantile_buckets)
    for event in _bucket_events(cfg):
        value = f"{event}_{longest}d"
        freq = stats.groupBy(F.col(value).alias("_v")).count()
        # One partition on purpose: the rows are the distinct values, not the entities.
        ordered = Window.partitionBy(F.lit(0)).orderBy("_v")
        below = ordered.rowsBetween(Window.unboundedPreceding, -1)
        everything = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
        freq = freq.select(
            "_v",
            F.coalesce(F.sum("count").over(below), F.lit(0)).cast("long").alias("_less"),
            F.sum("count").over(everything).cast("long").alias("_n"),
        ).select("_v", F.expr(f"CAST(({buckets} * _less) div _n AS INT)").alias(f"{event}_bucket"))
        stats = stats.join(F.broadcast(freq), stats[value] == freq["_v"], "left").drop("_v")

    return stats.select(
        *[c for c in stats.columns if c != "last_active_ts" and not c.endswith("_bucket")],
        *[f"{e}_bucket" for e in _bucket_events(cfg)],
        "last_active_ts",
        F.datediff(F.lit(day), F.to_date("last_active_ts")).alias("days_since_active"),
        F.lit(day).alias("dt"),
    )


def stats_columns(entity_type: str, cfg: StatsConfig) -> list[str]:
    """Output columns of `rollup_stats` in order (without running Spark).

    Parameters
    ----------
    entity_type : str
        "user" or "item".
    cfg : StatsConfig
        Windows, prior strength, buckets and the other stats options.

    Returns
    -------
    list of str
        Column names.
    """
    windows = sorted(set(cfg.windows))
    cols = [ID_COLUMN[entity_type]]
    cols += [f"{e}_{w}d" for w in windows for e in (*EVENT_TYPES, "dwell_ms", "active_days")]
    cols += [f"{name}_{w}d" for w in windows for name, _, _ in RATES]
    cols += [f"log1p_{e}_{w}d" for w in windows for e in EVENT_TYPES]
    cols += [f"distinct_{PEER[entity_type]}_1d"]
    cols += [f"{e}_bucket" for e in _bucket_events(cfg)]
    cols += ["last_active_ts", "days_since_active", "dt"]
    return cols


# -- planning -----------------------------------------------------------------------------------
def window_days(day: dt.date, cfg: StatsConfig) -> list[dt.date]:
    """The days of the longest window ending at `day`, oldest first.

    Parameters
    ----------
    day : datetime.date
        Last day.
    cfg : StatsConfig
        Windows, prior strength, buckets and the other stats options.

    Returns
    -------
    list of datetime.date
        `max(cfg.windows)` days.
    """
    longest = max(cfg.windows)
    return [day - dt.timedelta(days=k) for k in range(longest - 1, -1, -1)]


def days_to_compute(day: dt.date, existing: Iterable[dt.date], cfg: StatsConfig) -> list[dt.date]:
    """Days of `daily_counts` this run writes: the `refresh_days` latest days up to `day`, plus any day of
    the longest window missing from `existing`.

    Parameters
    ----------
    day : datetime.date
        The run's day.
    existing : iterable of datetime.date
        Days already in `daily_counts`.
    cfg : StatsConfig
        Windows, prior strength, buckets and the other stats options.

    Returns
    -------
    list of datetime.date
        Days to (re)write, oldest first.
    """
    have = {_as_date(d) for d in existing}
    fresh = {day - dt.timedelta(days=k) for k in range(max(1, cfg.refresh_days))}
    return sorted(d for d in set(window_days(day, cfg)) | fresh if d in fresh or d not in have)


def existing_days(lake) -> list[dt.date]:
    """Days present in `daily_counts`: a scan of the partition column only (one row per day collected).

    Parameters
    ----------
    lake : Lake
        The lake.

    Returns
    -------
    list of datetime.date
        Sorted days; empty when the table does not exist.
    """
    if not lake.exists(DAILY_COUNTS):
        return []
    return sorted(r[0] for r in lake.read(DAILY_COUNTS).select("dt").distinct().collect() if r[0] is not None)


def validate(cfg: StatsConfig) -> None:
    """Refuse options that cannot work, naming the option; the output must fit the table contracts."""

    if not cfg.windows or any(int(w) < 1 for w in cfg.windows):
        raise UsageError(f"--windows must be positive numbers of days, got {cfg.windows}")
    if cfg.prior_strength < 0:
        raise UsageError(f"--prior-strength must be >= 0, got {cfg.prior_strength}")
    if cfg.quantile_buckets < 1:
        raise UsageError(f"--quantile-buckets must be >= 1, got {cfg.quantile_buckets}")
    unknown = sorted(set(cfg.bucket_events) - set(EVENT_TYPES))
    if unknown:
        raise UsageError(f"--bucket-events: unknown event types {unknown} (known: {list(EVENT_TYPES)})")
    for entity in ENTITY_TYPES:
        schema = table_schema(STATS_TABLE[entity])
        if schema is None:
            continue
        extra = [c for c in stats_columns(entity, cfg) if c not in schema.column_names]
        if extra:
            raise UsageError(
                f"these options produce columns outside the {schema.name} contract: {extra[:6]}"
                f"{' ...' if len(extra) > 6 else ''}; add them to schemas/tables/{schema.name}.json first"
            )


# -- the job -------------------------------------------------------------------------------------
def run(cfg: StatsConfig, spark, lake) -> int:
    """Write daily_counts for the needed days, then user_stats and item_stats for `cfg.date`."""
    from pyspark.sql import functions as F

    validate(cfg)
    if cfg.date is None:
        raise ValueError("StatsConfig.date must be set (the CLI defaults it to the latest day in events)")
    day = _as_date(cfg.date)
    meta = {"recsys.job": "stats", "recsys.date": str(day)}
    timings: list[tuple[str, float]] = []

    started = time.time()
    days = days_to_compute(day, existing_days(lake), cfg)
    events = lake.read("events", dates=days).filter(F.col("dt").isin(days))
    lake.overwrite_dates(
        DAILY_COUNTS,
        _daily_counts(events),
        days,
        metadata={**meta, "recsys.stats.days": ",".join(map(str, days))},
    )
    written = {DAILY_COUNTS: lake.read(DAILY_COUNTS, dates=days).filter(F.col("dt").isin(days)).count()}
    timings.append((DAILY_COUNTS, time.time() - started))
    log.info("stats %s: daily_counts written for %d day(s): %s", day, len(days), _span(days))

    # Prunes the read to the window's partitions; rollup_stats applies the same bounds again.
    window = window_days(day, cfg)
    daily = lake.read(DAILY_COUNTS, dates=window).filter(F.col("dt").isin(window))
    for entity in ENTITY_TYPES:
        started = time.time()
        table = STATS_TABLE[entity]
        lake.overwrite_dates(table, rollup_stats(daily, day, entity, cfg), [day], metadata=meta)
        written[table] = lake.read(table, dates=[day]).filter(F.col("dt") == F.lit(day)).count()
        timings.append((table, time.time() - started))

    seconds = dict(timings)
    for table, rows in written.items():
        print(f"stats {day}: {table}: {rows} rows written in {seconds[table]:.1f}s")
    return 0


def _bucket_events(cfg: StatsConfig) -> list[str]:
    return list(dict.fromkeys(cfg.bucket_events))  # a repeated event would repeat its column


def _span(days: Sequence[dt.date]) -> str:
    if not days:
        return "none"
    return str(days[0]) if len(days) == 1 else f"{days[0]} .. {days[-1]}"


def _as_date(value: dt.date | dt.datetime | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))
