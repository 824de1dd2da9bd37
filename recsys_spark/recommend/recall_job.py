"""`recsys-spark recall --date D`: every channel's candidates for D's active users -> `recall_candidates`.

Inputs as of the end of D (lists are served on D + 1): events up to and including D, the similarity
and embedding tables at their newest version committed for a date <= D (`lake.read_as_of(T, D + 1)`),
the two-tower's newest full version trained by D. A channel whose artefact is missing is skipped with
a log line. The day's partition of `recall_candidates` is replaced as one Delta version (re-running D
replaces it), after the table's quality gate; the commit metadata records the options, the rows and
seconds per channel, the ANN's recall@K against exact search and the exposure filter's measured
false-positive rate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.candidates import lists as builders
from recsys_spark.candidates.cohorts import cohort_candidates, cohort_click_counts, user_cohorts
from recsys_spark.candidates.cold_items import NewItemParams, filled_summary, with_new_item_vectors
from recsys_spark.candidates.exclusions import ExposureParams
from recsys_spark.catalog import SIMILARITY_TABLES, WALK_METHODS
from recsys_spark.config import GatedConfig, option, params_of
from recsys_spark.errors import UsageError
from recsys_spark.events import interest_weights
from recsys_spark.recommend import ann
from recsys_spark.recommend.filters import exposure_blooms, flag_exposed, over_exposed, seen_pairs
from recsys_spark.recommend.recall import (
    CHANNELS,
    active_users,
    click_counts,
    history_vectors,
    merge_channels,
    new_users,
    parse_quotas,
    recent_history,
    session_neighbours,
    with_seen,
)
from recsys_spark.samples.recall import hash_uniform

log = logging.getLogger(__name__)

TABLE = "recall_candidates"


@dataclass
class RecallConfig(NewItemParams, ExposureParams, ann.AnnParams, GatedConfig):
    """Candidates of every recall channel for the users active in the --active-days ending at --date,
    each channel cut at its quota, merged per (user, item); seen and over-exposed items removed; the
    vector channels give items created in the --new-item-days without a vector their neighbours'
    average. See docs/recommend.md ("Recall")."""

    channels: list[str] = option(list(CHANNELS), "Channels to run (those whose artefacts exist run).")
    quota: list[str] = option(
        [], "Per-channel quotas NAME=N (e.g. swing=200 itemcf=200); others get --default-quota."
    )
    default_quota: int = option(100, "Quota of every channel not named in --quota.", minimum=1)
    active_days: int = option(
        30, "A user is active with any event in this many days ending at --date.", minimum=1
    )
    history_length: int = option(
        20, "Last-N clicked items (up to --date) that seed item-to-item and embedding users.", minimum=1
    )
    history_days: int = option(30, "Days ending at --date scanned for those clicks.", minimum=1)
    usercf_days: int = option(
        30, "Days of the neighbours' interactions the usercf channel recommends from.", minimum=1
    )
    popularity_days: int = option(
        7, "Days of clicks ending at --date counted by the popularity channel.", minimum=1
    )
    exclude_seen: bool = option(True, "Never recall an item the user engaged with (r > 0) up to --date.")
    bloom_fpr: float = option(
        0.01, "Target false-positive rate of each user's exposure Bloom filter.", exclusive_minimum=0
    )
    new_user_days: int = option(
        7,
        "A user whose first event (or, never seen, signup) is in this many days ending at --date is new: "
        "signed-up users without events get lists too, and the session channel serves the new ones.",
        minimum=1,
    )
    profile_per_key: int = option(
        50, "profile channel: the newest items each category, author or tag offers.", minimum=1
    )
    ann_check_users: int = option(
        200, "Users whose ANN lists are checked against exact search (0 = no check).", minimum=0
    )
    seed: int = option(7, "Seed of the ANN check's user sample.")


def validate(cfg: RecallConfig) -> dict[str, int]:
    unknown = sorted(set(cfg.channels) - set(CHANNELS))
    if unknown:
        raise UsageError(f"unknown --channels {unknown}; known {list(CHANNELS)}")
    if not 0 < cfg.bloom_fpr < 1:
        raise UsageError(f"--bloom-fpr must be in (0, 1), got {cfg.bloom_fpr}")
    for f in dataclasses.fields(cfg):
        low = f.metadata.get("minimum")
        if low is not None and getattr(cfg, f.name) < low:
            raise UsageError(f"--{f.name.replace('_', '-')} must be >= {low}, got {getattr(cfg, f.name)}")
    return parse_quotas(cfg.quota, cfg.default_quota)


def _version_as_of(lake, table: str, after: dt.date, method: str | None = None) -> int | None:
    """The Delta version `read_as_of(table, after)` resolves to (for `method`), for the ANN's identity."""
    for entry in lake.history(table):  # newest first
        if str(entry.get("date") or "9999") < str(after) and (
            method is None or entry.get("method") == method
        ):
            return entry["version"]
    return None


class _Run:
    """The state of one recall run: shared inputs built once, per-channel lists and measurements."""

    def __init__(self, cfg: RecallConfig, spark, lake, quotas: dict[str, int]):
        self.cfg, self.spark, self.lake, self.quotas = cfg, spark, lake, quotas
        self.day = cfg.date
        self.after = self.day + dt.timedelta(days=1)
        self.events = lake.read("events").filter(F.col("dt") <= F.lit(self.day))
        self.user_table = lake.read("users") if lake.exists("users") else None
        # Active users, and users who signed up but were never seen (user cold start: the cohort and
        # popularity channels still list them).
        self.new_users = new_users(self.events, self.user_table, self.day, cfg.new_user_days).cache()
        self.users = (
            active_users(self.events, self.day, cfg.active_days)
            .unionByName(self.new_users)
            .distinct()
            .cache()
        )
        self.seen = seen_pairs(self.events, self.day, self.users).cache() if cfg.exclude_seen else None
        self.history = recent_history(
            self.events, self.day, cfg.history_length, cfg.history_days, self.users
        ).cache()
        self.params = params_of(cfg, ann.AnnParams)
        self.stats: dict[str, dict] = {}

    # -- channels ------------------------------------------------------------------------------
    def item_to_item(self, name: str) -> DataFrame | None:
        sim = self.lake.read_as_of(SIMILARITY_TABLES[name], self.after)
        if sim is None:
            return None
        return builders.item_to_item_candidates(self.history, sim, self.quotas[name], self.seen)

    def usercf(self) -> DataFrame | None:
        sim = self.lake.read_as_of(SIMILARITY_TABLES["usercf"], self.after)
        if sim is None:
            return None
        inter = interest_weights(self.events, self.day, self.cfg.usercf_days).select(
            "user_id", "item_id", F.col("r").alias("weight")
        )
        return builders.user_to_user_candidates(self.users, sim, inter, self.quotas["usercf"], self.seen)

    def popularity(self) -> DataFrame:
        counts = click_counts(self.events, self.day, self.cfg.popularity_days)
        return builders.popularity_candidates(self.users, counts, self.quotas["popularity"], self.seen)

    def cohort(self) -> DataFrame | None:
        """Popularity within the user's region and age bucket (the users table's profile columns)."""
        if self.user_table is None:
            return None
        cohorts = user_cohorts(self.user_table)
        counts = cohort_click_counts(self.events, cohorts, self.day, self.cfg.popularity_days)
        users = self.users.join(cohorts, "user_id")
        return cohort_candidates(users, counts, self.quotas["cohort"], self.seen)

    def session(self) -> DataFrame | None:
        """New users' clicked items -> their `stream_cooccurrence` neighbours of the last new-user days."""
        if not self.lake.exists("stream_cooccurrence"):
            return None
        first = self.day - dt.timedelta(days=self.cfg.new_user_days - 1)
        rows = self.lake.read("stream_cooccurrence").filter(
            (F.col("dt") >= F.lit(first)) & (F.col("dt") <= F.lit(self.day))
        )
        if not rows.limit(1).count():
            return None
        seeds = self.history.join(self.new_users, "user_id", "left_semi")
        return builders.item_to_item_candidates(
            seeds, session_neighbours(rows), self.quotas["session"], self.seen
        )

    def profile(self) -> DataFrame | None:
        """Profile matches: `user_profiles` of D if written, else computed here with its defaults."""
        from recsys_spark.profiles.interests import end_of_day_seconds
        from recsys_spark.profiles.stored import profiles_as_of

        # Only items that exist by the end of D may be served on D + 1.
        end = F.timestamp_seconds(F.lit(end_of_day_seconds(self.day)))
        items = self.lake.read("items").filter(F.col("created_ts") < end)
        profiles, source = profiles_as_of(self.lake, self.day, self.events, items)
        self.stats.setdefault("profile", {})["source"] = source
        profiles = profiles.join(self.users, "user_id", "left_semi")
        keys = builders.item_keys(items)
        return builders.profile_candidates(
            profiles, keys, self.quotas["profile"], self.cfg.profile_per_key, self.seen
        )

    def embedding(self, method: str) -> DataFrame | None:
        table = self.lake.read_as_of("item_embeddings", self.after)
        version = (
            _version_as_of(self.lake, "item_embeddings", self.after, method) if table is not None else None
        )
        if version is None:
            return None
        items = table.filter(F.col("method") == F.lit(method)).select("item_id", "vector")
        items, key = self.with_new_items(method, items, f"v{version}")
        # A user who clicked a new item today has it in their history: its filled-in vector counts.
        users = history_vectors(self.history, items)
        return self.vector_channel(method, key, users, items, normalise_users=True)

    def two_tower(self) -> DataFrame | None:
        from recsys_spark.train.serving import serving_version, two_tower_item_vectors, two_tower_user_vectors

        version = serving_version(self.lake, self.day)
        if version is None:
            return None
        users = two_tower_user_vectors(self.spark, self.lake, self.day, self.users, version)
        # New items are not in this version's item vocabulary (the item tower would read them as the
        # unknown id with no category, author or stats): they get the neighbour average of its vectors.
        items, key = self.with_new_items("two_tower", two_tower_item_vectors(self.lake, version), version)
        # The model scores by raw dot product: keep the user vector's scale in the score.
        return self.vector_channel("two_tower", key, users, items, normalise_users=False)

    def with_new_items(self, name: str, items: DataFrame, version: str) -> tuple[DataFrame, str]:
        """`items` plus the neighbour-average vectors of D's new items, and the ANN index's key.

        The key is `version` when nothing was filled in, else `version-new-<digest of the added rows>`,
        so an index built over another day's (or another items table's) filled-in rows is never reused.
        """
        catalogue = self.lake.read("items") if self.lake.exists("items") else None
        if catalogue is None:
            return items, version
        filled = with_new_item_vectors(catalogue, items, self.day, self.cfg.new_item_days).cache()
        n, digest = filled_summary(filled)
        self.stats.setdefault(name, {})["new_item_vectors"] = n
        log.info(
            "recall %s: %s: %d new items (created in the %d days ending at %s) got neighbour-average vectors",
            self.day, name, n, self.cfg.new_item_days, self.day,
        )  # fmt: skip
        return filled, version if digest is None else f"{version}-new-{digest}"

    def vector_channel(self, name, version, users, items, normalise_users: bool) -> DataFrame:
        folder = ann.ensure_index(self.lake, name, version, items, self.params)
        queries = with_seen(users, self.seen).cache()
        found = ann.search(queries, folder, self.quotas[name], self.params, normalise_users).cache()
        self.stats.setdefault(name, {})["source"] = f"{name}/{version}"
        if self.cfg.ann_check_users > 0:
            sample = (
                queries.withColumn("_h", hash_uniform(self.cfg.seed, "user_id"))
                .orderBy("_h", "user_id")
                .limit(self.cfg.ann_check_users)
                .drop("_h")
            )
            local = sample.select("user_id", F.col("vector").cast("array<double>"), "seen").toPandas()
            lists = builders.topk_lists(found.join(sample.select("user_id"), "user_id"))
            catalogue = items.select("item_id", "vector").toPandas()
            value = ann.recall_against_exact(local, catalogue, lists, self.quotas[name], normalise_users)
            self.stats[name]["ann_recall"] = round(value, 4)
            self.stats[name]["ann_check_users"] = len(local)
            log.info(
                "recall %s: %s ANN recall@%d vs exact on %d users: %.4f",
                self.day, name, self.quotas[name], len(local), value,
            )  # fmt: skip
        return found

    def channel(self, name: str) -> DataFrame | None:
        if name in ("itemcf", "swing"):
            return self.item_to_item(name)
        if name == "usercf":
            return self.usercf()
        if name in WALK_METHODS:
            return self.embedding(name)
        if name == "two_tower":
            return self.two_tower()
        if name == "profile":
            return self.profile()
        if name == "cohort":
            return self.cohort()
        if name == "session":
            return self.session()
        return self.popularity()


def recall_candidates(cfg: RecallConfig, spark, lake) -> tuple[DataFrame | None, dict]:
    """The day's merged, filtered candidates (not yet written) and the run's measurements."""
    quotas = validate(cfg)
    run_ = _Run(cfg, spark, lake, quotas)
    started = time.time()
    n_users = run_.users.count()
    log.info("recall %s: %d active users (%d days)", cfg.date, n_users, cfg.active_days)
    lists: dict[str, DataFrame] = {}
    for name in [c for c in CHANNELS if c in cfg.channels]:
        t0 = time.time()
        frame = run_.channel(name)
        if frame is None:
            log.info(
                "recall %s: channel %s skipped: no artefact built by the end of %s", cfg.date, name, cfg.date
            )
            run_.stats[name] = {"skipped": True}
            continue
        frame = frame.cache()
        rows = frame.count()
        seconds = time.time() - t0
        run_.stats.setdefault(name, {}).update(
            {"rows": rows, "seconds": round(seconds, 1), "quota": quotas[name]}
        )
        log.info(
            "recall %s: channel %s: %d rows (quota %d) in %.1fs", cfg.date, name, rows, quotas[name], seconds
        )
        lists[name] = frame
    measurements: dict = {"users": n_users, "channels": run_.stats}
    if not lists:
        return None, measurements
    merged = merge_channels(lists)
    if cfg.max_exposures > 0:
        exposed = over_exposed(run_.events, cfg.date, cfg.exposure_days, cfg.max_exposures, run_.users)
        blooms = exposure_blooms(exposed, cfg.bloom_fpr).cache()
        flagged = flag_exposed(merged, blooms).join(
            exposed.select("user_id", "item_id", F.lit(True).alias("_exact")), ["user_id", "item_id"], "left"
        )
        flagged = flagged.withColumn("_exact", F.coalesce("_exact", F.lit(False))).cache()
        counts = flagged.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.col("_exact").cast("long")).alias("exact"),
            F.sum(F.col("bloom_hit").cast("long")).alias("hits"),
            F.sum((F.col("bloom_hit") & ~F.col("_exact")).cast("long")).alias("fp"),
            F.sum((~F.col("bloom_hit") & F.col("_exact")).cast("long")).alias("missed"),
        ).first()
        negatives = counts["rows"] - (counts["exact"] or 0)
        fpr = (counts["fp"] or 0) / negatives if negatives else 0.0
        if counts["missed"]:  # cannot happen for a Bloom filter: a bug, not data
            raise RuntimeError(f"exposure Bloom filter missed {counts['missed']} over-exposed pairs")
        measurements["exposure"] = {
            "candidates": counts["rows"],
            "over_exposed": counts["exact"] or 0,
            "dropped": counts["hits"] or 0,
            "false_positives": counts["fp"] or 0,
            "measured_fpr": round(fpr, 5),
            "target_fpr": cfg.bloom_fpr,
        }
        log.info(
            "recall %s: exposure filter dropped %d of %d candidates (%d over-exposed, %d Bloom false "
            "positives: measured FP rate %.4f, target %.4f)",
            cfg.date, counts["hits"] or 0, counts["rows"], counts["exact"] or 0, counts["fp"] or 0, fpr,
            cfg.bloom_fpr,
        )  # fmt: skip
        merged = flagged.filter(~F.col("bloom_hit")).drop("bloom_hit", "_exact")
    measurements["seconds"] = round(time.time() - started, 1)
    return merged.withColumn("dt", F.lit(cfg.date)), measurements


def run(cfg: RecallConfig, spark, lake) -> int:
    if cfg.date is None:
        raise UsageError("recall needs a date (the CLI fills in the latest day of events)")
    started = time.time()
    result, measurements = recall_candidates(cfg, spark, lake)
    if result is None:
        raise UsageError(f"recall {cfg.date}: no channel could run (no artefact built by the end of the day)")
    skipped = ("lake", "master", "engine", "log_level", "date", "gate")  # where and how, not what
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skipped}
    metadata = {
        "date": str(cfg.date),
        "options": json.dumps(options),
        "channels": json.dumps(measurements["channels"]),
        "exposure": json.dumps(measurements.get("exposure", {})),
        "ann_recall": json.dumps(
            {c: s["ann_recall"] for c, s in measurements["channels"].items() if "ann_recall" in s}
        ),
    }
    version = lake.overwrite_dates(TABLE, result, [cfg.date], metadata=metadata)
    rows = lake.read(TABLE, dates=[cfg.date]).count()
    ran = [c for c, s in measurements["channels"].items() if not s.get("skipped")]
    print(
        f"recall {cfg.date}: {measurements['users']} active users, channels {', '.join(ran)}; wrote {rows} "
        f"rows to {TABLE} version {version} in {time.time() - started:.1f}s"
    )
    return 0
