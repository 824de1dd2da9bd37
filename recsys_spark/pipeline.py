"""`recsys-spark run-daily --date D`: the whole daily pipeline for one day, stage by stage.

Each stage is one of the ordinary jobs run with its own config, so `run-daily` and the Airflow DAG
(one task per job) do exactly the same work. A stage that fails stops the run; tables published by
earlier stages stay valid versions, and re-running the day replaces that day's data (idempotent).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from recsys_spark.config import DatedConfig, GatedConfig, option

log = logging.getLogger(__name__)

SIMILARITY_ALGOS = ("itemcf", "swing", "usercf")
WALK_METHODS = ("deepwalk", "node2vec")


@dataclass
class DailyConfig(GatedConfig):
    """Runs, in order: stats -> similarity (itemcf, swing, usercf) -> graph -> walks (deepwalk, node2vec)
    -> embeddings (deepwalk, node2vec) -> samples -> full training (two_tower, ranker) -> evaluate
    (--date against what was built before it: the previous day's tables and models)."""

    skip: list[str] = option([], "Stages to leave out, e.g. --skip usercf node2vec-walks.")
    top_k: int = option(100, "Neighbours kept per id by the similarity stages.")
    num_walks: int = option(10, "Walks started from every item.")
    walk_length: int = option(40, "Items per walk at most.")
    p: float = option(1.0, "Node2vec return parameter.")
    q: float = option(0.5, "Node2vec in-out parameter (< 1 explores outward, DFS-like).")
    dim: int = option(64, "Embedding dimension.")
    epochs: int = option(5, "Embedding training epochs.")
    np: int = option(1, "Training processes (ranks) for the embeddings and the models.")
    launcher: str = option(
        "horovod", "Training launcher: horovod, torch or local.", choices=["horovod", "torch", "local"]
    )
    train_epochs: int = option(1, "Passes over the day's samples in the full model update.")
    train_batch_size: int = option(256, "Rows per step and rank of the model training.")
    train_learning_rate: float = option(0.005, "Adam learning rate of the model training.")


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    config_class: str
    options: Callable[[DailyConfig], dict]
    function: str = "run"


def _common(cfg: DailyConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DatedConfig)}


def _train(model: str) -> Callable[[DailyConfig], dict]:
    def options(cfg: DailyConfig) -> dict:
        return {
            **_common(cfg),
            "model": model,
            "mode": "full",
            "np": cfg.np,
            "launcher": cfg.launcher,
            "epochs": cfg.train_epochs,
            "batch_size": cfg.train_batch_size,
            "learning_rate": cfg.train_learning_rate,
        }

    return options


def _walks(method: str) -> Callable[[DailyConfig], dict]:
    def options(cfg: DailyConfig) -> dict:
        extra = {"p": cfg.p, "q": cfg.q} if method == "node2vec" else {}
        return {
            **_common(cfg),
            "method": method,
            "num_walks": cfg.num_walks,
            "walk_length": cfg.walk_length,
            **extra,
        }

    return options


def _embed(method: str) -> Callable[[DailyConfig], dict]:
    def options(cfg: DailyConfig) -> dict:
        return {
            **_common(cfg),
            "method": method,
            "dim": cfg.dim,
            "epochs": cfg.epochs,
            "np": cfg.np,
            "launcher": cfg.launcher,
        }

    return options


STAGES: tuple[Stage, ...] = (
    Stage("stats", "recsys_spark.stats", "StatsConfig", _common),
    *(
        Stage(
            algo,
            "recsys_spark.similarity.job",
            "SimilarityConfig",
            lambda cfg, algo=algo: {**_common(cfg), "algo": algo, "top_k": cfg.top_k},
        )
        for algo in SIMILARITY_ALGOS
    ),
    Stage("graph", "recsys_spark.graph.job", "GraphConfig", _common, "run_graph"),
    *(
        Stage(f"{m}-walks", "recsys_spark.graph.job", "WalksConfig", _walks(m), "run_walks")
        for m in WALK_METHODS
    ),
    *(Stage(f"{m}-embed", "recsys_spark.graph.embed", "EmbedConfig", _embed(m)) for m in WALK_METHODS),
    Stage("samples", "recsys_spark.samples.job", "SamplesConfig", _common),
    *(Stage(m, "recsys_spark.train.job", "TrainConfig", _train(m)) for m in ("two_tower", "ranker")),
    Stage("evaluate", "recsys_spark.evaluate.job", "EvaluateConfig", _common),
)


def run(cfg: DailyConfig, spark, lake) -> int:
    unknown = sorted(set(cfg.skip) - {s.name for s in STAGES})
    if unknown:
        from recsys_spark.cli import UsageError

        raise UsageError(f"--skip names unknown stages {unknown}; stages are {[s.name for s in STAGES]}")
    stages = [s for s in STAGES if s.name not in cfg.skip]
    from recsys_spark.quality.gate import QualityGateError, enable_gates

    if cfg.gate:  # every table write of every stage passes its critical suite first, or is not published
        enable_gates(lake, cfg.date)
    started = time.time()
    timings: list[tuple[str, float]] = []
    for number, stage in enumerate(stages, 1):
        log.info("run-daily %s: stage %d/%d %s", cfg.date, number, len(stages), stage.name)
        module = importlib.import_module(stage.module)
        stage_cfg = getattr(module, stage.config_class)(**stage.options(cfg))
        stage_started = time.time()
        try:
            code = getattr(module, stage.function)(stage_cfg, spark, lake)
        except QualityGateError as exc:
            log.error("run-daily %s: stage %s stopped by a quality gate: %s", cfg.date, stage.name, exc)
            code = 1
        timings.append((stage.name, time.time() - stage_started))
        if code:
            log.error(
                "run-daily %s: stage %s failed (exit %s); later stages not run", cfg.date, stage.name, code
            )
            return code
    print(f"run-daily {cfg.date}: {len(stages)} stages in {time.time() - started:.1f}s")
    for name, seconds in timings:
        print(f"  {name:<12} {seconds:7.1f}s")
    return 0
