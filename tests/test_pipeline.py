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
        "--cold-start-epochs",
        "1",
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


# -- data quality over a whole day: every table gated before its commit, `validate` passes on each --
DAY = "2026-11-04"


def _quality(lake, table: str) -> dict:
    return json.loads(Path(lake.path("_reports", "quality", table, f"{DAY}.json")).read_text())


@pytest.mark.slow
def test_every_table_passed_its_gate_before_its_commit(daily_lake):
    for table in catalog.DAILY_TABLES:
        summary = _quality(daily_lake, table)
        assert (summary["mode"], summary["status"]) == ("gate", "passed"), (table, summary["critical_failed"])
        assert summary["evaluated"] >= 7
        # The gate runs the critical checks only, pass/fail only while they pass (no Data Docs).
        assert all(c["severity"] == "critical" and c["success"] for c in summary["checks"])
        assert summary["data_docs"] is None


@pytest.mark.slow
def test_validate_passes_on_every_table_of_the_days_lake(spark, daily_lake, capsys):
    for table in daily_lake.tables():
        code = cli.main(["validate", "--lake", daily_lake.root, "--table", table], spark=spark)
        out = capsys.readouterr().out
        assert code == 0, (table, out)
        summary = _quality(daily_lake, table)
        assert summary["mode"] == "validate" and summary["success"], (table, summary["critical_failed"])
        assert f"validate {table} (" in out and "PASSED" in out
        assert Path(summary["data_docs"]).is_file()
    events = _quality(daily_lake, "events")
    assert events["scope"] == f"dt = {DAY}" and events["baseline"] == "the previous day (dt = 2026-11-03)"
    assert any(c["drift"] == "mix" for c in events["checks"])
    board = Path(daily_lake.path("_reports", "quality", "index.html")).read_text()
    assert all(f"<td>{t}</td>" in board for t in daily_lake.tables())
    docs_index = Path(daily_lake.path("_reports", "quality", "data_docs", "index.html")).read_text()
    assert "validations/events/" in docs_index and "validations/walks/" in docs_index


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
def test_spark_submit_samples_then_both_models_on_two_ranks(spark, tmp_path):
    """The training half of the day as spark-submit runs it: samples, then each model's full update on
    2 Horovod ranks (incremental updates are test_train's in-process and the Airflow test's through
    spark-submit)."""
    root = str(tmp_path / "lake")
    args = ["--lake", root, "--users", "200", "--items", "80", "--days", "3", "--seed", "7"]
    assert cli.main(["generate", *args], spark=spark) == 0
    assert cli.main(["stats", "--lake", root, "--date", "2026-11-03"], spark=spark) == 0

    result = spark_submit(
        "samples", "--lake", root, "--date", "2026-11-03", "--hard-negative-channel", "none"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The ranker with a non-default member of the zoo (test_ranker_zoo trains each one's model class
    # on 2 ranks; this is the job's path for one): DIN's history attention under ESMM's heads.
    zoo = {"two_tower": [], "ranker": ["--arch", "din", "--tasks-arch", "esmm"]}
    for model in catalog.MODELS:
        result = spark_submit(
            "train", "--lake", root, "--model", model, "--np", "2", "--date", "2026-11-03",
            "--epochs", "1", "--batch-size", "128", "--cold-start-days", "1", "--cold-start-epochs", "1",
            *zoo[model],
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        fingerprints = re.findall(r"rank [01]/2: .* params (\w+)", result.stdout)
        assert len(fingerprints) == 2 and len(set(fingerprints)) == 1, result.stdout[-2000:]  # one model
    lake = Lake(spark, root)
    assert lake.read("recall_samples").count() > 0 and lake.read("rank_samples").count() > 0
    manifests = {}
    for model in catalog.MODELS:
        latest = json.loads(Path(lake.path("_models", model, "LATEST.json")).read_text())
        assert latest["full"]["version"] == latest["serving"] == "full-2026-11-03", latest
        manifest = json.loads(
            Path(lake.path("_models", model, "full", "full-2026-11-03", "manifest.json")).read_text()
        )
        assert manifest["ranks"] == 2 and manifest["backend"] == "horovod", manifest
        manifests[model] = manifest
    options = manifests["ranker"]["options"]
    assert (options["arch"], options["tasks_arch"]) == ("din", "esmm")
