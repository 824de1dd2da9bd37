"""`recsys-spark validate --table T [--date D]`: run a table's expectation suite on Spark through GE.

Exit codes: 0 every critical expectation held (warnings may have failed), 1 a critical one failed
(named, with what was observed), 2 usage error (unknown table, table absent, no rows for --date).

The library entry points take DataFrames: `validate_frame(spark, df, table, ...)` validates any
DataFrame against `table`'s suite (the publish gate uses it on staged data), `validate_table(lake,
table, date)` picks the right slice of the lake first.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from recsys_spark.catalog import EXIT_FAILED, EXIT_OK
from recsys_spark.config import DatedConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.quality import suites as S
from recsys_spark.quality.reports import (
    Check,
    Outcome,
    describe_observed,
    quality_path,
    summary_lines,
    write_summary,
)

log = logging.getLogger(__name__)

SITE_NAME = "quality"


@dataclass
class ValidateConfig(DatedConfig):
    """Validates one table: for date-partitioned tables the --date partition, compared with the
    previous day's for volume and drift; other tables whole, compared with their previous version.
    Data Docs and a JSON summary go under <lake>/_reports/quality/."""

    table: str | None = option(
        None, "Table to validate (required); every table with a suite in schemas/expectations/."
    )
    volume_tolerance: float | None = option(
        None,
        "Allowed relative change of row counts and distinct ids vs the previous day (0.5 = from half to 1.5 times); default the suite's.",
    )
    mix_tolerance: float | None = option(
        None,
        "Allowed absolute change of shares and rates (event-type mix, label rates) vs the previous day "
        "(0.05 = ±5 points); default the suite's.",
    )
    max_future_hours: float = option(
        24.0, "Timestamps later than now + this many hours count as in the future (as in ingest)."
    )
    only_critical: bool = option(False, "Run only the critical expectations (what the publish gate runs).")


def tolerances_for(suite: S.Suite, cfg_volume: float | None, cfg_mix: float | None) -> dict[str, float]:
    out = dict(suite.tolerances)
    if cfg_volume is not None:
        out["volume"] = cfg_volume
    if cfg_mix is not None:
        out["mix"] = cfg_mix
    return out


def template_params(date: dt.date | None, max_future_hours: float) -> dict[str, str]:
    """Values for `${...}` in derived expressions, fixed once per run so every row sees the same."""
    limit = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=max_future_hours)
    return {
        "date": str(date) if date else "",
        "future_limit": limit.strftime("%Y-%m-%d %H:%M:%S"),
    }


# -- the GE side -----------------------------------------------------------------------------
def _ge_context(results_dir: str, site_dir: str):
    """An ephemeral GE context whose validation results and Data Docs live on disk.

    Everything else (suites, definitions) stays in memory: the suites' source of truth is
    `schemas/expectations/`. Keeping the results store on disk makes the Data Docs index list every
    earlier run too, not just this process's.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, ProgressBarsConfig

    memory = {"store_backend": {"class_name": "InMemoryStoreBackend"}}
    config = DataContextConfig(
        stores={
            "expectations_store": {"class_name": "ExpectationsStore", **memory},
            "validation_results_store": {
                "class_name": "ValidationResultsStore",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": results_dir},
            },
            "checkpoint_store": {"class_name": "CheckpointStore", **memory},
            "validation_definition_store": {"class_name": "ValidationDefinitionStore", **memory},
        },
        expectations_store_name="expectations_store",
        validation_results_store_name="validation_results_store",
        checkpoint_store_name="checkpoint_store",
        data_docs_sites={
            SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": site_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _report_dirs(lake, scratch: str) -> tuple[str, str, str | None]:
    """(results dir, Data Docs dir, remote Data Docs folder). GE writes local files only, so without a
    lake they go to `scratch` (thrown away), and a remote lake gets them built there and copied up."""
    if lake is not None and lake.is_local:
        return quality_path(lake, "gx_results"), quality_path(lake, "data_docs"), None
    remote = quality_path(lake, "data_docs") if lake is not None else None
    return os.path.join(scratch, "gx_results"), os.path.join(scratch, "data_docs"), remote


def _copy_up(local_dir: str, remote_dir: str) -> None:
    import pyarrow.fs as pafs

    from recsys_spark.lake.commit import filesystem

    fs, target = filesystem(remote_dir)
    pafs.copy_files(local_dir, target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def run_expectations(
    df,
    table: str,
    expectations: list[dict],
    run_name: str,
    results_dir: str,
    site_dir: str,
    quick: bool = False,
) -> tuple[list[Check], str | None]:
    """Validate `df` with GE's Spark datasource; returns the checks and the Data Docs page of the run.

    `quick`: pass/fail only (GE's BOOLEAN_ONLY, no Data Docs). About 3x cheaper, because GE then
    skips the Spark job per expectation that fetches example unexpected values.
    """
    import great_expectations as gx
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.run_identifier import RunIdentifier

    context = _ge_context(results_dir, site_dir)
    # persist=False: the caller caches the prepared batch and unpersists it; GE's own persist never would.
    source = context.data_sources.add_spark(name="lake", persist=False)
    batch = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe(table)
    suite = context.suites.add(ExpectationSuite(name=table, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{table}-{uuid.uuid4().hex[:8]}", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{table}-checkpoint",
            validation_definitions=[definition],
            actions=[]
            if quick
            else [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])],
            result_format="BOOLEAN_ONLY" if quick else "SUMMARY",
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_name))
    (identifier, validation), *_ = result.run_results.items()
    checks = []
    for item in validation.results:
        config = item.expectation_config
        kwargs = dict(config.kwargs)
        severity = getattr(config.severity, "value", str(config.severity))
        checks.append(
            Check(
                expectation=config.type,
                column=kwargs.get("column") or _joined(kwargs.get("column_list")) or _pair(kwargs),
                severity=severity,
                success=bool(item.success),
                description=(config.description or "").split("] ", 1)[-1],
                observed=describe_observed(dict(item.result or {}), dict(item.exception_info or {}), kwargs),
                drift=(config.meta or {}).get("drift"),
            )
        )
    if quick:
        return checks, None
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name=SITE_NAME)
    page = urls[0]["site_url"] if urls else None
    return checks, page


def _joined(columns) -> str | None:
    return ", ".join(columns) if columns else None


def _pair(kwargs: Mapping[str, Any]) -> str | None:
    if "column_A" in kwargs:
        return f"{kwargs['column_A']}, {kwargs['column_B']}"
    return None


# -- validating frames and tables ------------------------------------------------------------
def plan(
    df,
    table: str,
    lake,
    date: dt.date | None,
    baseline,
    baseline_label: str | None,
    tolerances: Mapping[str, float] | None,
    only_critical: bool,
    max_future_hours: float,
) -> tuple[Any, list[dict], list[str]]:
    """(batch with derived columns, GE expectation configs, skipped-check notes) for `table`'s suite."""
    suite = S.load_suite(table)
    tolerances = {**suite.tolerances, **(tolerances or {})}
    configs = [dict(e) for e in suite.expectations if not only_critical or e["severity"] == "critical"]
    skipped: list[str] = []
    drifts = [d for d in suite.drift if not only_critical or d.severity == "critical"]
    if drifts and baseline is not None:
        metrics = S.baseline_metrics(baseline, drifts)
        if metrics["row_count"] == 0:
            skipped.append(f"drift checks: {baseline_label} has no rows")
        else:
            configs += S.drift_expectations(drifts, metrics, baseline_label or "the baseline", tolerances)
    elif drifts:
        skipped.append(f"drift checks: {baseline_label or 'no previous day or version to compare with'}")

    needed = set().union(*(S.columns_of(c) for c in configs)) if configs else set()
    frame, missing_refs = S.prepare(df, suite, lake, template_params(date, max_future_hours), needed)
    derived = suite.derived_by_name()
    for name in missing_refs:
        ref = derived[name].missing_from["table"]
        skipped.append(f"{name}: table {ref} is not in the lake, so the referential check could not run")
        configs = [c for c in configs if name not in S.columns_of(c)]
    for name, indicator in S.drift_indicator_columns(suite):
        if name in needed:
            frame = frame.withColumn(name, indicator)
    for config in configs:  # Data Docs show the description: lead it with the severity
        text = config.get("description") or config["type"]
        config["description"] = f"[{config['severity']}] {text}"
    return frame, configs, skipped


def validate_frame(
    spark,
    df,
    table: str,
    *,
    lake=None,
    date: dt.date | None = None,
    mode: str = "validate",
    scope: str | None = None,
    baseline=None,
    baseline_label: str | None = None,
    tolerances: Mapping[str, float] | None = None,
    only_critical: bool = False,
    max_future_hours: float = 24.0,
    write_report: bool = True,
    quick: bool = False,
) -> Outcome:
    """Validate `df` against `table`'s suite and return the outcome (reports written when a lake is given).

    `baseline` is the previous day's (or version's) rows for the drift checks; without it they are
    skipped. `only_critical` keeps the critical expectations only (the publish gate). `quick` checks
    pass/fail only, without observed values or Data Docs (the gate's first, cheap pass).
    """
    from pyspark import StorageLevel

    started = time.time()
    frame, configs, skipped = plan(
        df, table, lake, date, baseline, baseline_label, tolerances, only_critical, max_future_hours
    )
    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    report_lake = lake if write_report and not quick else None
    try:
        rows = frame.count()
        with tempfile.TemporaryDirectory(prefix="recsys-quality-") as scratch:
            results_dir, site_dir, remote_docs = _report_dirs(report_lake, scratch)
            run_name = f"{date or 'latest'}-{mode}"
            checks, page = run_expectations(frame, table, configs, run_name, results_dir, site_dir, quick)
            if page and page.startswith("file://"):
                page = unquote(page[len("file://") :])
            if remote_docs:
                _copy_up(site_dir, remote_docs)
                page = None if page is None else remote_docs + page.split(site_dir, 1)[-1]
            elif report_lake is None:
                page = None  # the scratch folder goes away
    finally:
        frame.unpersist()
    outcome = Outcome(
        table=table,
        date=str(date) if date else "latest",
        mode=mode,
        scope=scope or "the given rows",
        rows=rows,
        checks=checks,
        skipped=skipped,
        baseline=baseline_label if baseline is not None else None,
        data_docs=page,
        seconds=time.time() - started,
    )
    log.info(
        "%s %s: %s in %.1fs (%d checks)", mode, table, outcome.status, time.time() - started, len(checks)
    )
    if lake is not None and write_report and not quick:
        write_summary(lake, outcome)
    return outcome


def previous_day(lake, table: str, date: dt.date):
    """(rows of the latest `dt` before `date`, label) of a date-partitioned table, or (None, reason)."""
    from pyspark.sql import functions as F

    if not lake.exists(table):
        return None, f"{table} has no earlier data"
    before = lake.read(table).filter(F.col("dt") < F.lit(date))
    last = before.agg(F.max("dt")).first()[0]
    if last is None:
        return None, f"no day before {date} in {table}"
    return before.filter(F.col("dt") == F.lit(last)), f"the previous day (dt = {last})"


def validate_table(lake, table: str, date: dt.date | None, **options: Any) -> Outcome:
    """Validate the `dt = date` partition of a date-partitioned table, or a whole table."""
    from pyspark.sql import functions as F

    try:
        suite = S.load_suite(table)
    except KeyError:
        raise UsageError(
            f"no expectation suite for table {table!r}; suites: {', '.join(S.known_suites())}"
        ) from None
    if not lake.exists(table):
        raise UsageError(f"table {table!r} does not exist in lake {lake.root}")
    if suite.day_scoped:
        if date is None:
            raise UsageError(f"{table} is partitioned by day: give --date")
        rows = lake.read(table).filter(F.col("dt") == F.lit(date))
        if rows.limit(1).count() == 0:
            span = lake.read(table).agg(F.min("dt"), F.max("dt")).first()
            raise UsageError(f"{table} has no rows for dt = {date} (days present: {span[0]} .. {span[1]})")
        baseline, label = previous_day(lake, table, date)
        scope = f"dt = {date}"
    else:
        version = lake.version(table)
        rows = lake.read(table)
        baseline, label = None, "no earlier version of the table"
        if suite.drift and version:
            baseline, label = lake.read(table, version=version - 1), f"the previous version ({version - 1})"
        scope = f"whole table (version {version})"
    return validate_frame(
        lake.spark,
        rows,
        table,
        lake=lake,
        date=date,
        scope=scope,
        baseline=baseline,
        baseline_label=label,
        **options,
    )


def run(cfg: ValidateConfig, spark, lake) -> int:
    if not cfg.table:
        raise UsageError(f"--table is required; tables with a suite: {', '.join(S.known_suites())}")
    try:
        suite = S.load_suite(cfg.table)
    except KeyError:
        raise UsageError(
            f"no expectation suite for table {cfg.table!r}; suites: {', '.join(S.known_suites())}"
        ) from None
    for name in ("volume_tolerance", "mix_tolerance"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    outcome = validate_table(
        lake,
        cfg.table,
        cfg.date,
        tolerances=tolerances_for(suite, cfg.volume_tolerance, cfg.mix_tolerance),
        only_critical=cfg.only_critical,
        max_future_hours=cfg.max_future_hours,
    )
    print("\n".join(summary_lines(outcome)), flush=True)
    return EXIT_OK if outcome.success else EXIT_FAILED
