"""`recsys-spark train --model two_tower|ranker --mode full|incremental`: train and publish a model version.

- `full` (daily): warm-starts from the newest full version of an earlier day (its vocabularies are
  kept and extended), trains `--epochs` (default 1) over day D's shuffled samples (with nothing to
  start from: `--cold-start-epochs` over the `--cold-start-days` window), and publishes
  `full-D`: checkpoint, TorchScript export (user tower / scorer), item vectors into `item_vectors`,
  then switches the registry pointer (compare-and-swap, train/registry.py). The incremental slot is
  dropped: the next incremental starts from it. A backfill (a day before the current full) publishes
  its version and leaves `serving` and everything the pointer references alone.
- `incremental` (every few minutes): builds samples from the events newer than the last update's
  watermark, trains only the ID embeddings (dense layers frozen; new users and items get rows), and
  publishes to the single incremental slot on top of the current full version; if another publish
  changed the full version or the slot meanwhile, it publishes nothing and exits 1 naming the conflict.

Spark prepares everything (vocabularies, encoded Parquet store, item features); the PyTorch ranks
read the store through Petastorm and are started by `distributed.py` (Horovod by default).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.catalog import HISTORY_ENCODERS, LAUNCHERS, MODELS, RANKER_ARCHS, TASK_ARCHS
from recsys_spark.config import GatedConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.samples.features import ITEM_DENSE, PAIR_DENSE, USER_DENSE, features_day, item_features
from recsys_spark.samples.job import SamplesConfig, build_samples, stats_of, write_samples
from recsys_spark.train.registry import (
    FULL,
    INCREMENTAL,
    Registry,
    RegistryConflict,
    full_update,
    incremental_update,
)

log = logging.getLogger(__name__)

SAMPLES_TABLE = {"two_tower": "recall_samples", "ranker": "rank_samples"}
# Stores whose batches keep a user's rows together under --own-negatives: the two-tower's loss then
# pairs a user with its own negatives (train/two_tower.py); the ranker's rows stand alone.
USER_GROUPED = {"two_tower": "user_idx"}
TRAINING_OPTIONS = (
    "epochs", "batch_size", "learning_rate", "dim", "out_dim", "temperature", "history_length",
    "cold_start_days", "cold_start_epochs", "history_encoder", "uniform_negatives", "arch", "tasks_arch", "negative_keep", "own_negatives", "seed",
)  # fmt: skip


@dataclass
class TrainConfig(GatedConfig):
    """Trains on recall_samples (two_tower) or rank_samples (ranker) of --date and publishes the model
    under <lake>/_models/<model>/ (LATEST.json points at the serving version)."""

    model: str = option("two_tower", "Model to train.", choices=list(MODELS))
    mode: str = option(
        "full",
        "full: warm start + one pass over the day; incremental: ID embeddings on events since the last update.",
        choices=["full", "incremental"],
    )
    np: int = option(1, "Training processes (data-parallel ranks).", minimum=1)
    launcher: str = option(
        "horovod",
        "horovod (Gloo), torch (TorchDistributor), or local (one process, no launcher).",
        choices=list(LAUNCHERS),
    )
    epochs: int = option(1, "Passes over the training data (the daily full update makes one).", minimum=1)
    batch_size: int = option(256, "Rows per step and rank.", minimum=1)
    learning_rate: float = option(0.005, "Adam learning rate.", exclusive_minimum=0)
    dim: int = option(
        0,
        "Size of the id embeddings (two_tower id_dim, ranker emb_dim). 0 = the model's measured default: "
        "64 for the two-tower, 32 for the ranker (docs/training.md); a warm start keeps its base's.",
        minimum=0,
        aliases=["embedding_dim"],
    )
    out_dim: int = option(32, "Two-tower output vector size.", minimum=1)
    temperature: float = option(0.1, "Two-tower softmax temperature.", exclusive_minimum=0)
    tasks: list[str] = option(["click", "like"], "Ranker tasks (labels of rank_samples).")
    arch: str = option(
        "dcn_v2",
        "Ranker history reader and feature crossing: fm, wide_deep, deepfm (mean-pooled history), dcn_v2 "
        "(DIN attention, cross network + deep), din, dien (docs/models.md); a warm start keeps its base's.",
        choices=list(RANKER_ARCHS),
    )
    negative_keep: float = option(
        1.0,
        "Ranker: share r of the impressions with no positive label kept in the training store (hashed per "
        "row); the model adds log r to its logits, i.e. p = q / (q + (1 - q) / r), so it serves calibrated "
        "probabilities (a warm start keeps its base's r).",
        exclusive_minimum=0,
        maximum=1,
    )
    tasks_arch: str = option(
        "mmoe",
        "Ranker task heads: mmoe, ple, or esmm (CTR and CTCVR over impressions: --tasks click <conversion>).",
        choices=list(TASK_ARCHS),
    )
    # The same name as samples/evaluate --history-length (the N of the last-N clicks); --hist-len was its old name.
    history_length: int = option(
        20, "Behaviour-sequence length fed to the models.", minimum=1, aliases=["hist_len"]
    )
    warm_start: bool = option(True, "Full mode: start from the newest full version of an earlier day.")
    cold_start_days: int = option(
        30,
        "Full mode with nothing to warm-start from (the first run, or --warm-start false): train on the "
        "samples of every event day of the N days ending --date, first writing those of days that have "
        "none as `samples` would (each with its own day's features), not on --date alone (1 = --date only).",
        minimum=1,
    )
    cold_start_epochs: int = option(
        0,
        "Full mode with nothing to warm-start from: passes over the window's samples (--epochs is the "
        "daily warm start's). 0 = the model's measured default: 8 for the two-tower, --epochs for the "
        "ranker (more passes over the window overfit its id embeddings; docs/training.md).",
        minimum=0,
    )
    keep_versions: int = option(
        7, "Full versions (and their item_vectors) kept; older ones are deleted.", minimum=1
    )
    files: int = option(0, "Parquet files of the training store (0 = 4 per rank, at least 8).")
    seed: int = option(42, "Random seed (initialisation, shuffling).")
    history_encoder: str = option(
        "mean",
        "Two-tower: how the user tower reads the last-N clicks: mean (order-free), gru (oldest to newest), "
        "or attention (learned query, recency positions); a warm start keeps its base's.",
        choices=list(HISTORY_ENCODERS),
    )
    uniform_negatives: int = option(
        0,
        "Two-tower mixed negatives: items drawn uniformly from the catalogue per step and rank, added to "
        "the batch's candidates (in-batch items with logQ, the samples' easy and hard negatives, and "
        "these; docs/training.md).",
        minimum=0,
    )
    own_negatives: bool = option(
        False,
        "Two-tower: a user's own negatives keep their full logit (no logQ) in its softmax, and the store "
        "groups a user's rows into the same batches (docs/models.md; measured no better yet).",
    )


def validate(cfg: TrainConfig) -> None:
    for f in dataclasses.fields(cfg):  # the bounds the DAG params carry too
        flag, value = f"--{f.name.replace('_', '-')}", getattr(cfg, f.name)
        if "minimum" in f.metadata and value < f.metadata["minimum"]:
            raise UsageError(f"{flag} must be >= {f.metadata['minimum']}")
        if "maximum" in f.metadata and value > f.metadata["maximum"]:
            raise UsageError(f"{flag} must be <= {f.metadata['maximum']}, got {value}")
    if cfg.learning_rate <= 0 or cfg.temperature <= 0:
        raise UsageError("--learning-rate and --temperature must be > 0")
    if cfg.negative_keep <= 0:
        raise UsageError(f"--negative-keep must be > 0, got {cfg.negative_keep}")
    unknown = set(cfg.tasks) - {"click", "like", "share", "comment", "follow", "purchase"}
    if cfg.model == "ranker" and (not cfg.tasks or unknown):
        raise UsageError(f"--tasks must name rank_samples labels (click, like, share...), got {cfg.tasks}")
    if (
        cfg.model == "ranker"
        and cfg.tasks_arch == "esmm"
        and (len(cfg.tasks) != 2 or cfg.tasks[0] != "click")
    ):
        raise UsageError(
            f"--tasks-arch esmm needs --tasks click <conversion> (e.g. click like), got {cfg.tasks}"
        )


# The id-embedding size `--dim 0` means, per model: on the 5,000-user bench lake 64 took the two-tower
# from 0.898 to 0.958 of ItemCF's recall@50 (128: 0.955); the ranker's 32 was not swept.
MODEL_DIM = {"two_tower": 64, "ranker": 32}


def embedding_dim(cfg: TrainConfig) -> int:
    """The id-embedding size: --dim, or the model's default when 0."""
    return cfg.dim or MODEL_DIM[cfg.model]


def _hyper(cfg: TrainConfig) -> dict:
    if cfg.model == "two_tower":
        return {
            "id_dim": embedding_dim(cfg),
            "out_dim": cfg.out_dim,
            "temperature": cfg.temperature,
            "history_encoder": cfg.history_encoder,
        }
    return {
        "emb_dim": embedding_dim(cfg),
        "tasks": tuple(cfg.tasks),
        "arch": cfg.arch,
        "tasks_arch": cfg.tasks_arch,
        "negative_keep": cfg.negative_keep,
    }


def _base_header(base_url: str | None) -> dict:
    """The warm-start base checkpoint's `sizes` and `hyper` (empty without a base), read once per run."""
    if not base_url:
        return {}
    import torch

    from recsys_spark.lake.commit import read_bytes

    base = torch.load(read_bytes(f"{base_url}/checkpoint.pt"), map_location="cpu", weights_only=True)
    return {"sizes": dict(base["sizes"]), "hyper": dict(base.get("hyper", {}))}


def keep_negatives(encoded: DataFrame, tasks: list[str], keep: float, seed: int) -> DataFrame:
    """The rows with a positive label in any task, and a hashed share `keep` of the others.

    Parameters
    ----------
    encoded : DataFrame
        Encoded ranking rows with `row_id` and `label_<task>` per task.
    tasks : list of str
        The tasks.
    keep : float
        Share r in (0, 1] of the all-negative rows kept (1 keeps every row).
    seed : int
        Salt of the row hash: the same seed keeps the same rows.

    Returns
    -------
    DataFrame
        The kept rows.

    References
    ----------
    X. He et al. "Practical Lessons from Predicting Clicks on Ads at Facebook." ADKDD 2014
    (negative down-sampling and the recalibration q / (q + (1 − q) / r)).
    """
    if keep >= 1:
        return encoded
    positive = None
    for task in tasks:
        is_pos = F.col(f"label_{task}") > 0
        positive = is_pos if positive is None else positive | is_pos
    draw = F.pmod(F.xxhash64(F.lit(seed), F.lit("negative-keep"), F.col("row_id")), F.lit(1_000_000)) / 1e6
    return encoded.filter(positive | (draw < F.lit(keep)))


def _vocabularies(spark, lake, samples: DataFrame, base_url: str | None) -> dict[str, DataFrame]:
    """Base vocabularies (if warm) extended with every id of the samples and the profiles."""
    from recsys_spark.train.vocab import FIELDS, extend_vocab, read_vocabs

    old = read_vocabs(spark, f"{base_url}/vocab") if base_url else {}
    items, users = lake.read("items"), lake.read("users")
    sources = {
        "user": samples.select("user_id").unionByName(users.select("user_id")),
        "item": samples.select("item_id")
        .unionByName(samples.select(F.explode("hist").alias("item_id")))
        .unionByName(items.select("item_id")),
        "category": items.select("category"),
        "author": items.select("author_id"),
        "gender": users.select("gender"),
        "age": users.select("age_bucket"),
        "region": users.select("region"),
    }
    return {f: extend_vocab(spark, old.get(f), sources[f].toDF("id")) for f in FIELDS}


def _pair_dense_dim(cfg: TrainConfig, base: dict) -> int:
    """The ranker's `pair_dense` width: `len(PAIR_DENSE)`, or the warm-start base's own width.

    A model's input widths cannot change when it is grown, so a base saved before the pair features
    existed (width 0), or before some were appended, keeps training and serving on the prefix it
    knows; `--warm-start false` starts a model that reads them all.
    """
    if cfg.model != "ranker":
        return 0
    if not base:
        return len(PAIR_DENSE)
    width = int(base["sizes"].get("pair_dense_dim", 0))
    if width != len(PAIR_DENSE):
        log.warning(
            "train ranker: the warm-start base has %d pair_dense inputs, the samples %d; it keeps its "
            "own prefix (train with --warm-start false once to use all the pair features)",
            width,
            len(PAIR_DENSE),
        )
    return width


def prepare_training(
    cfg: TrainConfig,
    spark,
    lake,
    samples: DataFrame,
    day: dt.date,
    base_url: str | None,
    staging: str,
    scratch: str,
) -> dict:
    """Vocabularies (into `staging`), the encoded store and item tables (into `scratch`); returns the
    spec the ranks train from (`train/loop.py`)."""
    from recsys_spark.train.data import encode_samples, item_frequencies, item_table, write_store
    from recsys_spark.train.vocab import read_vocabs, write_vocabs

    sizes_by_field = write_vocabs(_vocabularies(spark, lake, samples, base_url), f"{staging}/vocab")
    vocabs = read_vocabs(spark, f"{staging}/vocab")
    store, items_url, freq_url = f"{scratch}/store", f"{scratch}/items", f"{scratch}/freq"
    encoded = encode_samples(samples, vocabs, cfg.model, cfg.history_length)
    base = _base_header(base_url) if cfg.model == "ranker" else {}
    if cfg.model == "ranker":
        # A base's logits carry its own log r: the rows it keeps learning from are sampled alike.
        keep = float(base["hyper"].get("negative_keep", 1.0)) if base else cfg.negative_keep
        if keep != cfg.negative_keep:
            log.warning(
                "train ranker: --negative-keep %s ignored, the base keeps %s", cfg.negative_keep, keep
            )
        encoded = keep_negatives(encoded, cfg.tasks, keep, cfg.seed)
    group_by = USER_GROUPED.get(cfg.model) if cfg.own_negatives else None
    rows = write_store(encoded, store, cfg.files or max(8, 4 * cfg.np), cfg.seed, group_by)
    feats = item_features(lake.read("items"), stats_of(lake, "item_stats", features_day(day)), day)
    item_table(feats, vocabs).coalesce(1).write.parquet(items_url)
    item_frequencies(spark.read.parquet(store)).coalesce(1).write.parquet(freq_url)
    sizes = {
        "n_users": sizes_by_field["user"],
        "n_items": sizes_by_field["item"],
        "n_categories": sizes_by_field["category"],
        "n_authors": sizes_by_field["author"],
        "n_genders": sizes_by_field["gender"],
        "n_ages": sizes_by_field["age"],
        "n_regions": sizes_by_field["region"],
        "user_dense_dim": len(USER_DENSE),
        "item_dense_dim": len(ITEM_DENSE),
        "hist_len": cfg.history_length,
        "pair_dense_dim": _pair_dense_dim(cfg, base),
    }
    log.info(
        "train %s %s: %d rows, vocabularies %s, %d rank(s) via %s",
        cfg.model,
        cfg.mode,
        rows,
        sizes_by_field,
        cfg.np,
        cfg.launcher,
    )
    return {
        "kind": cfg.model,
        "mode": cfg.mode,
        "sizes": sizes,
        "hyper": _hyper(cfg),
        "seed": cfg.seed,
        "base_checkpoint": f"{base_url}/checkpoint.pt" if base_url else None,
        "store_url": store,
        "items_url": items_url,
        "freq_url": freq_url,
        "rows": rows,
        "out_dir": staging,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "group_by": group_by,
        "own_negatives": bool(group_by),
        "uniform_negatives": cfg.uniform_negatives if cfg.model == "two_tower" else 0,
    }


def train_version(
    cfg: TrainConfig, spark, lake, samples: DataFrame, day: dt.date, base_url: str | None, staging: str
):
    """Prepare the data, run the ranks; returns (rank results, store rows, vocabulary sizes)."""
    from recsys_spark.distributed import launch
    from recsys_spark.lake.commit import remove_dir
    from recsys_spark.train.loop import train_model

    scratch = lake.scratch_dir()
    try:
        spec = prepare_training(cfg, spark, lake, samples, day, base_url, staging, scratch)
        results = launch(train_model, {"spec": spec}, num_proc=cfg.np, launcher=cfg.launcher)
    finally:
        remove_dir(scratch)
    return results, spec["rows"], spec["sizes"]


def _publish_vectors(spark, lake, folder: str, version: str) -> int | None:
    """Commit the rows of `version` as their own `item_vectors` partition; other versions' rows stay."""
    vectors = spark.read.parquet(f"{folder}/item_vectors.parquet")
    vocab = spark.read.parquet(f"{folder}/vocab/item").select(
        F.col("id").alias("item_id"), F.col("idx").alias("item_idx")
    )
    rows = vectors.join(vocab, "item_idx").select("item_id", F.lit(version).alias("model_version"), "vector")
    return lake.overwrite_partitions(
        "item_vectors",
        rows,
        "model_version",
        [version],
        metadata={"recsys.job": "train", "recsys.model_version": version},
    )


@dataclass
class LakeItemVectors:
    """The registry's view of the `item_vectors` table (a `VectorStore` of train/registry.py)."""

    spark: object
    lake: object

    def commit(self, version: str, folder_url: str) -> None:
        _publish_vectors(self.spark, self.lake, folder_url, version)

    def versions(self) -> set[str]:
        if not self.lake.exists("item_vectors"):
            return set()
        # The partition column only: one row per model version, bounded by the versions, not the data.
        rows = self.lake.read("item_vectors").select("model_version").distinct().collect()
        return {r[0] for r in rows}

    def drop(self, versions: list[str]) -> None:
        if not versions or not self.lake.exists("item_vectors"):
            return
        meta = {"recsys.job": "train", "recsys.dropped_versions": ",".join(versions)}
        self.lake.drop_partitions("item_vectors", "model_version", versions, metadata=meta)


def publish_full(
    spark, lake, registry: Registry, staging: str, entry: dict, keep_versions: int, vectors: bool
) -> dict:
    """Publish a full version: it serves unless a newer full is in (a backfill switches nothing and
    drops nothing a pointer references). Returns the pointer in force afterwards."""
    store = LakeItemVectors(spark, lake) if vectors else None
    return registry.publish(staging, FULL, entry["version"], full_update(entry), store, keep_versions)


def publish_incremental(
    spark,
    lake,
    registry: Registry,
    staging: str,
    entry: dict,
    latest: dict,
    vectors: bool,
    keep_versions: int = 7,
) -> dict:
    """Publish an incremental trained from the pointer `latest`; RegistryConflict if its full or the
    incremental slot changed since (switching would roll another publish back)."""
    store = LakeItemVectors(spark, lake) if vectors else None
    update = incremental_update(entry, latest)
    return registry.publish(staging, INCREMENTAL, entry["version"], update, store, keep_versions)


def _write_manifest(staging: str, manifest: dict) -> None:
    from recsys_spark.lake.commit import filesystem

    fs, path = filesystem(staging)
    with fs.open_output_stream(f"{path}/manifest.json") as stream:
        stream.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode())


def _summarise(cfg: TrainConfig, version: str, results: list[dict], rows: int, seconds: float) -> dict:
    first = results[0]
    return {
        "version": version,
        "model": cfg.model,
        "mode": cfg.mode,
        "rows": rows,
        "ranks": first["size"],
        "backend": first["backend"],
        "mean_loss": first["mean_loss"],
        "steps": first["steps"],
        "param_divergence": first["param_divergence"],
        "train_seconds": max(r["seconds"] for r in results),
        "seconds": seconds,
        "epochs": loss_curve(results),
        # What a sweep varies, so a manifest says how its version was trained.
        "options": {name: getattr(cfg, name) for name in TRAINING_OPTIONS} | {"dim": embedding_dim(cfg)},
    }


def loss_curve(results: list[dict]) -> list[dict]:
    """Per epoch over all ranks: rows, row-weighted mean loss, rows/s (rows over the slowest rank's time).

    Parameters
    ----------
    results : list of dict
        The ranks' results (`train.loop.train_model`), each with its `epochs` entries.

    Returns
    -------
    list of dict
        `{"epoch", "rows", "mean_loss", "rows_per_second"}` per epoch.
    """
    curve = []
    for entries in zip(*(r.get("epochs") or [] for r in results), strict=False):
        rows = sum(e["rows"] for e in entries)
        seconds = max(
            (e["rows"] / e["rows_per_second"] for e in entries if e["rows_per_second"]), default=0.0
        )
        loss = sum(e["mean_loss"] * e["rows"] for e in entries) / max(rows, 1)
        curve.append(
            {
                "epoch": entries[0]["epoch"],
                "rows": rows,
                "mean_loss": loss,
                "rows_per_second": rows / seconds if seconds else 0.0,
            }
        )
    return curve


def cold_start_samples(cfg: TrainConfig, lake, table: str, day: dt.date) -> tuple[DataFrame, dt.date]:
    """The samples of every event day of the `--cold-start-days` window ending `day`.

    A model with no base learns from the whole window, not from one day: the daily full update only
    adds a day to what the model already knows, and a first model trained on one day barely beats
    popularity (issue 18: 1,639 rows of a 75,000-rating history). Days whose samples the lake holds
    are read; the others are written first, one day at a time, exactly as `samples --date d` writes
    them (`samples.job.write_samples`: features as of the day before each, gated commits), so the
    other model's cold start and any later run find them, and each day's plan stays one day's size.
    The window's days are a handful of rows; the samples stay distributed. Returns the samples and
    the window's first day.
    """
    first = day - dt.timedelta(days=cfg.cold_start_days - 1)
    in_window = (F.col("dt") >= F.lit(first)) & (F.col("dt") <= F.lit(day))
    stored = lake.read(table).filter(in_window)
    have = {r[0] for r in stored.select("dt").distinct().collect()}
    events = lake.read("events").filter(in_window)
    missing = sorted({r[0] for r in events.select("dt").distinct().collect()} - have)
    log.info(
        "train %s full %s: cold start over %s..%s: %d day(s) of %s stored, %d built",
        cfg.model, day, first, day, len(have), table, len(missing),
    )  # fmt: skip
    if missing and not lake.read("events").filter(F.col("dt") < F.lit(missing[0])).limit(1).count():
        # The lake's first day: nothing before it to draw negatives or histories from.
        log.info(
            "train %s full %s: cold start: %s is the first event day, no samples", cfg.model, day, missing[0]
        )
        missing = missing[1:]
    # Hard negatives from Swing where the lake has it, as the incremental update builds its samples.
    channel = "swing" if lake.exists("swing_sim") else "none"
    for n, missing_day in enumerate(missing, 1):
        samples_cfg = SamplesConfig(
            date=missing_day, history_length=cfg.history_length, hard_negative_channel=channel
        )
        write_samples(lake, missing_day, samples_cfg, job="train")
        log.info(
            "train %s full %s: cold start: samples of %s written (%d/%d)",
            cfg.model,
            day,
            missing_day,
            n,
            len(missing),
        )
    return lake.read(table).filter(in_window), first


# Passes of a run with nothing to warm-start from, per model, when --cold-start-epochs is 0 (None:
# --epochs). Measured with benchmarks/sweep_models.py on the 5,000-user bench lake: the two-tower's
# recall@50 went from 0.845 to 0.921 of ItemCF's with 8 passes over the window instead of 3, while
# 8 passes took the ranker's click AUC below one pass's (its id embeddings memorise the window).
COLD_START_EPOCHS = {"two_tower": 8, "ranker": None}


def cold_start_epochs(cfg: TrainConfig) -> int:
    """The passes over the cold-start window: --cold-start-epochs, or the model's default when 0."""
    return cfg.cold_start_epochs or COLD_START_EPOCHS[cfg.model] or cfg.epochs


def run_full(cfg: TrainConfig, spark, lake, registry: Registry) -> int:
    day, started = cfg.date, time.time()
    table = SAMPLES_TABLE[cfg.model]
    if not lake.exists(table):
        raise UsageError(f"{table} does not exist: run `recsys-spark samples --date {day}` first")
    samples = lake.read(table).filter(F.col("dt") == F.lit(day))
    if samples.limit(1).count() == 0:
        raise UsageError(f"{table} has no rows for {day}: run `recsys-spark samples --date {day}` first")
    base = registry.full_before(day) if cfg.warm_start else None
    base_url = registry.version_url(FULL, base) if base else None
    version = f"full-{day}"
    staging = registry.staging_url()
    log.info("train %s full %s: %s", cfg.model, day, f"warm start from {base}" if base else "cold start")
    first = day
    if base is None:
        if cfg.cold_start_days > 1:
            samples, first = cold_start_samples(cfg, lake, table, day)
        cfg = dataclasses.replace(cfg, epochs=cold_start_epochs(cfg))
    window = [str(first), str(day)]
    try:
        results, rows, sizes = train_version(cfg, spark, lake, samples, day, base_url, staging)
        watermark = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
        summary = {
            **_summarise(cfg, version, results, rows, time.time() - started),
            "date": str(day),
            "base": base,
            "sample_window": window,  # first and last day whose samples it trained on
            "sizes": sizes,
            "watermark": watermark.isoformat(),
        }
        _write_manifest(staging, summary)
        # `id` is unique per publish: an incremental trained on a re-run's predecessor sees the change.
        entry = {
            "version": version,
            "date": str(day),
            "watermark": watermark.isoformat(),
            "base": base,
            "id": uuid.uuid4().hex,
        }
        pointer = publish_full(
            spark, lake, registry, staging, entry, cfg.keep_versions, cfg.model == "two_tower"
        )
    except RegistryConflict as exc:
        print(f"train {cfg.model} full: NOT published: {exc}", file=sys.stderr)
        return 1
    finally:
        from recsys_spark.lake.commit import remove_dir

        remove_dir(staging)
    _print(summary, results)
    if pointer.get("serving") != version and (pointer.get("full") or {}).get("version") != version:
        print(f"  backfill: {version} published, {pointer.get('serving')} stays the serving version")
    return 0


def run_incremental(cfg: TrainConfig, spark, lake, registry: Registry) -> int:
    started = time.time()
    latest = registry.latest()
    if not latest.get("full"):
        raise UsageError(
            f"no full {cfg.model} version is published: run `train --model {cfg.model} --mode full` first"
        )
    full, inc = latest["full"], latest.get("incremental")
    if inc and inc.get("base") == full["version"]:
        base_slot, base, watermark = INCREMENTAL, inc["version"], inc["watermark"]
    else:
        base_slot, base, watermark = FULL, full["version"], full["watermark"]
    since = dt.datetime.fromisoformat(watermark)
    events = lake.read("events").filter(
        (F.col("dt") >= F.lit(since.date())) & (F.col("dt") <= F.lit(cfg.date))
    )
    period = events.filter(F.col("ts") >= F.lit(since)).cache()
    new_watermark = period.agg(F.max("ts")).first()[0]
    if new_watermark is None:
        print(f"train {cfg.model} incremental: no events since {since}; {base} stays the serving version")
        return 0
    # Hard negatives from Swing when the daily run has built it; the update must not wait for it.
    channel = "swing" if lake.exists("swing_sim") else "none"
    samples_cfg = SamplesConfig(
        date=cfg.date, history_length=cfg.history_length, hard_negative_channel=channel
    )
    recall, rank = build_samples(lake, cfg.date, samples_cfg, period_events=period)
    samples = recall if cfg.model == "two_tower" else rank
    # Past the highest sequence number in use (folders of superseded updates are deleted, so no count).
    taken = [v for v in registry.versions(INCREMENTAL) if v.startswith(f"inc-{cfg.date}-")]
    if inc and inc["version"].startswith(f"inc-{cfg.date}-"):
        taken.append(inc["version"])
    seq = 1 + max((int(v.rsplit("-", 1)[1]) for v in taken), default=0)
    version = f"inc-{cfg.date}-{seq:03d}"
    staging = registry.staging_url()
    watermark_next = (new_watermark + dt.timedelta(microseconds=1)).isoformat()
    try:
        results, rows, sizes = train_version(
            cfg, spark, lake, samples, cfg.date, registry.version_url(base_slot, base), staging
        )
        summary = {
            **_summarise(cfg, version, results, rows, time.time() - started),
            "base": full["version"],
            "base_id": full.get("id"),
            "started_from": base,
            "since": since.isoformat(),
            "watermark": watermark_next,
            "sizes": sizes,
        }
        _write_manifest(staging, summary)
        entry = {
            "version": version,
            "base": full["version"],
            "base_id": full.get("id"),
            "watermark": watermark_next,
        }
        publish_incremental(
            spark, lake, registry, staging, entry, latest, cfg.model == "two_tower", cfg.keep_versions
        )
    except RegistryConflict as exc:
        print(f"train {cfg.model} incremental: NOT published: {exc}", file=sys.stderr)
        return 1
    finally:
        from recsys_spark.lake.commit import remove_dir

        remove_dir(staging)
        period.unpersist()
    _print(summary, results)
    return 0


def _print(summary: dict, results: list[dict]) -> None:
    print(
        f"train {summary['model']} {summary['mode']}: published {summary['version']} "
        f"({summary['rows']:,} rows, {summary['ranks']} {summary['backend']} rank(s), "
        f"mean loss {summary['mean_loss']:.4f}, {summary['seconds']:.1f}s)"
    )
    for e in summary.get("epochs", []):
        print(
            f"  epoch {e['epoch']}: {e['rows']:,} rows, mean loss {e['mean_loss']:.4f}, {e['rows_per_second']:,.0f} rows/s"
        )
    for r in results:
        print(
            f"  rank {r['rank']}/{r['size']}: {r['rows']:,} rows in {r['steps']} steps "
            f"({r['idle_steps']} idle), {r['rows_per_second']:,.0f} rows/s, params {r['fingerprint'][:12]}"
        )


def run(cfg: TrainConfig, spark, lake) -> int:
    validate(cfg)
    registry = Registry.for_model(lake, cfg.model)
    if cfg.mode == "full":
        return run_full(cfg, spark, lake, registry)
    return run_incremental(cfg, spark, lake, registry)
