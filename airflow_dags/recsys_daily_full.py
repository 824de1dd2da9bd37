"""`recsys_daily_full`: the daily full run of recsys-spark, one task per job (docs/airflow.md).

validate inputs -> stats -> similarity (itemcf, swing, usercf) -> graph -> walks (deepwalk, node2vec)
-> embeddings -> samples -> train (two_tower, ranker) -> evaluate -> validate outputs -> publish
-> maintain (compact small files, vacuum past the retention, remove killed jobs' leftovers)

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
    MODELS,
    PUBLISH_POOL,
    SIMILARITY_ALGOS,
    TABLE_ASSETS,
    TEMPLATE_MACROS,
    TIMEOUTS,
    VALIDATE_INPUTS,
    VALIDATE_OUTPUTS,
    WALK_METHODS,
    PublishOperator,
    SparkJobOperator,
    common_params,
    validation_group,
)
from airflow.sdk import DAG, Param, TaskGroup, chain
from airflow.timetables.interval import CronDataIntervalTimetable

DATE = "--date {{ ds }}"

params = {
    **common_params(),
    # The options of `recsys-spark run-daily` (recsys_spark.pipeline.DailyConfig), same names.
    "top_k": Param(100, type="integer", minimum=1, description="Neighbours kept by the similarity stages."),
    "num_walks": Param(10, type="integer", minimum=1, description="Walks started from every item."),
    "walk_length": Param(40, type="integer", minimum=2, description="Items per walk at most."),
    "p": Param(1.0, type="number", description="Node2vec return parameter."),
    "q": Param(0.5, type="number", description="Node2vec in-out parameter."),
    "dim": Param(64, type="integer", minimum=1, description="Embedding dimension."),
    "epochs": Param(5, type="integer", minimum=1, description="Embedding training epochs."),
    "train_epochs": Param(1, type="integer", minimum=1, description="Passes of the full model update."),
    "train_batch_size": Param(256, type="integer", minimum=1, description="Rows per step and rank."),
    "train_learning_rate": Param(0.005, type="number", description="Adam learning rate of the models."),
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

    stats = SparkJobOperator(task_id="stats", job="stats", job_args=DATE)

    with TaskGroup("similarity", tooltip="ItemCF, Swing and UserCF in parallel") as similarity:
        for algo in SIMILARITY_ALGOS:
            SparkJobOperator(
                task_id=algo,
                job="similarity",
                job_args=f"{DATE} --algo {algo} --top-k {{{{ params.top_k }}}}",
            )

    graph = SparkJobOperator(task_id="graph", job="graph", job_args=DATE)

    with TaskGroup("walks", tooltip="DeepWalk and Node2vec walks") as walks:
        for method in WALK_METHODS:
            node2vec = " --p {{ params.p }} --q {{ params.q }}" if method == "node2vec" else ""
            SparkJobOperator(
                task_id=method,
                job="walks",
                job_args=f"{DATE} --method {method} --num-walks {{{{ params.num_walks }}}} "
                f"--walk-length {{{{ params.walk_length }}}}{node2vec}",
            )

    with TaskGroup("embeddings", tooltip="Skip-gram item embeddings per walk method") as embeddings:
        for method in WALK_METHODS:
            SparkJobOperator(
                task_id=method,
                job="embed",
                job_args=f"{DATE} --method {method} --dim {{{{ params.dim }}}} --epochs {{{{ params.epochs }}}} "
                "--np {{ params.np }} --launcher {{ params.launcher }}",
            )

    samples = SparkJobOperator(task_id="samples", job="samples", job_args=DATE)

    with TaskGroup("train", tooltip="Full model updates, warm-started from the day before") as train:
        for model in MODELS:
            SparkJobOperator(
                task_id=model,
                job="train",
                job_args=f"{DATE} --model {model} --mode full --np {{{{ params.np }}}} "
                "--launcher {{ params.launcher }} --epochs {{ params.train_epochs }} "
                "--batch-size {{ params.train_batch_size }} --learning-rate {{ params.train_learning_rate }}",
                # The model registry has one writer at a time, shared with the incremental DAG.
                pool=PUBLISH_POOL,
            )

    evaluate = SparkJobOperator(task_id="evaluate", job="evaluate", job_args=DATE)

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
    maintain = SparkJobOperator(task_id="maintain", job="maintain")

    # The order, stage after stage; within walks -> embeddings each method only waits for its own walks.
    chain(validate_inputs, stats, similarity, graph)
    for method in WALK_METHODS:
        graph >> dag.get_task(f"walks.{method}") >> dag.get_task(f"embeddings.{method}") >> samples
    chain(samples, train, evaluate, validate_outputs, publish, maintain)
