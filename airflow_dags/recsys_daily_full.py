"""`recsys_daily_full`: the daily full run of recsys-spark, one task per job (docs/airflow.md).

validate inputs -> stats -> similarity (itemcf, swing, usercf) -> graph -> walks (deepwalk, node2vec)
-> embeddings -> samples -> train (two_tower, ranker) -> recommend -> evaluate -> business_metrics
-> validate outputs -> publish -> maintain; profiles (after stats, before samples) and buckets (after
stats, before recommend) run beside the chain (compact small files, vacuum past the retention, remove killed jobs' leftovers)

Each job task validates every table it writes before its Delta commit (`--gate`, the `gate` param, on
by default): a table that fails a critical expectation stays at its previous version and the task
fails, so nothing after it runs on unvalidated data; `validate outputs` re-checks the whole day.

The run for logical date D processes day D (a data-interval timetable: it starts once D is over), the
same work as `recsys-spark run-daily --date D`. Publish writes `<lake>/_reports/published/D.json` and
emits the published tables and models as Assets; it is reached only when every task before it
succeeded or was deliberately skipped (the `skip` param), so a failed job or quality check leaves the
previous day's manifest as the newest.

Environment at parse time: RECSYS_DAILY_CATCHUP=1 to backfill every day since RECSYS_START_DATE
(default 2026-01-01); runs are one at a time, as each day's training warm-starts from the day before.
"""

from __future__ import annotations

import datetime as dt
import os

from _recsys_common import (
    DAILY_PUBLISHED,
    MODEL_ASSETS,
    PUBLISH_POOL,
    TABLE_ASSETS,
    TEMPLATE_MACROS,
    TIMEOUTS,
    VALIDATE_INPUTS,
    VALIDATE_OUTPUTS,
    WALK_METHODS,
    PublishOperator,
    SparkJobOperator,
    catalog,
    common_params,
    job_option_params,
    stage_arguments,
    validation_group,
)
from airflow.sdk import DAG, Param, TaskGroup, chain
from airflow.timetables.interval import CronDataIntervalTimetable

DATE = "--date {{ ds }}"
# Every job task that writes a table validates it before its Delta commit (`--gate {{ params.gate }}`,
# routed like every forwarded option, docs/quality.md), so what a task commits has passed its critical
# checks; validate_outputs re-checks the whole day.

params = {
    **common_params(),
    # The options of `recsys-spark run-daily` (recsys_spark.pipeline.DailyConfig), same names, generated.
    **job_option_params(),
    "skip": Param(
        [],
        type="array",
        description="Task or group ids to skip, e.g. ['similarity.usercf', 'evaluate']; publish then "
        "records their tables as they stand instead of requiring them for the day.",
    ),
    "validate_inputs": Param(list(VALIDATE_INPUTS), type="array", description="Tables validated first."),
    "validate_outputs": Param(
        list(VALIDATE_OUTPUTS), type="array", description="Tables validated before publishing."
    ),
}

with DAG(
    dag_id="recsys_daily_full",
    description="recsys-spark daily full run: statistics, similarities, graph embeddings, samples, models",
    doc_md=__doc__,
    # Data intervals (not Airflow 3's default trigger timetable): the run for D starts after D ends and
    # its logical date, hence {{ ds }}, is D itself.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=dt.datetime.fromisoformat(os.environ.get("RECSYS_START_DATE", "2026-01-01")).replace(
        tzinfo=dt.timezone.utc
    ),
    catchup=os.environ.get("RECSYS_DAILY_CATCHUP", "0").lower() in ("1", "true", "yes"),
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=20),
    params=params,
    user_defined_macros=TEMPLATE_MACROS,
    tags=["recsys"],
    default_args={
        "owner": "recsys",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        # A task skipped on purpose (the skip param) must not skip everything after it.
        "trigger_rule": "none_failed",
    },
) as dag:
    validate_inputs = validation_group(
        "validate_inputs", "validate_inputs", "Great Expectations suites of the inputs, one task per table"
    )

    def stage_task(name: str, **kwargs) -> SparkJobOperator:
        """The task of run-daily's stage `name` (inside its task group: the id's last part)."""
        stage = catalog.stage_named(name)
        task_id = name.rsplit(".", 1)[-1]
        return SparkJobOperator(
            task_id=task_id, job=stage.job, job_args=stage_arguments(stage, DATE), **kwargs
        )

    def stage_group(group: str, tooltip: str, **kwargs) -> TaskGroup:
        with TaskGroup(group, tooltip=tooltip) as task_group:
            for stage in catalog.DAILY_STAGES:
                if stage.group == group:
                    stage_task(stage.name, **kwargs)
        return task_group

    stats = stage_task("stats")
    profiles = stage_task("profiles")
    buckets = stage_task("buckets")
    similarity = stage_group("similarity", "ItemCF, Swing and UserCF in parallel")
    graph = stage_task("graph")
    stage_group("walks", "DeepWalk and Node2vec walks")
    stage_group("embeddings", "Skip-gram item embeddings per walk method")
    samples = stage_task("samples")
    # The model registry has one writer at a time, shared with the incremental DAG.
    train = stage_group("train", "Full model updates, warm-started from the day before", pool=PUBLISH_POOL)
    # The lists of the day (recall -> rank -> rerank), from the models the train group just published.
    recommend = stage_task("recommend")
    evaluate = stage_task("evaluate")
    business_metrics = stage_task("business_metrics")

    validate_outputs = validation_group(
        "validate_outputs", "validate_outputs", "Suites of every table the day wrote, one task per table"
    )

    publish = PublishOperator(
        task_id="publish",
        job_args=f"{DATE} --mode daily {{{{ publish_arguments(params) }}}}",
        report="{{ ds }}.json",
        pool=PUBLISH_POOL,
        execution_timeout=TIMEOUTS["publish"],
        outlets=[DAILY_PUBLISHED, *TABLE_ASSETS.values(), *MODEL_ASSETS.values()],
        # Publish only what every earlier task vouched for: any failure upstream stops it.
        trigger_rule="none_failed",
    )

    # Lake upkeep once the day is published (docs/lake.md): the new versions change no data, so it
    # never holds up serving; a failure here leaves every table readable as it was.
    upkeep = [SparkJobOperator(task_id=job, job=job) for job in catalog.UPKEEP_JOBS]

    # The order, stage after stage; within walks -> embeddings each method only waits for its own walks.
    chain(validate_inputs, stats, similarity, graph)
    for method in WALK_METHODS:
        graph >> dag.get_task(f"walks.{method}") >> dag.get_task(f"embeddings.{method}") >> samples
    chain(samples, train, recommend, evaluate, business_metrics, validate_outputs, publish, *upkeep)
    # Profiles feed the ranker features of the samples and the profile channel; buckets the A/B lists.
    stats >> profiles >> samples
    stats >> buckets >> recommend
