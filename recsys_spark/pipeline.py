"""`recsys-spark run-daily --date D`: the whole daily pipeline for one day, stage by stage.

Each stage is one of the ordinary jobs run with its own config, so `run-daily` and the Airflow DAG
(one task per job) do exactly the same work. A stage that fails stops the run; tables published by
earlier stages stay valid versions, and re-running the day replaces that day's data (idempotent).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass

from recsys_spark import catalog
from recsys_spark.config import DatedConfig, GatedConfig, field_default, option, same_as
from recsys_spark.errors import UsageError
from recsys_spark.experiments.buckets import BucketsConfig
from recsys_spark.graph.embed import EmbedConfig
from recsys_spark.graph.job import WalksConfig
from recsys_spark.profiles.job import ProfilesConfig
from recsys_spark.recommend.job import RecommendConfig
from recsys_spark.similarity.job import SimilarityConfig
from recsys_spark.train.job import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class DailyConfig(GatedConfig):
    """Runs, in order: stats -> profiles -> similarity (itemcf, swing, usercf) -> graph -> walks
    (deepwalk, node2vec) -> embeddings (deepwalk, node2vec) -> samples -> full training (two_tower,
    ranker) -> buckets (A/B assignment) -> recommend (recall -> rank -> rerank: the lists of --date,
    served the day after) -> evaluate (--date against what was built before it: the previous day's
    tables, models and lists) -> business_metrics (DAU, retention, LT7 per A/B variant)."""

    skip: list[str] = option(
        [],
        "Stages or groups to leave out, e.g. --skip similarity.usercf walks.node2vec, or --skip train "
        f"(stages: {', '.join(catalog.STAGE_NAMES)}).",
    )
    # Options forwarded to the stages' jobs, defaults and bounds taken from the jobs' configs. A name
    # is the job's own where one job has it, `<job>_<name>` where the embed and train jobs both have it.
    top_k: int = same_as("similarity", SimilarityConfig, "top_k")
    num_walks: int = same_as("walks", WalksConfig, "num_walks")
    walk_length: int = same_as("walks", WalksConfig, "walk_length")
    p: float = same_as("walks", WalksConfig, "p")
    q: float = same_as("walks", WalksConfig, "q")
    embed_dim: int = same_as("embed", EmbedConfig, "dim", aliases=["dim"])
    embed_epochs: int = same_as("embed", EmbedConfig, "epochs", aliases=["epochs"])
    np: int = same_as(
        "train", TrainConfig, "np", "Training processes (ranks) of the embeddings and the models."
    )
    launcher: str = same_as(
        "train", TrainConfig, "launcher", "Training launcher of the embeddings and the models."
    )
    train_epochs: int = same_as(
        "train", TrainConfig, "epochs", "Passes over the day's samples in the full model update."
    )
    train_batch_size: int = same_as("train", TrainConfig, "batch_size")
    cold_start_days: int = same_as("train", TrainConfig, "cold_start_days")
    cold_start_epochs: int = same_as("train", TrainConfig, "cold_start_epochs")
    gate: bool = same_as(
        "stats",
        GatedConfig,
        "gate",
        "Each job validates its tables' critical expectations before committing them.",
    )
    train_learning_rate: float = same_as("train", TrainConfig, "learning_rate")
    k: int = same_as("recommend", RecommendConfig, "k")
    diversity: str = same_as("recommend", RecommendConfig, "diversity")
    half_life_days: float = same_as("profiles", ProfilesConfig, "half_life_days")
    # The A/B layer whose variants rerank serves and evaluate reads out (none by default), and the
    # layers the buckets stage assigns (rerank and evaluate read the same spec).
    variant_by: str | None = same_as("recommend", RecommendConfig, "variant_by")
    experiments: str | None = same_as("buckets", BucketsConfig, "experiments")
    buckets: int = same_as("buckets", BucketsConfig, "buckets")


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    config_class: str
    options: Callable[[DailyConfig], dict]
    function: str = "run"


def _common(cfg: DailyConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DatedConfig)}


def forwarded(job: str, config_cls: type) -> dict[str, str]:
    """{option of `job` (config `config_cls`): the run-daily option that sets it}.

    An option forwarded from `job` itself, or one of the same name forwarded from another job (`np`
    and `launcher` set both the embed and the train jobs); `embed_epochs` is not the train job's.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    routes = {}
    for f in dataclasses.fields(DailyConfig):
        source = f.metadata.get("forwards")
        if source and source[1] in names and (source[0] == job or f.name == source[1]):
            routes[source[1]] = f.name
    return routes


def _stage(spec: catalog.Stage) -> Stage:
    module, config_class, function, _ = catalog.JOBS[spec.job]
    variant = dict(spec.args)

    def options(cfg: DailyConfig) -> dict:
        config_cls = getattr(importlib.import_module(module), config_class)
        routes = forwarded(spec.job, config_cls)
        return {**_common(cfg), **{k: getattr(cfg, v) for k, v in routes.items()}, **variant}

    return Stage(spec.name, module, config_class, options, function)


STAGES: tuple[Stage, ...] = tuple(_stage(spec) for spec in catalog.DAILY_STAGES)


def stages_to_skip(skip: list[str]) -> set[str]:
    """The stage names `--skip` leaves out: a stage, its group ("similarity"), or a deprecated old name."""
    wanted = set()
    for name in skip:
        if name in catalog.STAGE_ALIASES:
            new = catalog.STAGE_ALIASES[name]
            log.warning("run-daily --skip %s is deprecated: the stage is now named %s", name, new)
            name = new
        wanted.add(name)
    unknown = sorted(wanted - set(catalog.STAGE_NAMES) - set(catalog.STAGE_GROUPS))
    if unknown:
        raise UsageError(
            f"--skip names unknown stages {unknown}; stages are {list(catalog.STAGE_NAMES)} "
            f"(or their groups {list(catalog.STAGE_GROUPS)})"
        )
    return {s for s in catalog.STAGE_NAMES if catalog.is_skipped(s, wanted)}


def run(cfg: DailyConfig, spark, lake) -> int:
    skipped = stages_to_skip(cfg.skip)
    stages = [s for s in STAGES if s.name not in skipped]
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
        print(f"  {name:<20} {seconds:7.1f}s")
    return 0


# -- the Airflow DAG's job options, generated from the configs ---------------------------------------
DAG_PARAMS_FILE = "airflow_dags/job_params.json"  # relative to the checkout; the DAGs read it
_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array"}


def dag_params() -> dict:
    """What `airflow_dags/job_params.json` holds, derived from the job configs (nothing by hand).

    `params`: every run-daily option forwarded to a job, as an Airflow param spec (default, JSON type,
    bounds, choices, description); `routes`: per job, {job option: param} for the task's command line.
    The DAGs cannot import recsys_spark (Airflow's venv), so they read the file;
    `python -m recsys_spark.pipeline` rewrites it and tests/test_catalog.py fails when it is stale.
    """
    hints = typing.get_type_hints(DailyConfig)
    params = {}
    for f in dataclasses.fields(DailyConfig):
        if "forwards" not in f.metadata:
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = isinstance(hint, types.UnionType) and len(args) == 1
        json_type = _JSON_TYPES[typing.get_origin(args[0]) or args[0]] if nullable else None
        spec = {
            "default": field_default(f),
            # An optional option (None = not given) is a nullable param; its flag is left out when null.
            "type": ["null", json_type] if nullable else _JSON_TYPES[typing.get_origin(hint) or hint],
            "description": f.metadata["help"],
        }
        for key, name in (
            ("minimum", "minimum"),
            ("exclusive_minimum", "exclusiveMinimum"),
            ("maximum", "maximum"),
            ("choices", "enum"),
        ):
            if key in f.metadata:
                spec[name] = list(f.metadata[key]) if key == "choices" else f.metadata[key]
        params[f.name] = spec
    routes = {}
    for job in dict.fromkeys(s.job for s in catalog.DAILY_STAGES):
        module, config_class, _, _ = catalog.JOBS[job]
        routes[job] = forwarded(job, getattr(importlib.import_module(module), config_class))
    return {"params": params, "routes": routes}


def dag_params_text() -> str:
    return json.dumps(dag_params(), indent=2) + "\n"


if __name__ == "__main__":  # python -m recsys_spark.pipeline: regenerate the DAGs' job params
    from pathlib import Path

    target = Path(__file__).resolve().parents[1] / DAG_PARAMS_FILE
    target.write_text(dag_params_text())
    print(f"wrote {target}")
