"""Shared by the recsys-spark DAG files: where the project lives, the DAG params, and `SparkJobOperator`.

Nothing here imports Spark or `recsys_spark` (they live in the project's own virtualenv, not in
Airflow's): every task runs one job as `spark-submit jobs/<job>.py ...` in a child process, so
parsing a DAG file costs a few imports and no JVM.

Environment (read on the worker when a task runs; RECSYS_HOME also at parse time for defaults):
- `RECSYS_HOME`: the recsys-spark checkout holding `jobs/` (default: the folder above this one).
- `RECSYS_SPARK_SUBMIT`: the `spark-submit` to run (default `$RECSYS_HOME/.venv/bin/spark-submit`,
  else `spark-submit` on PATH).
- `RECSYS_PYTHON`: the driver's Python (default `$RECSYS_HOME/.venv/bin/python`), exported as
  `PYSPARK_PYTHON`/`PYSPARK_DRIVER_PYTHON` unless those are set: without it the driver would run
  whatever `python3` is on the worker's PATH, which lacks our packages.
- `RECSYS_LAKE`, `RECSYS_SPARK_MASTER`, `RECSYS_SPARK_PACKAGES`: defaults of the matching params.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.sdk import Asset, BaseOperator, Param, TaskGroup, task

log = logging.getLogger(__name__)

# This file sits in <checkout>/airflow_dags/, so the checkout is one level up unless RECSYS_HOME says.
DEFAULT_HOME = Path(__file__).resolve().parent.parent
PUBLISH_POOL = "recsys_publish"  # 1 slot: model registry writes and publishes never overlap


def load_catalog():
    """`recsys_spark/catalog.py` of the checkout, loaded by path: Airflow's venv cannot import recsys_spark.

    The catalogue is standard library only, so this costs one small file; RECSYS_HOME's copy first,
    then the checkout holding these DAG files.
    """
    for home in dict.fromkeys([os.environ.get("RECSYS_HOME") or "", str(DEFAULT_HOME)]):
        path = Path(home) / "recsys_spark" / "catalog.py"
        if home and path.exists():
            spec = importlib.util.spec_from_file_location("recsys_catalog", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # typing's NamedTuple looks its module up while loading
            spec.loader.exec_module(module)
            return module
    raise ImportError(f"no recsys_spark/catalog.py under RECSYS_HOME or {DEFAULT_HOME}")


catalog = load_catalog()
EXIT_FAILED, EXIT_USAGE = catalog.EXIT_FAILED, catalog.EXIT_USAGE
MODELS, WALK_METHODS, SIMILARITY_ALGOS = catalog.MODELS, catalog.WALK_METHODS, catalog.SIMILARITY_ALGOS
GATE_STOPPED = "stopped by a quality gate"  # the CLI's last line when a gate blocked a commit (exit 1)

# Logical names of what the daily run publishes; a downstream DAG schedules on them.
TABLES = catalog.PUBLISHED_TABLES
DAILY_PUBLISHED = Asset("recsys://published/daily")
INCREMENTAL_PUBLISHED = Asset("recsys://published/incremental")
TABLE_ASSETS = {t: Asset(f"recsys://tables/{t}") for t in TABLES}
MODEL_ASSETS = {m: Asset(f"recsys://models/{m}") for m in MODELS}

# What each daily task writes that publish requires for the day, unless the task was skipped.
STAGE_TABLES: dict[str, tuple[str, ...]] = {
    s.name: required
    for s in catalog.DAILY_STAGES
    if (required := tuple(t for t in s.tables if t in catalog.DAILY_TABLES))
}
VALIDATE_INPUTS = catalog.VALIDATE_INPUTS
VALIDATE_OUTPUTS = catalog.VALIDATE_OUTPUTS

# Generous per-task limits: a stuck job is killed (and retried) instead of holding the day forever.
TIMEOUTS = {
    "validate": dt.timedelta(minutes=30),
    "stats": dt.timedelta(hours=1),
    "similarity": dt.timedelta(hours=2),
    "graph": dt.timedelta(hours=1),
    "walks": dt.timedelta(hours=1),
    "embed": dt.timedelta(hours=2),
    "samples": dt.timedelta(hours=1),
    "train": dt.timedelta(hours=3),
    "recommend": dt.timedelta(hours=2),
    "evaluate": dt.timedelta(hours=1),
    "profiles": dt.timedelta(hours=1),
    "buckets": dt.timedelta(minutes=30),
    "business-metrics": dt.timedelta(hours=1),
    "publish": dt.timedelta(minutes=15),
    "stream": dt.timedelta(minutes=30),
    "maintain": dt.timedelta(hours=1),
}


def recsys_home() -> Path:
    return Path(os.environ.get("RECSYS_HOME") or DEFAULT_HOME)


def spark_submit_binary(home: Path) -> str:
    if os.environ.get("RECSYS_SPARK_SUBMIT"):
        return os.environ["RECSYS_SPARK_SUBMIT"]
    local = home / ".venv" / "bin" / "spark-submit"
    return str(local) if local.exists() else "spark-submit"


def job_environment(params: dict[str, Any], home: Path) -> dict[str, str]:
    env = dict(os.environ)
    python = os.environ.get("RECSYS_PYTHON") or str(home / ".venv" / "bin" / "python")
    if Path(python).exists():
        env.setdefault("PYSPARK_PYTHON", python)
        env.setdefault("PYSPARK_DRIVER_PYTHON", python)
    # recsys_spark.session sizes a local driver from this; spark-submit's --driver-memory does the rest.
    env["RECSYS_DRIVER_MEMORY"] = str(params["driver_memory"])
    env["PYTHONUNBUFFERED"] = "1"  # job output reaches the task log line by line
    return env


def submit_arguments(params: dict[str, Any]) -> list[str]:
    """spark-submit's own options from the run's params (master, resources, Delta jars, --conf)."""
    args = ["--master", str(params["spark_master"]), "--driver-memory", str(params["driver_memory"])]
    if not str(params["spark_master"]).startswith("local"):
        args += ["--executor-memory", str(params["executor_memory"])]
        args += ["--executor-cores", str(params["executor_cores"])]
    if params.get("spark_packages"):
        args += ["--packages", str(params["spark_packages"])]
    for key, value in sorted((params.get("spark_conf") or {}).items()):
        args += ["--conf", f"{key}={value}"]
    return args


SECRET_WORDS = ("secret", "password", "token", "credential", "access.key")


def secret_conf_values(params: dict[str, Any]) -> list[str]:
    return [
        str(value)
        for key, value in (params.get("spark_conf") or {}).items()
        if value and any(word in key.lower() for word in SECRET_WORDS)
    ]


def mask_secret_conf(params: dict[str, Any]) -> None:
    """Register secret-looking spark_conf values (S3 keys...) with Airflow's secrets masker.

    A safety net only: params are stored in plain text in the metadata DB with the run's conf, so
    credentials belong in the worker's environment (AWS_* variables, instance roles), not in params.
    """
    from airflow.sdk.log import mask_secret

    for value in secret_conf_values(params):
        mask_secret(value)


def redacted(argv: Sequence[str], params: dict[str, Any]) -> str:
    text = shlex.join(argv)
    for value in secret_conf_values(params):
        text = text.replace(value, "***")
    return text


def job_command(job: str, params: dict[str, Any], job_args: Sequence[str], home: Path) -> list[str]:
    """The full argv: spark-submit [options] jobs/<job>.py --lake L --master M --engine E [job args]."""
    common = ["--lake", str(params["lake"]), "--master", str(params["spark_master"])]
    common += ["--engine", str(params["engine"])]
    script = str(
        home / "jobs" / f"{job.replace('-', '_')}.py"
    )  # business-metrics -> jobs/business_metrics.py
    return [spark_submit_binary(home), *submit_arguments(params), script, *common, *job_args]


def publish_arguments(params: dict[str, Any]) -> str:
    """`--tables ... --models ... --methods ...` for the daily publish: what the run's tasks produced.

    A task skipped by the `skip` param leaves its table as it was; publish then records it as it stands
    instead of requiring it for the day. `none` is the publish job's spelling of an empty list.
    """
    skip = set(params.get("skip") or [])

    def skipped(task_id: str) -> bool:
        return catalog.is_skipped(task_id, skip)

    tables = [t for task, ts in STAGE_TABLES.items() if not skipped(task) for t in ts]
    models = [m for m in MODELS if not skipped(f"train.{m}")]
    methods = [m for m in WALK_METHODS if not skipped(f"walks.{m}") and not skipped(f"embeddings.{m}")]
    tables = [t for t in dict.fromkeys(tables) if t not in ("walks", "item_embeddings") or methods]
    return " ".join(
        [
            "--tables",
            *(tables or ["none"]),
            "--models",
            *(models or ["none"]),
            "--methods",
            *(methods or list(WALK_METHODS)),
        ]
    )


def optional_flag(flag: str, value: Any) -> str:
    """`flag value` shell-quoted (a JSON spec stays one argument), or nothing when the param is null."""
    return "" if value is None or value == "" else f"{flag} {shlex.quote(str(value))}"


TEMPLATE_MACROS = {"publish_arguments": publish_arguments, "optional_flag": optional_flag}


def common_params() -> dict[str, Param]:
    home = recsys_home()
    return {
        "lake": Param(
            os.environ.get("RECSYS_LAKE", str(home / "lake")),
            type="string",
            description="Lake directory or URI (file://, s3a://bucket/lake) holding the Delta tables.",
        ),
        "spark_master": Param(
            os.environ.get("RECSYS_SPARK_MASTER", "local[*]"),
            type="string",
            description="Spark master URL: local[N], spark://host:7077, yarn, k8s://...",
        ),
        "engine": Param("auto", enum=["auto", "spark", "delta-rs"], description="Delta engine of the jobs."),
        "driver_memory": Param("2g", type="string", description="spark-submit --driver-memory."),
        "executor_memory": Param(
            "4g", type="string", description="spark-submit --executor-memory (clusters)."
        ),
        "executor_cores": Param(2, type="integer", minimum=1, description="spark-submit --executor-cores."),
        "spark_packages": Param(
            os.environ.get("RECSYS_SPARK_PACKAGES", ""),
            type="string",
            description="spark-submit --packages, e.g. io.delta:delta-spark_2.13:4.0.0 for Delta's own engine.",
        ),
        "spark_conf": Param({}, type="object", description="Extra spark-submit --conf key=value pairs."),
        "extra_args": Param(
            {},
            type="object",
            description='More job flags by task or group id, e.g. {"embeddings": "--window 3"}.',
        ),
    }


# The jobs' options as DAG params, generated from the job configs (`python -m recsys_spark.pipeline`
# writes this file; tests/test_catalog.py fails when it is stale): names, defaults, bounds, choices.
JOB_PARAMS = json.loads((Path(__file__).resolve().parent / "job_params.json").read_text())


def job_option_params(names: Iterable[str] | None = None, **defaults: Any) -> dict[str, Param]:
    """Params of the run-daily options forwarded to the jobs (all, or `names`), `defaults` overriding."""
    specs = JOB_PARAMS["params"]
    params = {}
    for name in specs if names is None else names:
        spec = dict(specs[name])
        default = spec.pop("default")
        params[name] = Param(defaults.get(name, default), **spec)
    return params


def stage_arguments(stage: Any, date: str = "--date {{ ds }}") -> str:
    """The job flags of a daily stage's task: `date`, the stage's own (`--algo swing`), then each job
    option forwarded from its run-daily param (`--top-k {{ params.top_k }}`), as run-daily passes them."""
    flags = [date, *(f"--{k.replace('_', '-')} {v}" for k, v in stage.args)]
    for option, param in JOB_PARAMS["routes"][stage.job].items():
        flag = f"--{option.replace('_', '-')}"
        if "null" in JOB_PARAMS["params"][param]["type"]:  # None = the job's default: no flag at all
            flags.append(f"{{{{ optional_flag('{flag}', params.{param}) }}}}")
        else:
            flags.append(f"{flag} {{{{ params.{param} }}}}")
    return " ".join(flags)


class SparkJobOperator(BaseOperator):
    """Runs `spark-submit jobs/<job>.py` with the run's params; the job's exit code decides the outcome.

    Exit 0 is success. Exit codes in `fail_fast_codes` (by default 2, a usage error or missing input)
    fail the task at once: a retry would give the same answer. Any other code fails it with retries (a
    lost executor, a killed driver). The child gets its own process group and SIGTERM on timeout/kill.
    The task is skipped when its id or group is in the `skip` param.
    """

    template_fields: Sequence[str] = ("job_args",)
    ui_color = "#fde9c4"

    def __init__(
        self,
        *,
        job: str,
        job_args: str = "",
        fail_fast_codes: Iterable[int] = (EXIT_USAGE,),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("execution_timeout", TIMEOUTS.get(job))
        super().__init__(**kwargs)
        self.job = job
        self.job_args = job_args
        self.fail_fast_codes = tuple(fail_fast_codes)
        self._hook = None

    def should_skip(self, params: dict[str, Any]) -> str | None:
        skip = set(params.get("skip") or [])
        hit = [n for n in catalog.skip_names(self.task_id) if n in skip]
        return f"{hit[0]} is in the skip param" if hit else None

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.hooks.subprocess import SubprocessHook

        params = context["params"]
        reason = self.should_skip(params)
        if reason:
            raise AirflowSkipException(reason)
        extra = " ".join(
            (params.get("extra_args") or {}).get(n, "") for n in catalog.skip_names(self.task_id)
        )
        home = recsys_home()
        argv = job_command(self.job, params, [*shlex.split(self.job_args), *shlex.split(extra)], home)
        mask_secret_conf(params)  # the command line is logged (here and by the hook)
        self.log.info("running: %s", redacted(argv, params))
        self._hook = SubprocessHook()
        result = self._hook.run_command(argv, env=job_environment(params, home))
        if result.exit_code == 0:
            return
        message = f"recsys-spark {self.job} exited with {result.exit_code}: {result.output}"
        # A quality gate refused the job's output (nothing committed): the same data fails again.
        gated = result.exit_code == 1 and GATE_STOPPED in (result.output or "")
        if result.exit_code in self.fail_fast_codes or gated:
            raise AirflowFailException(message + " (not retried: the same inputs give the same answer)")
        raise AirflowException(message)

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.send_sigterm()


class ValidateOperator(SparkJobOperator):
    """`validate --table T --date D` for one table (one mapped instance of `validation_group`).

    Exit 1 (a critical expectation failed) fails the task without retries, which stops the run
    before publish: a quality failure is a data problem for a person, not a transient one.
    """

    def __init__(self, *, table: str, **kwargs: Any) -> None:
        super().__init__(
            job="validate",
            job_args=f"--date {{{{ ds }}}} --table {table}",
            fail_fast_codes=(EXIT_FAILED, EXIT_USAGE),
            **kwargs,
        )
        self.table = table


def validation_group(group_id: str, params_key: str, tooltip: str) -> TaskGroup:
    """`<group_id>.tables` lists the tables of the `params_key` list param (none when the group is in
    `skip`); `<group_id>.validate` runs once per table (dynamic task mapping, shown as
    `validate [<table>]`). An empty list skips the validation without starting a process."""
    with TaskGroup(group_id, tooltip=tooltip) as group:

        @task(task_id="tables", execution_timeout=dt.timedelta(minutes=5))
        def tables(**context: Any) -> list[str]:
            params = context["params"]
            if group_id in (params.get("skip") or []):
                return []
            return list(dict.fromkeys(params.get(params_key) or []))

        # partial() takes the task-level arguments itself: the defaults set in __init__ come too late.
        ValidateOperator.partial(
            task_id="validate", map_index_template="{{ task.table }}", execution_timeout=TIMEOUTS["validate"]
        ).expand(table=tables())
    return group


class PublishOperator(SparkJobOperator):
    """The publish job; on success, attaches what was published to the outlet Assets' events.

    When the job published nothing (incremental: the serving versions did not change), the task ends
    as skipped, so no Asset event wakes the consumers for nothing.
    """

    template_fields: Sequence[str] = ("job_args", "report")

    def __init__(self, *, report: str, **kwargs: Any) -> None:
        super().__init__(job="publish", fail_fast_codes=(EXIT_FAILED, EXIT_USAGE), **kwargs)
        self.report = report  # templated name of the manifest under <lake>/_reports/published/

    def execute(self, context: Any) -> None:
        super().execute(context)
        params = context["params"]
        lake = str(params["lake"])
        try:
            manifest = read_lake_json(
                lake, "_reports", "published", self.report, conn_id=params.get("lake_conn_id")
            )
        except Exception as exc:  # an object store this worker cannot read: publish did succeed
            self.log.warning("published, but cannot read %s back for the Asset events: %s", self.report, exc)
            manifest = {}
        if manifest is None:
            raise AirflowSkipException(f"nothing new to publish: no {self.report} was written")
        summary = {"lake": lake, "date": manifest.get("date"), "report": self.report}
        for asset in self.outlets:
            extra = dict(summary)
            name = asset.uri.rsplit("/", 1)[-1]
            if name in (manifest.get("tables") or {}):
                extra["version"] = manifest["tables"][name].get("version")
            if name in (manifest.get("models") or {}):
                extra.update({k: v for k, v in manifest["models"][name].items() if isinstance(v, str)})
            context["outlet_events"][asset].extra = extra


def _local_path(lake: str, *parts: str) -> Path | None:
    parsed = urlparse(lake)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else lake, *parts)
    return None


def read_lake_json(lake: str, *parts: str, conn_id: str | None = None) -> dict | None:
    """A small JSON file under the lake, None when missing. Object stores through Airflow's ObjectStoragePath."""
    local = _local_path(lake, *parts)
    try:
        if local is not None:
            return json.loads(local.read_text())
        from airflow.sdk import ObjectStoragePath

        uri = "/".join([lake.rstrip("/").replace("s3a://", "s3://", 1), *parts])
        return json.loads(ObjectStoragePath(uri, conn_id=conn_id or None).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def heartbeat_age(heartbeat: dict | None, now: dt.datetime | None = None) -> float | None:
    """Seconds since the stream's heartbeat `updated_at` (ISO-8601; naive means UTC); None if unreadable."""
    if not heartbeat or not heartbeat.get("updated_at"):
        return None
    try:
        updated = dt.datetime.fromisoformat(str(heartbeat["updated_at"]).replace("Z", "+00:00"))
    except ValueError:
        return None
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=dt.timezone.utc)
    return ((now or dt.datetime.now(dt.timezone.utc)) - updated).total_seconds()


def ensure_stream(params: dict[str, Any]) -> dict[str, Any]:
    """Make sure the streaming ingest (`recsys-spark stream`) is alive; returns what was found and done.

    Contract of the stream job (issue #9): it refreshes `<lake>/_checkpoints/stream/heartbeat.json`
    (`{"updated_at": ISO, "pid": N, "state": ...}`) while it runs. A fresh heartbeat of a running stream:
    nothing to do. Stale, missing, or the stream stopped/failed:
    `stream_mode` "once" runs `stream --once` (processes every landed file, then exits) as a catch-up;
    "continuous" starts `stream --trigger-seconds N` in the background, detached from this task.
    """
    lake = str(params["lake"])
    heartbeat = read_lake_json(lake, *catalog.HEARTBEAT_PATH, conn_id=params.get("lake_conn_id"))
    age = heartbeat_age(heartbeat)
    limit = float(params["stream_stale_seconds"])
    # The stream job also writes "state": running / stopped (a --once run ended) / failed. Only a fresh
    # beat of a running stream means files are being picked up without us; the bare {updated_at, pid}
    # contract (no state) counts as running.
    running = (heartbeat or {}).get("state", catalog.RUNNING) == catalog.RUNNING
    if age is not None and age <= limit and running:
        log.info("stream healthy: heartbeat %.0fs old (pid %s)", age, heartbeat.get("pid"))
        return {"status": "healthy", "age_seconds": age}
    if age is None:
        state = "missing"
    elif not running:
        state = f"{heartbeat.get('state')} ({age:.0f}s ago)"
    else:
        state = f"{age:.0f}s old (limit {limit:.0f}s)"
    home = recsys_home()
    env = job_environment(params, home)
    mask_secret_conf(params)
    if params["stream_mode"] == "continuous":
        argv = job_command(
            "stream", params, ["--trigger-seconds", str(params["stream_trigger_seconds"])], home
        )
        log_dir = Path(os.environ.get("RECSYS_STREAM_LOG_DIR") or tempfile.gettempdir())
        log_file = log_dir / f"recsys-stream-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.log"
        log.warning("stream heartbeat %s: starting %s (log %s)", state, redacted(argv, params), log_file)
        with open(log_file, "ab") as out:
            # A new session: the stream outlives this task and is not killed with its process group.
            process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return {"status": "started", "pid": process.pid, "log": str(log_file), "heartbeat": state}
    from airflow.providers.standard.hooks.subprocess import SubprocessHook

    argv = job_command("stream", params, ["--once"], home)
    log.warning("stream heartbeat %s: catching up with %s", state, redacted(argv, params))
    code = SubprocessHook().run_command(argv, env=env).exit_code  # output goes to the task log
    if code == EXIT_USAGE:
        raise AirflowFailException("stream --once exited 2: bad arguments or no lake at the `lake` param")
    if code:
        raise AirflowException(f"stream --once failed with exit code {code}")
    return {"status": "caught_up", "heartbeat": state}
