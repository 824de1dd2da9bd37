"""The one catalogue (recsys_spark/catalog.py): stdlib only, read everywhere, and no option drifts.

The DAG files cannot be imported here (Airflow lives in its own venv); what they build comes from
the catalogue and from `airflow_dags/job_params.json`, so those two are checked against the library.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_spark import catalog, cli, pipeline, publish
from recsys_spark.config import field_default
from recsys_spark.graph.embed import EmbedConfig
from recsys_spark.graph.job import WalksConfig
from recsys_spark.graph.sgns import SgnsParams
from recsys_spark.graph.walks import WalkParams
from recsys_spark.similarity.job import ALGOS, SimilarityConfig
from recsys_spark.similarity.params import SimilarityParams
from recsys_spark.streaming.job import Heartbeat, StreamConfig
from recsys_spark.train.job import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "airflow_dags"


def _config(job: str) -> type:
    module, config_class, _, _ = catalog.JOBS[job]
    return getattr(importlib.import_module(module), config_class)


def _defaults(config_cls: type) -> dict:
    return {f.name: field_default(f) for f in dataclasses.fields(config_cls)}


def test_catalog_is_stdlib_only_and_loads_by_path_as_the_dags_do():
    code = (
        "import importlib.util, sys\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('recsys_catalog', {str(ROOT / 'recsys_spark' / 'catalog.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
        "print(' '.join(m.STAGE_NAMES))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    modules, stages = out.stdout.splitlines()
    tops = {name.split(".")[0] for name in modules.split()} - {"recsys_catalog"}
    assert not {t for t in tops if t not in sys.stdlib_module_names}, "non-stdlib imports"
    assert "pyspark" not in tops and "recsys_spark" not in tops
    assert stages.split() == list(catalog.STAGE_NAMES)


def test_run_daily_stages_are_the_catalogue_stages_and_the_dag_tasks():
    assert [s.name for s in pipeline.STAGES] == list(catalog.STAGE_NAMES)
    assert len(set(catalog.STAGE_NAMES)) == len(catalog.STAGE_NAMES)
    # The daily DAG creates its job tasks with stage_task(name) / stage_group(group) only.
    tree = ast.parse((DAGS / "recsys_daily_full.py").read_text())
    calls = [
        (n.func.id, n.args[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("stage_task", "stage_group")
        if n.args and isinstance(n.args[0], ast.Constant)
    ]
    tasks = {name for kind, name in calls if kind == "stage_task"}
    groups = {name for kind, name in calls if kind == "stage_group"}
    assert tasks | {s.name for s in catalog.DAILY_STAGES if s.group in groups} == set(catalog.STAGE_NAMES)
    # ... and builds no job task by hand besides: one SparkJobOperator call is stage_task's, the other
    # makes the catalogue's upkeep tasks.
    text = (DAGS / "recsys_daily_full.py").read_text()
    assert text.count("SparkJobOperator(") == 2
    assert "for job in catalog.UPKEEP_JOBS]" in text
    assert set(catalog.UPKEEP_JOBS) <= set(catalog.JOBS)


def test_stages_name_real_jobs_options_and_choices():
    for stage in catalog.DAILY_STAGES:
        config_cls = _config(stage.job)
        fields = {f.name: f for f in dataclasses.fields(config_cls)}
        for key, value in stage.args:
            assert key in fields, (stage.name, key)
            assert value in fields[key].metadata.get("choices", [value]), (stage.name, key, value)
    assert cli.JOBS is catalog.JOBS
    assert {algo: table for algo, (_, table, _, _) in ALGOS.items()} == catalog.SIMILARITY_TABLES
    assert tuple(_config("walks").__dataclass_fields__["method"].metadata["choices"]) == catalog.WALK_METHODS
    assert tuple(TrainConfig.__dataclass_fields__["model"].metadata["choices"]) == catalog.MODELS
    assert tuple(StreamConfig.__dataclass_fields__["update_models"].metadata["choices"]) == catalog.MODELS
    assert publish.DAILY_TABLES is catalog.DAILY_TABLES
    assert set(catalog.DAILY_TABLES) | {"item_vectors"} == set(catalog.PUBLISHED_TABLES)


def test_every_table_has_a_schema_and_a_suite():
    tables = {p.stem for p in (ROOT / "schemas" / "tables").glob("*.json")}
    suites = {p.stem for p in (ROOT / "schemas" / "expectations").glob("*.json")}
    assert set(catalog.TABLES) == tables, set(catalog.TABLES) ^ tables
    assert set(catalog.TABLES) <= suites, set(catalog.TABLES) - suites
    assert len(set(catalog.TABLES)) == len(catalog.TABLES)


def test_old_stage_names_still_skip_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="recsys_spark.pipeline"):
        skipped = pipeline.stages_to_skip(["usercf", "node2vec-walks", "deepwalk-embed", "two_tower"])
    assert skipped == {"similarity.usercf", "walks.node2vec", "embeddings.deepwalk", "train.two_tower"}
    assert "--skip usercf is deprecated" in caplog.text
    assert pipeline.stages_to_skip(["train", "stats"]) == {"train.two_tower", "train.ranker", "stats"}
    with pytest.raises(Exception, match=r"unknown stages \['nope'\]"):
        pipeline.stages_to_skip(["nope"])


@pytest.mark.parametrize(
    ("job", "argv", "field", "value"),
    [
        ("train", ["--hist-len", "7"], "history_length", 7),
        ("train", ["--embedding-dim", "9"], "dim", 9),
        ("run-daily", ["--dim", "8"], "embed_dim", 8),
        ("run-daily", ["--epochs", "2"], "embed_epochs", 2),
    ],
)
def test_old_option_names_still_work_with_a_warning(job, argv, field, value, caplog):
    parser, config_cls = cli.build_parser(job)
    with caplog.at_level(logging.WARNING, logger="recsys_spark"):
        namespace = parser.parse_args(argv)
    assert getattr(namespace, field) == value
    assert f"{argv[0]} is deprecated" in caplog.text
    assert f"[{argv[0]} " not in parser.format_usage()  # hidden


def test_one_default_per_option_as_design_names_them():
    walks, sgns, sim = _defaults(WalkParams), _defaults(SgnsParams), _defaults(SimilarityParams)
    assert {k: sgns[k] for k in ("dim", "window", "negative", "epochs", "subsample", "learning_rate")} == {
        "dim": 64, "window": 5, "negative": 5, "epochs": 5, "subsample": 1e-3, "learning_rate": 0.025
    }  # fmt: skip
    assert _defaults(EmbedConfig)["min_count"] == 1
    assert {k: sim[k] for k in ("alpha1", "alpha2", "beta", "max_users_per_item", "top_k")} == {
        "alpha1": 15, "alpha2": 0, "beta": 0.3, "max_users_per_item": 1000, "top_k": 100
    }  # fmt: skip
    assert (sim["min_user_items"], sim["max_user_items"]) == (2, 1000)
    # The job configs are built on the params: every params field is a job option of the same default.
    for params_cls, config_cls in ((WalkParams, WalksConfig), (SgnsParams, EmbedConfig), (SimilarityParams, SimilarityConfig)):  # fmt: skip
        assert issubclass(config_cls, params_cls)
    assert walks["q"] == _defaults(pipeline.DailyConfig)["q"] == 0.5
    # One name for the behaviour-sequence length in every job that has one.
    for job in ("samples", "train", "evaluate"):
        assert "history_length" in _defaults(_config(job)) and "hist_len" not in _defaults(_config(job))


def test_job_params_file_is_generated_from_the_configs():
    on_disk = json.loads((DAGS / "job_params.json").read_text())
    assert on_disk == pipeline.dag_params(), "stale: run `python -m recsys_spark.pipeline`"


def test_dag_params_match_the_job_options_they_set():
    """Names, defaults, bounds and choices of every DAG job param equal those of the job option it
    reaches (through routes), and every `params.X` a DAG file uses exists."""
    spec = pipeline.dag_params()
    params, routes = spec["params"], spec["routes"]
    reached = set()
    for job, options in routes.items():
        fields = {f.name: f for f in dataclasses.fields(_config(job))}
        for option, param in options.items():
            reached.add(param)
            f = fields[option]
            assert params[param]["default"] == field_default(f), (job, option)
            assert params[param].get("minimum") == f.metadata.get("minimum"), (job, option)
            assert params[param].get("exclusiveMinimum") == f.metadata.get("exclusive_minimum"), (job, option)
            assert params[param].get("enum") == f.metadata.get("choices"), (job, option)
    assert reached == set(params)
    daily = {f.name for f in dataclasses.fields(pipeline.DailyConfig)} - set(
        pipeline.DatedConfig.__dataclass_fields__
    )
    assert set(params) == daily - {"skip"}  # gate is routed to every writing job
    common = set(re.findall(r'^\s+"(\w+)": Param\(', (DAGS / "_recsys_common.py").read_text(), re.M))
    for dag in ("recsys_daily_full.py", "recsys_incremental.py"):
        text = (DAGS / dag).read_text()
        declared = common | set(re.findall(r'^\s+"(\w+)": Param\(', text, re.M)) | set(params)
        used = set(re.findall(r"params\.(\w+)", text)) | set(re.findall(r'params\["(\w+)"\]', text))
        assert used <= declared, (dag, used - declared)


def test_stream_heartbeat_has_the_catalogued_fields(lake):
    beat = Heartbeat(lake, "once")
    beat.beat(state=catalog.RUNNING)
    document = json.loads(Path(lake.path(*catalog.HEARTBEAT_PATH)).read_text())
    assert set(catalog.HEARTBEAT_FIELDS) <= set(document)
    assert document["state"] in catalog.STREAM_STATES


def test_every_daily_job_has_its_spark_submit_script():
    # The DAG's SparkJobOperator runs jobs/<job with - as _>.py (business-metrics -> business_metrics.py).
    jobs = {s.job for s in catalog.DAILY_STAGES} | set(catalog.UPKEEP_JOBS)
    missing = [j for j in sorted(jobs) if not (ROOT / "jobs" / f"{j.replace('-', '_')}.py").exists()]
    assert not missing, missing
