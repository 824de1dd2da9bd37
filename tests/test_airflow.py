"""The Airflow DAGs, run by real Airflow 3 from `.venv-airflow` (no mocks).

Every Airflow call is a subprocess of `.venv-airflow/bin/airflow` (or its python) with a temporary
AIRFLOW_HOME and SQLite metadata DB, the DAGs folder `airflow_dags/`, and no example DAGs. The tasks
run our jobs through `.venv/bin/spark-submit` on a tiny generated lake:

- the DAG files import cleanly, without Spark, with the expected tasks, dependencies, pools, params;
- `dags test recsys_daily_full D1` runs every stage but the three skipped by param (profiles, buckets,
  business_metrics) and publishes every table built (task timings printed);
- `dags test recsys_daily_full D2` (the heavy stages skipped by param) trains `full-D2` warm-started
  from `full-D1`, leaving both versions, and publishes D2;
- `dags test recsys_incremental` updates both models from the events after the full version;
- a failing quality check (a corrupted events day) stops the run: nothing after it, no publish.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from recsys_spark import catalog

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "airflow_dags"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
RECSYS = ROOT / ".venv" / "bin" / "recsys-spark"

D0, D1, D2, D3 = "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"  # the generated days
RUN_TIMEOUT = 3600  # seconds for one `dags test`; a quiet 2-core machine needs a fraction of it

# Tiny everything: each task still pays a JVM start, so the work itself must be small.
TINY = {
    "spark_master": "local[2]",
    "driver_memory": "2g",
    "top_k": 20,
    "num_walks": 2,
    "walk_length": 8,
    "embed_dim": 8,
    "embed_epochs": 1,
    "np": 1,
    "launcher": "local",
    "train_batch_size": 128,
    "cold_start_days": 1,  # the first run trains on D1's samples only (the window is test_train's)
    "cold_start_epochs": 1,  # and makes one pass over them
    "validate_inputs": ["events"],
    "validate_outputs": ["rank_samples"],
    # Short-lived JVMs on tiny data: C1-only JIT and the serial GC cut each job's CPU time by about 40%.
    "spark_conf": {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"},
}
# Day 1 validates one output (the failing-input test validates events) and skips the stages whose
# tables nothing later in the day needs (profiles are computed where read; no --variant-by, so no
# buckets; node2vec is the deepwalk path with other walk weights; usercf is the itemcf task's job with
# another --algo, and the recall below does not read it): each task costs a JVM start, their wiring is
# checked by the describe tests and their jobs by their own tests. Day 2 keeps what the warm start
# needs (samples, both models) and skips the rest.
DAY1_SKIPPED = [
    "profiles",
    "buckets",
    "business_metrics",
    "similarity.usercf",
    "walks.node2vec",
    "embeddings.node2vec",
]
# Evaluate's reference channels (oracle, ALS, EASE) and recall's vector channels (an ANN index each)
# are run-daily's test's (test_pipeline) and test_recall's; here the tasks only have to run, through
# the DAG's extra_args, and write their report and lists.
DAY1 = {
    "validate_inputs": [],
    "skip": DAY1_SKIPPED,
    "extra_args": {"evaluate": "--channels popularity", "recommend": "--channels itemcf swing popularity"},
}
SKIP_HEAVY = [
    "validate_inputs",
    "stats",
    "profiles",
    "similarity",
    "graph",
    "walks",
    "embeddings",
    "buckets",
    "recommend",
    "evaluate",
    "business_metrics",
    "validate_outputs",
]

DAILY_TASKS = {
    "validate_inputs.tables",
    "validate_inputs.validate",
    *catalog.STAGE_NAMES,  # run-daily's stages are the DAG's job tasks, same names
    "validate_outputs.tables",
    "validate_outputs.validate",
    "publish",
    "maintain",
}
PUBLISHED_TABLES = set(catalog.PUBLISHED_TABLES)


# -- running Airflow --------------------------------------------------------------------------------
def _airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "SPARK_MASTER"}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "RECSYS_HOME": str(ROOT),
            "RECSYS_DRIVER_MEMORY": "2g",
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def _run(argv: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout, check=False
    )


def _tail(proc: subprocess.CompletedProcess, lines: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


def _json_line(text: str):
    """The last line of `text` that is JSON (Airflow prints log lines around CLI output)."""
    for line in reversed(text.splitlines()):
        if line.startswith(("[", "{")):
            return json.loads(line)
    raise AssertionError(f"no JSON in output:\n{text[-3000:]}")


class Airflow:
    def __init__(self, home: Path):
        self.home = home
        self.env = _airflow_env(home)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return _run([str(AIRFLOW_BIN / "airflow"), *args], self.env, timeout)

    def python(self, code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        # Airflow puts the DAGs folder on sys.path itself; a bare interpreter needs PYTHONPATH for that.
        env = {**self.env, "PYTHONPATH": str(DAGS)}
        return _run([str(AIRFLOW_BIN / "python"), "-c", code, *args], env, timeout)

    def dags_test(self, dag_id: str, date: str, conf: dict) -> dict:
        started = time.time()
        proc = self.cli("dags", "test", dag_id, date, "-c", json.dumps(conf), timeout=RUN_TIMEOUT)
        seconds = time.time() - started
        # Read the run back from the SQLite metadata DB (cheaper than two more `airflow` CLI starts).
        with closing(sqlite3.connect(self.home / "airflow.db")) as db:
            run_id, state = db.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            rows = db.execute(
                "SELECT task_id, map_index, rendered_map_index, state, start_date, end_date "
                "FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            ).fetchall()
        tasks = {}
        for task_id, map_index, rendered, task_state, start, end in rows:
            key = task_id if map_index < 0 else f"{task_id}[{rendered or map_index}]"
            took = (
                (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
                if start and end
                else None
            )
            tasks[key] = {"state": task_state, "seconds": took, "start": start}
        return {"proc": proc, "seconds": seconds, "run": {"run_id": run_id, "state": state}, "tasks": tasks}


def _timing_table(title: str, result: dict) -> str:
    rows = sorted(result["tasks"].items(), key=lambda kv: kv[1]["start"] or "")
    lines = [f"{title}: {result['seconds']:.0f}s wall, run state {result['run']['state']}"]
    lines += [f"  {tid:<32} {t['state']:<16} {t['seconds'] or 0:7.1f}s" for tid, t in rows]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Airflow:
    assert (AIRFLOW_BIN / "airflow").exists(), "no .venv-airflow: run scripts/setup.sh"
    af = Airflow(tmp_path_factory.mktemp("airflow_home"))
    migrate = af.cli("db", "migrate")
    assert migrate.returncode == 0, _tail(migrate)
    pool = af.cli("pools", "set", "recsys_publish", "1", "model registry and publish: one writer")
    assert pool.returncode == 0, _tail(pool)
    return af


@pytest.fixture(scope="module")
def generated_lake(tmp_path_factory) -> Path:
    lake = tmp_path_factory.mktemp("generated") / "lake"
    env = {**os.environ, "RECSYS_DRIVER_MEMORY": "2g"}
    argv = [str(RECSYS), "generate", "--lake", str(lake), "--users", "300", "--items", "120"]
    argv += ["--days", "4", "--seed", "3", "--start-date", D0, "--master", "local[2]"]
    proc = _run(argv, env, timeout=900)
    assert proc.returncode == 0, _tail(proc)
    return lake


def _copy_lake(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# -- the DAG files ----------------------------------------------------------------------------------
DESCRIBE = textwrap.dedent(
    """
    import json, sys, time
    started = time.time()
    from airflow.models.dagbag import DagBag
    bag = DagBag(sys.argv[1], include_examples=False, safe_mode=False)
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "seconds": time.time() - started,
           "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "recsys_spark", "torch")),
           "dags": {}}
    for dag in bag.dags.values():
        out["dags"][dag.dag_id] = {
            "schedule": type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "params": sorted(dag.params.keys()),
            "tasks": {
                t.task_id: {
                    "downstream": sorted(t.downstream_task_ids),
                    "pool": t.pool,
                    "retries": t.retries,
                    "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                    "trigger_rule": str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule),
                    "outlets": sorted(getattr(o, "uri", str(o)) for o in t.outlets),
                    "job_args": getattr(t, "job_args", None),
                }
                for t in dag.tasks
            },
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def described(airflow) -> dict:
    proc = airflow.python(DESCRIBE, str(DAGS))
    assert proc.returncode == 0, _tail(proc)
    return _json_line(proc.stdout)


def _acyclic(tasks: dict) -> bool:
    indegree = {t: 0 for t in tasks}
    for t in tasks.values():
        for d in t["downstream"]:
            indegree[d] += 1
    ready = [t for t, n in indegree.items() if n == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for d in tasks[node]["downstream"]:
            indegree[d] -= 1
            if indegree[d] == 0:
                ready.append(d)
    return seen == len(tasks)


def test_dag_files_import_cleanly_without_spark(described):
    assert described["errors"] == {}
    assert set(described["dags"]) == {"recsys_daily_full", "recsys_incremental"}
    assert described["heavy"] == [], "DAG parsing must not import Spark, torch or recsys_spark"
    for dag in described["dags"].values():
        assert _acyclic(dag["tasks"])
        assert {
            "lake",
            "spark_master",
            "driver_memory",
            "executor_memory",
            "executor_cores",
            "np",
            "launcher",
        } <= set(dag["params"])
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 1, task_id
            assert task["timeout"], f"{task_id} has no execution_timeout"


def test_daily_dag_tasks_and_dependencies(described):
    dag = described["dags"]["recsys_daily_full"]
    tasks = dag["tasks"]
    assert set(tasks) == DAILY_TASKS
    assert dag["schedule"] == "CronDataIntervalTimetable" and dag["max_active_runs"] == 1

    def down(task_id: str) -> set[str]:
        return set(tasks[task_id]["downstream"])

    # Validation: a task listing the tables of the param, then one mapped `validate` per table.
    assert down("validate_inputs.tables") == {"validate_inputs.validate"}
    assert down("validate_inputs.validate") == {"stats"}
    assert down("stats") == {
        "similarity.itemcf",
        "similarity.swing",
        "similarity.usercf",
        "profiles",
        "buckets",
    }
    assert down("profiles") == {"samples"} and down("buckets") == {"recommend"}
    for algo in catalog.SIMILARITY_ALGOS:
        assert down(f"similarity.{algo}") == {"graph"}
    assert down("graph") == {"walks.deepwalk", "walks.node2vec"}
    for method in catalog.WALK_METHODS:
        assert down(f"walks.{method}") == {f"embeddings.{method}"}
        assert down(f"embeddings.{method}") == {"samples"}
    assert down("samples") == {"train.two_tower", "train.ranker"}
    assert down("train.two_tower") == down("train.ranker") == {"recommend"}
    assert down("recommend") == {"evaluate"}
    assert down("evaluate") == {"business_metrics"}
    assert down("business_metrics") == {"validate_outputs.tables"}
    assert down("validate_outputs.tables") == {"validate_outputs.validate"}
    assert down("validate_outputs.validate") == {"publish"}
    assert down("publish") == {"maintain"}
    # One writer of the model registry and of published manifests, shared with the incremental DAG.
    assert {t for t, v in tasks.items() if v["pool"] == "recsys_publish"} == {
        "train.two_tower",
        "train.ranker",
        "publish",
    }
    assert "recsys://published/daily" in tasks["publish"]["outlets"]
    assert {f"recsys://tables/{t}" for t in PUBLISHED_TABLES} <= set(tasks["publish"]["outlets"])
    # Every option of `recsys-spark run-daily` is a param of the same name.
    from recsys_spark.config import DatedConfig
    from recsys_spark.pipeline import DailyConfig

    # `gate` too: every job task gates its own writes before committing them, as run-daily does.
    run_daily = set(DailyConfig.__dataclass_fields__) - set(DatedConfig.__dataclass_fields__)
    assert run_daily <= set(dag["params"])
    writers = {"stats", "similarity", "graph", "walks", "embeddings", "samples", "train"}
    for task_id, task in tasks.items():
        if task_id.split(".", 1)[0] in writers:
            assert "--gate {{ params.gate }}" in task["job_args"], task_id


def test_incremental_dag_shape(described):
    dag = described["dags"]["recsys_incremental"]
    tasks = dag["tasks"]
    assert set(tasks) == {
        "ensure_stream",
        "incremental_update.two_tower",
        "incremental_update.ranker",
        "publish",
    }
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False
    assert dag["schedule"] == "AssetOrTimeSchedule"  # every N minutes, and after each daily publish
    assert set(tasks["ensure_stream"]["downstream"]) == {
        "incremental_update.two_tower",
        "incremental_update.ranker",
    }
    assert tasks["incremental_update.ranker"]["downstream"] == ["publish"]
    assert all(tasks[t]["pool"] == "recsys_publish" for t in tasks if t != "ensure_stream")
    assert {"stream_mode", "stream_stale_seconds"} <= set(dag["params"])


HELPERS = textwrap.dedent(
    """
    import datetime as dt, json, sys
    import _recsys_common as C
    lake = sys.argv[1]
    now = dt.datetime.now(dt.timezone.utc)
    out = {
        "age_z": C.heartbeat_age({"updated_at": "2026-01-01T00:00:00Z"}, now=dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.timezone.utc)),
        "age_naive": C.heartbeat_age({"updated_at": "2026-01-01T00:00:00"}, now=dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=dt.timezone.utc)),
        "age_bad": C.heartbeat_age({"updated_at": "yesterday"}),
        "publish_all": C.publish_arguments({}),
        "publish_some": C.publish_arguments({"skip": ["similarity.usercf", "walks.node2vec", "train"]}),
        "publish_none": C.publish_arguments({"skip": ["stats", "profiles", "similarity", "graph", "walks", "samples", "train", "buckets", "recommend", "business_metrics"]}),
    }
    secret = {"spark_conf": {"spark.hadoop.fs.s3a.secret.key": "s3cr3t", "spark.executor.instances": "4"}}
    out["redacted"] = C.redacted(["spark-submit", "--conf", "spark.hadoop.fs.s3a.secret.key=s3cr3t"], secret)
    base = {"driver_memory": "2g", "executor_memory": "8g", "executor_cores": 4, "spark_packages": "io.delta:delta-spark_2.13:4.0.0"}
    out["submit_local"] = C.submit_arguments({**base, **secret, "spark_master": "local[2]"})
    out["submit_yarn"] = C.submit_arguments({**base, "spark_master": "yarn"})
    beat = {"updated_at": now.isoformat(), "pid": 1, "state": "running"}
    import pathlib
    folder = pathlib.Path(lake, "_checkpoints", "stream"); folder.mkdir(parents=True)
    (folder / "heartbeat.json").write_text(json.dumps(beat))
    params = {"lake": lake, "stream_stale_seconds": 600, "stream_mode": "once", "driver_memory": "1g"}
    out["fresh"] = C.ensure_stream(params)["status"]
    print(json.dumps(out))
    """
)


def test_helpers_heartbeat_and_publish_arguments(airflow, tmp_path):
    proc = airflow.python(HELPERS, str(tmp_path / "lake"))
    assert proc.returncode == 0, _tail(proc)
    out = _json_line(proc.stdout)
    assert out["age_z"] == 60.0 and out["age_naive"] == 30.0 and out["age_bad"] is None
    assert out["fresh"] == "healthy"  # a fresh beat of a running stream: nothing is started
    assert "s3cr3t" not in out["redacted"] and "secret.key=***" in out["redacted"]
    assert out["submit_local"] == [
        "--master", "local[2]", "--driver-memory", "2g", "--packages", "io.delta:delta-spark_2.13:4.0.0",
        "--conf", "spark.executor.instances=4", "--conf", "spark.hadoop.fs.s3a.secret.key=s3cr3t",
    ]  # fmt: skip
    assert out["submit_yarn"][4:8] == ["--executor-memory", "8g", "--executor-cores", "4"]
    assert out["publish_all"].startswith(
        "--tables daily_counts user_stats item_stats user_profiles itemcf_sim"
    )
    some = out["publish_some"].split()
    assert "usercf_sim" not in some and "itemcf_sim" in some
    assert some[some.index("--models") + 1] == "none"
    assert some[some.index("--methods") + 1 :] == ["deepwalk"]
    assert out["publish_none"].split()[:4] == ["--tables", "none", "--models", "none"]


# -- end to end -------------------------------------------------------------------------------------
def _read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_failed_quality_check_stops_the_run_before_publish(
    airflow, generated_lake, tmp_path, spark, capsys, record_property
):
    lake = _copy_lake(generated_lake, tmp_path / "lake")
    # Corrupt day D2: one event of an item that is not in `items` (a critical expectation of events).
    import deltalake
    import pyarrow as pa

    events = str(lake / "events")
    schema = pa.schema(deltalake.DeltaTable(events).schema().to_arrow())
    bad = {
        "user_id": ["u1"],
        "item_id": ["no-such-item"],
        "event": ["click"],
        "ts": [dt.datetime(2026, 11, 3, 12, tzinfo=dt.timezone.utc)],
        "session_id": ["s-bad"],
        "dwell_ms": [None],
        "dt": [dt.date(2026, 11, 3)],
    }
    deltalake.write_deltalake(events, pa.table(bad, schema=schema), mode="append")

    result = airflow.dags_test("recsys_daily_full", D2, {**TINY, "lake": str(lake)})
    record_property("timings", _timing_table(f"recsys_daily_full {D2} (corrupted events)", result))
    states = {t: v["state"] for t, v in result["tasks"].items()}
    assert result["proc"].returncode != 0
    assert result["run"]["state"] == "failed"
    assert states["validate_inputs.validate[events]"] == "failed"
    assert "unknown_item_id" in result["proc"].stdout + result["proc"].stderr
    assert states["stats"] == "upstream_failed" and states["publish"] == "upstream_failed"
    assert not any(s == "success" for t, s in states.items() if not t.startswith("validate_inputs"))
    assert not (lake / "_reports" / "published" / f"{D2}.json").exists()
    assert _read(lake / "_reports" / "quality" / "events" / f"{D2}.json")["status"] == "failed"

    # The publish job itself refuses the day and says why (here run directly, in-process).
    from recsys_spark.cli import main

    code = main(["publish", "--lake", str(lake), "--date", D2], spark=spark)
    err = capsys.readouterr().err
    assert code == 1
    assert "table daily_counts: missing" in err and "model two_tower: full version is missing" in err
    assert "quality events: critical expectation(s) failed" in err
    assert not (lake / "_reports" / "published").exists()


@pytest.fixture(scope="module")
def daily_runs(airflow, generated_lake, tmp_path_factory) -> dict:
    lake = _copy_lake(generated_lake, tmp_path_factory.mktemp("daily") / "lake")
    first = airflow.dags_test("recsys_daily_full", D1, {**TINY, **DAY1, "lake": str(lake)})
    second = airflow.dags_test("recsys_daily_full", D2, {**TINY, "lake": str(lake), "skip": SKIP_HEAVY})
    return {"lake": lake, D1: first, D2: second}


@pytest.mark.slow
def test_daily_run_produces_and_publishes_every_table(daily_runs, airflow, record_property):
    lake, run = daily_runs["lake"], daily_runs[D1]
    record_property("timings", _timing_table(f"recsys_daily_full {D1}", run))
    assert run["proc"].returncode == 0, _tail(run["proc"])
    states = {t: v["state"] for t, v in run["tasks"].items()}
    expected = {t: "success" for t in DAILY_TASKS - {"validate_inputs.validate", "validate_outputs.validate"}}
    expected["validate_inputs.validate"] = "skipped"  # an empty list: nothing to validate
    expected["validate_outputs.validate[rank_samples]"] = "success"
    expected.update({task: "skipped" for task in DAY1_SKIPPED})
    assert states == expected
    # A table is built when any of its writers ran (walks: deepwalk did, node2vec was skipped).
    built = PUBLISHED_TABLES & {
        t for s in catalog.DAILY_STAGES if s.name not in DAY1_SKIPPED for t in s.tables
    }
    assert built < PUBLISHED_TABLES
    for table in built:
        assert (lake / table / "_delta_log").is_dir(), table
    published = _read(lake / "_reports" / "published" / f"{D1}.json")
    assert set(published["tables"]) == built  # a skipped stage's table never built is not named
    assert all(not t.get("stale") for t in published["tables"].values())
    assert published["tables"]["item_embeddings"]["methods"] == {"deepwalk": D1}  # node2vec skipped
    assert {m: v["full"] for m, v in published["models"].items()} == {
        "two_tower": f"full-{D1}",
        "ranker": f"full-{D1}",
    }
    # validate_outputs checked rank_samples; every job also gated each table it wrote before its commit
    # (docs/quality.md), so each published table with a suite has the day's summary, none failed.
    quality = published["quality"]
    assert quality["rank_samples"] == "passed"
    suites = {t for t in built if (ROOT / "schemas" / "expectations" / f"{t}.json").exists()}
    assert suites and suites <= set(quality), suites - set(quality)
    assert "failed" not in quality.values(), quality
    assert (lake / "_reports" / "evaluation" / f"{D1}.json").exists()
    # The publish task emitted the daily Asset with the day and the tables' versions attached.
    events = airflow.python(
        "from airflow.utils.session import create_session\n"
        "from airflow.models.asset import AssetEvent\n"
        "import json\n"
        "with create_session() as s:\n"
        "    print(json.dumps([[e.asset.uri, e.extra] for e in s.query(AssetEvent).all()]))"
    )
    emitted = [
        e for e in _json_line(events.stdout) if e[1].get("lake") == str(lake) and e[1].get("date") == D1
    ]
    uris = {uri for uri, _ in emitted}
    assert "recsys://published/daily" in uris and "recsys://models/two_tower" in uris
    swing = next(extra for uri, extra in emitted if uri == "recsys://tables/swing_sim")
    assert swing["version"] == published["tables"]["swing_sim"]["version"]


@pytest.mark.slow
def test_consecutive_days_warm_start_from_yesterday(daily_runs, record_property):
    lake, run = daily_runs["lake"], daily_runs[D2]
    record_property("timings", _timing_table(f"recsys_daily_full {D2} (skip {SKIP_HEAVY})", run))
    assert run["proc"].returncode == 0, _tail(run["proc"])
    states = {t: v["state"] for t, v in run["tasks"].items()}
    ran = {t for t, state in states.items() if state == "success"}
    assert ran == {
        "validate_inputs.tables",
        "validate_outputs.tables",
        "samples",
        "train.two_tower",
        "train.ranker",
        "publish",
        "maintain",
    }
    for model in catalog.MODELS:
        registry = lake / "_models" / model
        assert sorted(p.name for p in (registry / "full").iterdir()) == [f"full-{D1}", f"full-{D2}"]
        assert _read(registry / "full" / f"full-{D2}" / "manifest.json")["base"] == f"full-{D1}"
        assert _read(registry / "LATEST.json")["full"]["version"] == f"full-{D2}"
    first = _read(lake / "_reports" / "published" / f"{D1}.json")
    second = _read(lake / "_reports" / "published" / f"{D2}.json")
    assert second["models"]["two_tower"]["full"] == f"full-{D2}"
    assert second["models"]["two_tower"]["base"] == f"full-{D1}"
    for table in ("recall_samples", "rank_samples"):
        assert second["tables"][table]["version"] > first["tables"][table]["version"]
        assert second["tables"][table]["date"] == D2
    # Skipped stages: their tables are recorded as they stand (yesterday's), marked stale.
    assert second["tables"]["swing_sim"] == {**first["tables"]["swing_sim"], "stale": True}
    assert second["tables"]["item_stats"] == {**first["tables"]["item_stats"], "stale": True}


@pytest.mark.slow
def test_incremental_dag_updates_both_models(daily_runs, airflow, record_property):
    lake = daily_runs["lake"]
    result = airflow.dags_test(
        "recsys_incremental", f"{D3}T12:00:00+00:00", {**TINY, "lake": str(lake), "stream_mode": "once"}
    )
    record_property("timings", _timing_table("recsys_incremental", result))
    assert result["proc"].returncode == 0, _tail(result["proc"])
    assert {t: v["state"] for t, v in result["tasks"].items()} == {
        "ensure_stream": "success",
        "incremental_update.two_tower": "success",
        "incremental_update.ranker": "success",
        "publish": "success",
    }
    manifests = sorted((lake / "_reports" / "published").glob("incremental-*.json"))
    assert len(manifests) == 1
    published = _read(manifests[0])
    for model in catalog.MODELS:
        latest = _read(lake / "_models" / model / "LATEST.json")
        # D3's events came after full-D2's watermark (start of D3): trained on top of full-D2.
        assert latest["incremental"]["base"] == f"full-{D2}"
        assert latest["serving"] == published["models"][model]["serving"] == f"inc-{D3}-001"
