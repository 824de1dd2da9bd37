"""The one catalogue of recsys-spark: jobs, daily stages, tables, models, methods, exit codes, heartbeat.

Standard library only, and no package-relative imports: the Airflow DAGs run in Airflow's own
virtualenv, which cannot import `recsys_spark`, so they load this file by path
(`importlib.util.spec_from_file_location`). The library, the CLI, the DAGs and the tests all read
these names from here; a new stage, table or model is added here once.
"""

from __future__ import annotations

from typing import NamedTuple

# -- CLI exit codes ---------------------------------------------------------------------------------
EXIT_OK = 0  # success
EXIT_FAILED = 1  # the job ran and failed (a quality check, an exception): maybe transient
EXIT_USAGE = 2  # bad arguments or a missing input: the user can fix it, a retry cannot

# -- what the pipeline computes ---------------------------------------------------------------------
SIMILARITY_ALGOS = ("itemcf", "swing", "usercf")
WALK_METHODS = ("deepwalk", "node2vec")
MODELS = ("two_tower", "ranker")
LAUNCHERS = ("horovod", "torch", "local")  # how training ranks start (recsys_spark/distributed.py)
HISTORY_ENCODERS = ("mean", "gru", "attention")  # how the two-tower reads last-N clicks (train/history.py)
RANKER_ARCHS = ("fm", "wide_deep", "deepfm", "dcn_v2", "din", "dien")  # train --arch (train/interactions.py)
TASK_ARCHS = ("mmoe", "ple", "esmm")  # train --tasks-arch (train/multitask.py)
SIMILARITY_TABLES = {algo: f"{algo}_sim" for algo in SIMILARITY_ALGOS}

# -- jobs: `recsys-spark <job>` -> (module, config class, run function, one-line summary) ------------
JOBS: dict[str, tuple[str, str, str, str]] = {
    "generate": (
        "recsys_spark.generate",
        "GenerateConfig",
        "run",
        "Write synthetic events, items and users.",
    ),
    "ingest": (
        "recsys_spark.ingest.job",
        "IngestConfig",
        "run",
        "Load canonical, MovieLens or Taobao files.",
    ),
    "stats": (
        "recsys_spark.stats",
        "StatsConfig",
        "run",
        "User and item statistics over 1/7/30-day windows.",
    ),
    "similarity": (
        "recsys_spark.similarity.job",
        "SimilarityConfig",
        "run",
        "Item-item (itemcf, swing) or user-user (usercf) top-K similarity.",
    ),
    "graph": ("recsys_spark.graph.job", "GraphConfig", "run_graph", "Item graph from behaviour sequences."),
    "walks": ("recsys_spark.graph.job", "WalksConfig", "run_walks", "DeepWalk or Node2vec random walks."),
    "embed": ("recsys_spark.graph.embed", "EmbedConfig", "run", "Skip-gram item embeddings from the walks."),
    "samples": (
        "recsys_spark.samples.job",
        "SamplesConfig",
        "run",
        "Recall and ranking training sets for one day.",
    ),
    "train": (
        "recsys_spark.train.job",
        "TrainConfig",
        "run",
        "Train the two-tower or ranking model (Horovod), full or incremental.",
    ),
    "evaluate": (
        "recsys_spark.evaluate.job",
        "EvaluateConfig",
        "run",
        "Recall@K/NDCG@K/HitRate@K of every channel and AUC/uAUC/log-loss of the ranker.",
    ),
    "validate": (
        "recsys_spark.quality.validate",
        "ValidateConfig",
        "run",
        "Run a table's Great Expectations suite; Data Docs under _reports/quality/.",
    ),
    "publish": (
        "recsys_spark.publish",
        "PublishConfig",
        "run",
        "Mark a day's outputs as published after every check passed.",
    ),
    "stream": (
        "recsys_spark.streaming.job",
        "StreamConfig",
        "run",
        "Structured Streaming ingest of landed event files, exactly once.",
    ),
    "recall": (
        "recsys_spark.recommend.recall_job",
        "RecallConfig",
        "run",
        "Every recall channel's candidates for the active users, merged, seen and over-exposed items removed.",
    ),
    "rank": (
        "recsys_spark.recommend.rank_job",
        "RankConfig",
        "run",
        "Score day D's recall candidates with the published ranker; fused task scores.",
    ),
    "rerank": (
        "recsys_spark.recommend.rerank_job",
        "RerankConfig",
        "run",
        "Each user's top K of the ranked candidates, with MMR/DPP diversity and list rules.",
    ),
    "recommend": (
        "recsys_spark.recommend.job",
        "RecommendConfig",
        "run",
        "recall -> rank -> rerank for one day; --user U prints that user's published list.",
    ),
    "run-daily": ("recsys_spark.pipeline", "DailyConfig", "run", "The whole daily pipeline for one date."),
    "maintain": (
        "recsys_spark.lake.maintain",
        "MaintainConfig",
        "run",
        "Compact small files, vacuum past the retention, remove killed jobs' leftovers.",
    ),
    "profiles": (
        "recsys_spark.profiles.job",
        "ProfilesConfig",
        "run",
        "Per-user category, author and tag interest weights (time-decayed, TF-IDF tags).",
    ),
    "buckets": (
        "recsys_spark.experiments.buckets",
        "BucketsConfig",
        "run",
        "Hash every user into A/B buckets per experiment layer; variants from the experiments spec.",
    ),
    "business-metrics": (
        "recsys_spark.experiments.business",
        "BusinessMetricsConfig",
        "run",
        "DAU, retention, LT7, clicks, engaged time and coverage per day and A/B variant.",
    ),
    "tables": (
        "recsys_spark.lake.show",
        "TablesConfig",
        "run",
        "List the lake's tables, versions and row counts.",
    ),
}

# -- tables -----------------------------------------------------------------------------------------
# How "table T holds day D" is decided (publish): the kinds of the daily outputs.
DATED = "dated"  # a `dt` partition per day: holds D when its dt = D partition exists
WHOLE = "whole"  # replaced whole every run: holds D when its latest commit's "date" is D
PER_METHOD = "per_method"  # one partition per walk method: the newest commit of each method is of D
PER_VERSION = "per_version"  # one partition per model version: recorded by its Delta version only

INPUT_TABLES = ("events", "items", "users")  # what ingest/generate write; validated before a day runs
SIDE_TABLES = ("quarantine", "truth_items", "truth_users", "stream_counters", "stream_cooccurrence")
# Interest profiles, A/B assignment and business metrics: each written by its own daily stage.
USER_PROFILES, AB_BUCKETS, BUSINESS_METRICS = "user_profiles", "ab_buckets", "business_metrics"
# Under the lake: `<ANN_INDEX_DIR>/<channel>/<version>/` holds one vector version's ANN index (a cache:
# recall rebuilds a missing one), pruned by `maintain` once untouched for the retention.
ANN_INDEX_DIR = ("_models", "ann")


class Stage(NamedTuple):
    """One step of the daily run: `recsys-spark <job> [--<key> <value> for key, value in args]`."""

    name: str  # run-daily --skip name == the Airflow task id ("group.task" inside a task group)
    job: str  # the JOBS entry it runs
    args: tuple[tuple[str, str], ...]  # the options that pick this stage's variant, e.g. (("algo", "swing"),)
    writes: tuple[tuple[str, str], ...]  # (table, kind) of every table it writes
    alias: str  # its name in run-daily before 2026-12 (still accepted by --skip, with a warning)

    @property
    def group(self) -> str:
        """The Airflow task group ("similarity" of "similarity.swing"); the name itself outside a group."""
        return self.name.split(".", 1)[0]

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(table for table, _ in self.writes)


DAILY_STAGES: tuple[Stage, ...] = (
    Stage(
        "stats", "stats", (), (("daily_counts", DATED), ("user_stats", DATED), ("item_stats", DATED)), "stats"
    ),
    # Interest profiles of D: the profile recall channel of D and the ranker features of D + 1 read them.
    Stage("profiles", "profiles", (), ((USER_PROFILES, DATED),), "profiles"),
    *(
        Stage(f"similarity.{a}", "similarity", (("algo", a),), ((SIMILARITY_TABLES[a], WHOLE),), a)
        for a in SIMILARITY_ALGOS
    ),
    Stage("graph", "graph", (), (("item_graph", WHOLE),), "graph"),
    *(
        Stage(f"walks.{m}", "walks", (("method", m),), (("walks", PER_METHOD),), f"{m}-walks")
        for m in WALK_METHODS
    ),
    *(
        Stage(f"embeddings.{m}", "embed", (("method", m),), (("item_embeddings", PER_METHOD),), f"{m}-embed")
        for m in WALK_METHODS
    ),
    Stage("samples", "samples", (), (("recall_samples", DATED), ("rank_samples", DATED)), "samples"),
    Stage(
        "train.two_tower",
        "train",
        (("model", "two_tower"), ("mode", "full")),
        (("item_vectors", PER_VERSION),),
        "two_tower",
    ),
    Stage("train.ranker", "train", (("model", "ranker"), ("mode", "full")), (), "ranker"),
    # The A/B assignment the lists of D are served under (rerank/evaluate --variant-by read it).
    Stage("buckets", "buckets", (), ((AB_BUCKETS, WHOLE),), "buckets"),
    # The lists of D (served on D+1) from D's tables and the models published by the end of D.
    Stage(
        "recommend",
        "recommend",
        (),
        (("recall_candidates", DATED), ("ranked_candidates", DATED), ("recommendations", DATED)),
        "recommend",
    ),
    Stage("evaluate", "evaluate", (), (), "evaluate"),
    # DAU, clicks, engaged time, coverage of D, and the retention / LT7 of the week before as it fills in.
    Stage("business_metrics", "business-metrics", (), ((BUSINESS_METRICS, DATED),), "business_metrics"),
)
STAGE_NAMES = tuple(s.name for s in DAILY_STAGES)
# Daily DAG tasks after publish that are no run-daily stage: lake upkeep (docs/lake.md), task id = job.
UPKEEP_JOBS = ("maintain",)
STAGE_ALIASES = {s.alias: s.name for s in DAILY_STAGES if s.alias != s.name}  # deprecated --skip names
# The Airflow task groups (and tasks outside a group) holding the stages, in order.
STAGE_GROUPS = tuple(dict.fromkeys(s.group for s in DAILY_STAGES))

# Every output of the daily run with its kind, in stage order.
OUTPUT_KINDS: dict[str, str] = {table: kind for s in DAILY_STAGES for table, kind in s.writes}
DATED_TABLES = tuple(t for t, k in OUTPUT_KINDS.items() if k == DATED)
WHOLE_TABLES = tuple(t for t, k in OUTPUT_KINDS.items() if k == WHOLE)
METHOD_TABLES = tuple(t for t, k in OUTPUT_KINDS.items() if k == PER_METHOD)
# The tables publish requires to hold day D (item_vectors is recorded by version, not required).
DAILY_TABLES = tuple(t for t, k in OUTPUT_KINDS.items() if k != PER_VERSION)
# What a daily manifest names (and the DAG emits as Assets, and validates before publishing).
PUBLISHED_TABLES = tuple(OUTPUT_KINDS)
VALIDATE_INPUTS = INPUT_TABLES
VALIDATE_OUTPUTS = PUBLISHED_TABLES
# Every table of the lake: each has a schema in schemas/tables/ and a suite in schemas/expectations/.
TABLES = (*INPUT_TABLES, *PUBLISHED_TABLES, *SIDE_TABLES)


def stage_named(name: str) -> Stage:
    for stage in DAILY_STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage {name!r}; stages are {list(STAGE_NAMES)}")


def skip_names(name: str) -> tuple[str, ...]:
    """The names that skip task or stage `name`: itself and its group ("similarity" skips "similarity.swing")."""
    group = name.split(".", 1)[0]
    return (group, name) if group != name else (name,)


def is_skipped(name: str, skip: set[str] | list[str] | tuple[str, ...]) -> bool:
    return any(n in skip for n in skip_names(name))


# -- the stream's heartbeat -------------------------------------------------------------------------
# `<lake>/_checkpoints/stream/heartbeat.json`, rewritten atomically by `recsys-spark stream`:
# {"updated_at": ISO-8601 UTC, "pid": N, "state": one of STREAM_STATES, ...more counters}. A reader
# treats a missing "state" as running (the first contract had only updated_at and pid).
HEARTBEAT_PATH = ("_checkpoints", "stream", "heartbeat.json")  # relative to the lake root
HEARTBEAT_FIELDS = ("updated_at", "pid", "state")
STARTING, RUNNING, STOPPED, FAILED = "starting", "running", "stopped", "failed"
STREAM_STATES = (STARTING, RUNNING, STOPPED, FAILED)  # stopped: a --once run or a clean stop ended it
