"""`recsys_incremental`: keep the models fresh between daily runs (docs/airflow.md).

ensure_stream -> incremental_update (two_tower, ranker) -> publish

Every RECSYS_INCREMENTAL_MINUTES minutes (parse time, default 10), and also right after the daily run
publishes (its `recsys://published/daily` Asset), so the incremental slot moves onto the new full
version at once. One run at a time (`max_active_runs=1`, no catch-up: a missed slot is covered by the
next run, which trains on every event since the watermark). The training and publish tasks share the
`recsys_publish` pool (1 slot) with the daily run's training and publish: the model registry and the
published manifests have a single writer at any moment.

- ensure_stream: the streaming ingest's heartbeat (`<lake>/_checkpoints/stream/heartbeat.json`) must
  be fresh; otherwise `stream --once` catches up (`stream_mode` "once") or the continuous stream is
  started in the background ("continuous"). Before the stream job exists it warns and goes on.
- incremental_update: `train --mode incremental` (ID embeddings only) on the events since each model's
  watermark, for the newest day in events; a no-op when nothing new arrived.
- publish: `publish --mode incremental` writes `_reports/published/incremental-<stamp>.json` when the
  serving versions changed.
"""

from __future__ import annotations

import datetime as dt
import os

from _recsys_common import (
    DAILY_PUBLISHED,
    INCREMENTAL_PUBLISHED,
    MODEL_ASSETS,
    MODELS,
    PUBLISH_POOL,
    TIMEOUTS,
    PublishOperator,
    SparkJobOperator,
    common_params,
    ensure_stream,
    job_option_params,
)
from airflow.sdk import DAG, Param, TaskGroup, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import DeltaTriggerTimetable

MINUTES = int(os.environ.get("RECSYS_INCREMENTAL_MINUTES", "10"))
STAMP = "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%SZ') }}"  # asset-triggered runs have no logical date

params = {
    **common_params(),
    # One process by default: an update trains minutes of events, less than a launcher start-up costs.
    **job_option_params(["np", "launcher"], launcher="local"),
    "stream_mode": Param(
        "once",
        enum=["once", "continuous"],
        description="A stale stream: catch up with `stream --once`, or start the continuous stream.",
    ),
    "stream_stale_seconds": Param(
        600, type="integer", minimum=1, description="Heartbeat older than this: the stream is down."
    ),
    "stream_trigger_seconds": Param(60, type="integer", minimum=1, description="Continuous stream trigger."),
    "lake_conn_id": Param(
        "", type="string", description="Airflow connection for an object-store lake's heartbeat (s3a://)."
    ),
}

with DAG(
    dag_id="recsys_incremental",
    description="recsys-spark incremental model updates from the streamed events",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=DeltaTriggerTimetable(dt.timedelta(minutes=MINUTES)), assets=DAILY_PUBLISHED
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=2),
    params=params,
    tags=["recsys"],
    default_args={
        "owner": "recsys",
        # Retrying soon is pointless, the next run starts in MINUTES anyway; one retry covers a blip.
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=1),
    },
) as dag:

    @task(task_id="ensure_stream", execution_timeout=TIMEOUTS["stream"])
    def ensure_stream_task(**context) -> dict:
        return ensure_stream(context["params"])

    with TaskGroup("incremental_update", tooltip="ID embeddings on the events since the watermark") as update:
        for model in MODELS:
            SparkJobOperator(
                task_id=model,
                job="train",
                # No --date: the newest day in events, i.e. what the stream has landed.
                job_args=f"--model {model} --mode incremental --np {{{{ params.np }}}} "
                "--launcher {{ params.launcher }}",
                pool=PUBLISH_POOL,
                execution_timeout=dt.timedelta(minutes=max(2 * MINUTES, 20)),
            )

    publish = PublishOperator(
        task_id="publish",
        job_args=f"--mode incremental --stamp {STAMP}",
        report=f"incremental-{STAMP}.json",
        pool=PUBLISH_POOL,
        execution_timeout=TIMEOUTS["publish"],
        outlets=[INCREMENTAL_PUBLISHED, *MODEL_ASSETS.values()],
    )

    ensure_stream_task() >> update >> publish
