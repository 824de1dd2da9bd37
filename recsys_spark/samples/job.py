"""`recsys-spark samples --date D`: the recall and ranking training sets of day D.

`recall_samples` holds day D's positives and sampled negatives, `rank_samples` day D's shown pairs
with one label per task; both carry the same leak-free features (`samples/features.py`: statistics
of D-1, profiles, last-N clicks before D) and replace their `dt = D` partition, so re-running a day
is idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.config import GatedConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.samples.features import (
    ITEM_DENSE,
    PAIR_DENSE,
    USER_DENSE,
    features_day,
    item_features,
    last_n_clicks,
    new_id_dense,
    pair_exposure,
    profile_match,
    user_features,
)
from recsys_spark.samples.ranking import rank_examples, sampled_rank_negatives
from recsys_spark.samples.recall import recall_examples

log = logging.getLogger(__name__)


@dataclass
class SamplesConfig(GatedConfig):
    """Writes recall_samples and rank_samples for --date (features from D-1 and earlier only)."""

    history_length: int = option(20, "Last-N clicked items kept as the user's behaviour sequence.")
    history_days: int = option(30, "Days before --date scanned for the behaviour sequence.")
    easy_negatives: int = option(4, "Easy negatives drawn per positive, proportionally to clicks^power.")
    negative_power: float = option(
        0.75, "Exponent of the 30-day click count in the easy-negative distribution."
    )
    hard_negatives: int = option(1, "Hard negatives per positive, from --hard-negative-channel.")
    hard_negative_channel: str = option(
        "swing",
        "Item-to-item table giving hard negatives: swing, itemcf, or none.",
        choices=["swing", "itemcf", "none"],
    )
    hard_negative_skip: int = option(
        5, "Best-ranked channel candidates skipped as hard negatives (likely unseen true interests)."
    )
    hard_negative_max_rank: int = option(20, "Neighbours per history item considered for hard negatives.")
    rank_negatives: int = option(
        4,
        "Only for a day with no impressions (ratings logs such as MovieLens): unengaged items drawn per "
        "engaged pair, ∝ clicks^power, as the ranking negatives (0 = none).",
    )
    seed: int = option(42, "Seed of the negative sampling (hash-based: same seed, same samples).")


def stats_of(lake, table: str, day: dt.date) -> DataFrame:
    """`user_stats`/`item_stats` rows of `day`, rolled up from daily_counts when that day was never run.

    The daily run computes statistics for D only, so D-1's are usually there from yesterday's run; on
    a fresh lake they are rolled up on the fly from `daily_counts` (days after D-1 are ignored).
    """
    from recsys_spark.stats import StatsConfig, rollup_stats

    after = day + dt.timedelta(days=1)  # as of the end of `day`: nothing computed for a later day
    if lake.exists(table):
        rows = lake.read_as_of(table, after).filter(F.col("dt") == F.lit(day))
        if rows.limit(1).count():
            return rows
    if not lake.exists("daily_counts"):
        raise UsageError(f"{table} has no rows for {day} and there is no daily_counts: run `stats` first")
    log.info("samples: %s has no rows for %s; rolling them up from daily_counts", table, day)
    entity = "user" if table == "user_stats" else "item"
    rolled = rollup_stats(lake.read_as_of("daily_counts", after), day, entity, StatsConfig(date=day))
    return rolled.withColumn("dt", F.lit(day)).cache()  # used by several joins: roll up once


def with_features(
    examples: DataFrame,
    users: DataFrame,
    items: DataFrame,
    hist: DataFrame,
    day: dt.date,
    pairs: DataFrame | None = None,
) -> DataFrame:
    """Join user, history and item features; a user with no clicks before `day` gets an empty history,
    an id with neither a profile row nor statistics the new-id vector (zeros, `is_new` = 1). With
    `pairs` (`pair_features`), also `pair_dense` (zeros for a pair it lacks)."""
    if pairs is not None:
        zeros = F.array(*[F.lit(0.0).cast("float") for _ in PAIR_DENSE])
        examples = examples.join(pairs, ["user_id", "item_id"], "left").withColumn(
            "pair_dense", F.coalesce("pair_dense", zeros)
        )
    return (
        examples.join(users, "user_id", "left")
        .join(hist, "user_id", "left")
        .join(items, "item_id", "left")
        .withColumn("hist", F.coalesce("hist", F.array().cast("array<string>")))
        .withColumn("user_dense", F.coalesce("user_dense", new_id_dense(USER_DENSE)))
        .withColumn("item_dense", F.coalesce("item_dense", new_id_dense(ITEM_DENSE)))
        .withColumn("features_dt", F.lit(features_day(day)))
        .withColumn("dt", F.lit(day))
    )


def build_samples(lake, day: dt.date, cfg: SamplesConfig, period_events: DataFrame | None = None):
    """`(recall_samples, rank_samples)` for `day`; `period_events` defaults to day D's events.

    The incremental update passes the events newer than its watermark instead (days up to `day`);
    each event day d of the period gets the samples of d as the daily job builds them, features as of
    d - 1, so a label's own event (and anything after it) never reaches its history or statistics.
    """
    if period_events is None:
        return _build_day(lake, day, cfg, lake.read("events").filter(F.col("dt") == F.lit(day)))
    period = period_events.filter(F.col("dt") <= F.lit(day))
    # One row per event day of the period (a few: the days since the watermark).
    days = sorted(r[0] for r in period.select("dt").distinct().collect()) or [day]
    built = [_build_day(lake, d, cfg, period.filter(F.col("dt") == F.lit(d))) for d in days]
    recall, rank = built[0]
    for more_recall, more_rank in built[1:]:
        recall, rank = recall.unionByName(more_recall), rank.unionByName(more_rank)
    return recall, rank


def day_features(
    lake, day: dt.date, history_length: int, history_days: int
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """The feature tables a sample of `day` joins: profiles + statistics of `day - 1`, last-N clicks before `day`.

    The one definition of "features as of a day": the samples of D use it with `day = D`, and serving
    (`recommend/rank`) scores the lists of D with `day = D + 1`, i.e. exactly what a ranking sample
    of D + 1 will carry, so the ranker is served the inputs it is trained on.

    Parameters
    ----------
    lake : Lake
        The lake.
    day : datetime.date
        The sample day; nothing of `day` or later is read.
    history_length : int
        N of the last-N clicks.
    history_days : int
        Days before `day` scanned for the clicks.

    Returns
    -------
    tuple of DataFrame
        `(users, items, hist, item_stats)`: `user_features`, `item_features`, `last_n_clicks` (cached)
        and the `item_stats` rows of `day - 1`.
    """
    prev = features_day(day)
    user_stats, item_stats = stats_of(lake, "user_stats", prev), stats_of(lake, "item_stats", prev)
    users = user_features(lake.read("users"), user_stats, day)
    items = item_features(lake.read("items"), item_stats, day)
    hist = last_n_clicks(lake.read_as_of("events", day), day, history_length, history_days).cache()
    return users, items, hist, item_stats


def day_profiles(lake, day: dt.date) -> DataFrame:
    """The `user_profiles` rows a sample of `day` may use: those of `day - 1`, computed when never written.

    Like the recall job's profile channel: the stored partition of D - 1 if it has rows, else
    `profiles.interests.user_profiles` with its defaults over the events before `day` (the
    window ending D - 1), so nothing of `day` is read either way.

    Parameters
    ----------
    lake : Lake
        The lake.
    day : datetime.date
        The sample day.

    Returns
    -------
    DataFrame
        `user_profiles` rows `(user_id, kind, key, score, weight, rank, dt)` of `day - 1`.
    """
    from recsys_spark.profiles.stored import profiles_as_of

    return profiles_as_of(lake, features_day(day), lake.read_as_of("events", day))[0]


def pair_features(lake, day: dt.date, pairs: DataFrame) -> DataFrame:
    """`(user_id, item_id, pair_dense)` of the distinct pairs of `pairs` as a sample of `day` sees them.

    The one definition shared by the samples, serving (`recommend/rank`, with `day = D + 1`) and
    evaluation: `features.profile_match` against `day_profiles(lake, day)` and the current `items`,
    then `features.pair_exposure` over the events as of `day`.

    Parameters
    ----------
    lake : Lake
        The lake.
    day : datetime.date
        The sample day; profiles of `day - 1`.
    pairs : DataFrame
        `(user_id, item_id, ...)`.

    Returns
    -------
    DataFrame
        `(user_id, item_id, pair_dense: array<float>)` in `PAIR_DENSE` order.
    """
    profile = profile_match(pairs, day_profiles(lake, day), lake.read("items"))
    exposure = pair_exposure(pairs, lake.read_as_of("events", day), day)
    return profile.join(exposure, ["user_id", "item_id"]).select(
        "user_id", "item_id", F.concat("pair_dense", "exposure").alias("pair_dense")
    )


def _build_day(lake, day: dt.date, cfg: SamplesConfig, period: DataFrame):
    """Samples of the events `period` (all of day `day`), every input as of `day - 1` (docs/samples.md)."""
    users, items, hist, item_stats = day_features(lake, day, cfg.history_length, cfg.history_days)
    sim = None
    if cfg.hard_negative_channel != "none" and cfg.hard_negatives > 0:
        table = f"{cfg.hard_negative_channel}_sim"
        if not lake.exists(table):
            raise UsageError(
                f"{table} does not exist: run `similarity --algo {cfg.hard_negative_channel}` first "
                "or pass --hard-negative-channel none"
            )
        # The channel as it stood before `day`: the latest version may already hold `day`'s events
        # (run-daily builds it first) or a later day's (a backfill).
        sim = lake.read_as_of(table, day)
        if sim is None:
            log.warning(
                "samples %s: no %s version was built for a day before %s; no hard negatives", day, table, day
            )
    clicks = item_stats.select("item_id", F.coalesce(F.col("click_30d"), F.lit(0)).alias("clicks"))
    recall = recall_examples(
        period,
        hist,
        clicks.filter(F.col("clicks") > 0),
        sim,
        cfg.easy_negatives,
        cfg.hard_negatives,
        cfg.negative_power,
        cfg.hard_negative_skip,
        cfg.hard_negative_max_rank,
        cfg.seed,
    )
    rank = rank_examples(period)
    if cfg.rank_negatives > 0 and not period.filter(F.col("event") == "impression").limit(1).count():
        # A ratings log (MovieLens) or a log without exposures: every shown pair is engaged, so the
        # ranker would see positives only. Unengaged items drawn like the easy negatives stand in
        # for the unclicked impressions.
        log.warning(
            "samples %s: no impressions on this day; rank_samples use %d sampled unengaged items per "
            "engaged pair as negatives (--rank-negatives)",
            day,
            cfg.rank_negatives,
        )
        weights = clicks.filter(F.col("clicks") > 0)
        negatives = sampled_rank_negatives(period, weights, cfg.rank_negatives, cfg.negative_power, cfg.seed)
        rank = rank.unionByName(negatives)
    pairs = pair_features(lake, day, rank)
    return (
        with_features(recall, users, items, hist, day),
        with_features(rank, users, items, hist, day, pairs),
    )


def validate(cfg: SamplesConfig) -> None:
    for name in ("history_length", "history_days"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("easy_negatives", "hard_negatives", "hard_negative_skip", "rank_negatives"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if cfg.negative_power < 0:
        raise UsageError("--negative-power must be >= 0")


def write_samples(lake, day: dt.date, cfg: SamplesConfig, job: str = "samples") -> dict[str, int]:
    """Build the samples of `day` and replace that day's partitions of both tables (gated writes).

    Parameters
    ----------
    lake : Lake
        The lake.
    day : datetime.date
        The sample day (features as of the day before).
    cfg : SamplesConfig
        The sampling options.
    job : str
        The writer recorded in the commits' metadata (`train` when its cold start fills a window).

    Returns
    -------
    dict of str to int
        `{"recall_samples": version, "rank_samples": version}`.
    """
    recall, rank = build_samples(lake, day, cfg)
    meta = {"recsys.job": job, "recsys.date": str(day), "recsys.features_dt": str(features_day(day))}
    return {
        "recall_samples": lake.overwrite_dates("recall_samples", recall, [day], metadata=meta),
        "rank_samples": lake.overwrite_dates("rank_samples", rank, [day], metadata=meta),
    }


def run(cfg: SamplesConfig, spark, lake) -> int:
    validate(cfg)
    day = cfg.date
    started = time.time()
    versions = write_samples(lake, day, cfg)
    recall_now = lake.read("recall_samples").filter(F.col("dt") == F.lit(day))
    mix = {r.sample_type: r["count"] for r in recall_now.groupBy("sample_type").count().collect()}
    rank_now = lake.read("rank_samples").filter(F.col("dt") == F.lit(day))
    rates = rank_now.agg(F.count(F.lit(1)).alias("rows"), F.avg("label_click"), F.avg("label_like")).first()
    print(
        f"samples {day}: recall_samples {sum(mix.values()):,} rows "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(mix.items()))}; version {versions['recall_samples']})"
    )
    print(
        f"samples {day}: rank_samples {rates[0]:,} rows, click rate {rates[1] or 0:.3f}, "
        f"like rate {rates[2] or 0:.3f} (version {versions['rank_samples']}); {time.time() - started:.1f}s"
    )
    return 0
