"""The daily pipeline end to end on a small synthetic lake, through the CLI and spark-submit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_spark import catalog, cli
from recsys_spark.lake import Lake

REPO = Path(__file__).resolve().parents[1]
DAILY_TABLES = catalog.PUBLISHED_TABLES


@pytest.fixture(scope="module")
def daily_lake(spark, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("daily") / "lake")
    args = ["--lake", root, "--users", "300", "--items", "150", "--days", "4", "--seed", "3"]
    assert cli.main(["generate", *args], spark=spark) == 0
    daily = [
        "run-daily",
        "--lake",
        root,
        "--num-walks",
        "3",
        "--walk-length",
        "10",
        "--dim",
        "8",
        "--epochs",
        "1",
        "--cold-start-days",
        "1",  # the cold-start window has its own test (test_train): one day keeps this run small
    ]
    assert cli.main(daily, spark=spark) == 0
    return Lake(spark, root)


@pytest.mark.slow
def test_run_daily_produces_every_table(daily_lake):
    tables = set(daily_lake.tables())
    assert set(DAILY_TABLES) <= tables, sorted(set(DAILY_TABLES) - tables)
    for table in DAILY_TABLES:
        assert daily_lake.read(table).count() > 0, table
    methods = {r.method for r in daily_lake.read("walks").select("method").distinct().collect()}
    assert methods == {"deepwalk", "node2vec"}
    embedded = {r.method for r in daily_lake.read("item_embeddings").select("method").distinct().collect()}
    assert embedded == {"deepwalk", "node2vec"}
    report = json.loads(
        Path(daily_lake.path("_reports", "embeddings", "2026-11-04-deepwalk.json")).read_text()
    )
    assert report["precision@10"] > report["random_precision@10"]
    evaluation = json.loads(Path(daily_lake.path("_reports", "evaluation", "2026-11-04.json")).read_text())
    # Nothing was built before the day: only what needs no artefact runs, the limit and the baselines.
    recall = evaluation["recall_exclude_seen"]
    assert {"popularity", "oracle", "als", "ease"} <= set(recall)
    for name in ("popularity", "als", "ease"):
        assert recall["oracle"]["ndcg@10"] > recall[name]["ndcg@10"], name
    assert recall["ease"]["ndcg@10"] > recall["popularity"]["ndcg@10"]
    for model in catalog.MODELS:
        latest = json.loads(Path(daily_lake.path("_models", model, "LATEST.json")).read_text())
        assert latest["serving"] == "full-2026-11-04"


@pytest.mark.slow
def test_rerunning_a_day_is_idempotent(spark, daily_lake):
    before = {
        t: sorted(map(tuple, daily_lake.read(t).drop("vector").collect()))
        for t in ("swing_sim", "item_graph", "walks")
    }
    args = [
        "run-daily",
        "--lake",
        daily_lake.root,
        "--skip",
        "stats",
        "similarity.itemcf",
        "similarity.usercf",
        "embeddings",
        "samples",
        "train",
        "evaluate",
    ]
    assert cli.main([*args, "--num-walks", "3", "--walk-length", "10"], spark=spark) == 0
    after = {t: sorted(map(tuple, daily_lake.read(t).drop("vector").collect())) for t in before}
    assert after == before


def test_unknown_stage_is_a_usage_error(spark, tmp_path, capsys):
    assert (
        cli.main(
            ["run-daily", "--lake", str(tmp_path), "--date", "2026-11-01", "--skip", "nope"], spark=spark
        )
        == 2
    )
    assert "unknown stages ['nope']" in capsys.readouterr().err


def spark_submit(job: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            "local[2]",
            # Short-lived driver JVMs on tiny data: C1-only JIT and the serial GC cut their CPU time.
            "--driver-java-options",
            "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            str(REPO / "jobs" / f"{job}.py"),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.mark.slow
def test_spark_submit_runs_walks_on_the_lake(daily_lake):
    result = spark_submit(
        "walks",
        "--lake",
        daily_lake.root,
        "--method",
        "node2vec",
        "--num-walks",
        "2",
        "--walk-length",
        "5",
        "--q",
        "0.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "walks node2vec:" in result.stdout
    assert (
        daily_lake.read("walks").filter("method = 'node2vec'").selectExpr("max(size(items))").first()[0] <= 5
    )


@pytest.mark.slow
def test_spark_submit_evaluates(daily_lake):
    result = spark_submit(
        "evaluate", "--lake", daily_lake.root, "--date", "2026-11-04", "--channels", "popularity"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "popularity" in result.stdout


@pytest.mark.slow
def test_spark_submit_samples_then_both_models_full_and_incremental_on_two_ranks(spark, tmp_path):
    """The training half of the day as spark-submit runs it: samples, then each model's full update on
    2 Horovod ranks, then the two-tower's incremental update on 2 ranks from the next day's events (the
    ranker's incremental update shares that code path; test_train and the Airflow test run it)."""
    root = str(tmp_path / "lake")
    args = ["--lake", root, "--users", "200", "--items", "80", "--days", "4", "--seed", "7"]
    assert cli.main(["generate", *args], spark=spark) == 0
    assert cli.main(["stats", "--lake", root, "--date", "2026-11-03"], spark=spark) == 0

    result = spark_submit(
        "samples", "--lake", root, "--date", "2026-11-03", "--hard-negative-channel", "none"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [("full", "2026-11-03", model) for model in catalog.MODELS]
    runs.append(("incremental", "2026-11-04", "two_tower"))
    for mode, day, model in runs:
        result = spark_submit(
            "train", "--lake", root, "--model", model, "--mode", mode, "--np", "2", "--date", day,
            "--epochs", "1", "--batch-size", "128", "--cold-start-days", "1",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        fingerprints = re.findall(r"rank [01]/2: .* params (\w+)", result.stdout)
        assert len(fingerprints) == 2 and len(set(fingerprints)) == 1, result.stdout[-2000:]  # one model
    lake = Lake(spark, root)
    assert lake.read("recall_samples").count() > 0 and lake.read("rank_samples").count() > 0
    for model in catalog.MODELS:
        latest = json.loads(Path(lake.path("_models", model, "LATEST.json")).read_text())
        assert latest["full"]["version"] == "full-2026-11-03", latest
    latest = json.loads(Path(lake.path("_models", "two_tower", "LATEST.json")).read_text())
    assert latest["incremental"]["version"] == "inc-2026-11-04-001", latest
    assert latest["incremental"]["base"] == "full-2026-11-03" and latest["serving"] == "inc-2026-11-04-001"
