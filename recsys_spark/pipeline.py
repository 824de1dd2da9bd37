"""`recsys-spark run-daily --date D`: the whole daily pipeline for one day, stage by stage.

Each stage is one of the ordinary jobs run with its own config, so `run-daily` and the Airflow DAG
(one task per job) do exactly the same work. A stage that fails stops the run; tables published by
earlier stages stay valid versions, and re-running the day replaces that day's data (idempotent).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from recsys_spark.config import DatedConfig, option

log = logging.getLogger(__name__)

SIMILARITY_ALGOS = ("itemcf", "swing", "usercf")


@dataclass
class DailyConfig(DatedConfig):
    """Runs, in order: stats -> similarity (itemcf, swing, usercf). Later stages join as they land."""

    skip: list[str] = option([], "Stages to leave out, e.g. --skip usercf stats.")
    top_k: int = option(100, "Neighbours kept per id by the similarity stages.")


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    config_class: str
    options: Callable[[DailyConfig], dict]


def _common(cfg: DailyConfig) -> dict:
    return {
        "lake": cfg.lake,
        "master": cfg.master,
        "engine": cfg.engine,
        "log_level": cfg.log_level,
        "date": cfg.date,
    }


STAGES: tuple[Stage, ...] = (
    Stage("stats", "recsys_spark.stats", "StatsConfig", lambda cfg: _common(cfg)),
    *(
        Stage(
            algo,
            "recsys_spark.similarity.job",
            "SimilarityConfig",
            lambda cfg, algo=algo: {**_common(cfg), "algo": algo, "top_k": cfg.top_k},
        )
        for algo in SIMILARITY_ALGOS
    ),
)


def run(cfg: DailyConfig, spark, lake) -> int:
    unknown = sorted(set(cfg.skip) - {s.name for s in STAGES})
    if unknown:
        from recsys_spark.cli import UsageError

        raise UsageError(f"--skip names unknown stages {unknown}; stages are {[s.name for s in STAGES]}")
    stages = [s for s in STAGES if s.name not in cfg.skip]
    started = time.time()
    timings: list[tuple[str, float]] = []
    for number, stage in enumerate(stages, 1):
        log.info("run-daily %s: stage %d/%d %s", cfg.date, number, len(stages), stage.name)
        module = importlib.import_module(stage.module)
        stage_cfg = getattr(module, stage.config_class)(**stage.options(cfg))
        stage_started = time.time()
        code = module.run(stage_cfg, spark, lake)
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
