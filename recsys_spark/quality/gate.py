"""Publish gates: validate a table's new data before it becomes a Delta version.

`enable_gates(lake, date)` installs a gate on the lake: every later write of a table that has a suite
runs the suite's *critical* expectations on the data about to be published (on the delta-rs engine,
the staged Parquet files Spark already wrote, so the data is not computed twice) and raises
`QualityGateError` when one fails. The lake then removes the staged files and commits nothing: the
table stays at its previous version, and `_reports/quality/<table>/<date>.json` plus the Data Docs
say why.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from recsys_spark.quality import suites as S
from recsys_spark.quality.reports import Outcome, write_summary

log = logging.getLogger(__name__)


class QualityGateError(RuntimeError):
    """A critical expectation failed on data about to be published; nothing was committed."""

    def __init__(self, message: str, outcome: Outcome):
        super().__init__(message)
        self.outcome = outcome


def gate_message(outcome: Outcome, version: int | None) -> str:
    failed = "; ".join(f"{c.name} [{c.description}]: {c.observed}" for c in outcome.critical_failures)
    kept = f"stays at version {version}" if version is not None else "was not created"
    return (
        f"quality gate blocked publishing {outcome.table} ({outcome.scope}): "
        f"{len(outcome.critical_failures)} critical expectation(s) failed: {failed}. "
        f"The table {kept}. Report: {outcome.data_docs or outcome.summary_path}"
    )


def make_gate(
    lake,
    date: dt.date | str | None,
    tables: Iterable[str] | None = None,
    max_future_hours: float = 24.0,
) -> Callable[[str, Any, Mapping[str, Any]], None]:
    """A gate function for `lake.set_gate`: validates `table`'s staged rows, raises on a critical failure."""
    from recsys_spark.quality.validate import previous_day, validate_frame

    day = dt.date.fromisoformat(date) if isinstance(date, str) else date
    only = set(tables) if tables is not None else None

    def gate(table: str, df, context: Mapping[str, Any]) -> None:
        if table not in S.known_suites() or (only is not None and table not in only):
            return
        suite = S.load_suite(table)
        baseline, label = None, None
        if any(d.severity == "critical" for d in suite.drift):
            # Drift gates compare one day with the day before; a batch of several days has no single one.
            days = context.get("partitions") or []
            if suite.day_scoped and day is not None and len(days) == 1:
                baseline, label = previous_day(lake, table, dt.date.fromisoformat(days[0]))
            elif not suite.day_scoped and lake.exists(table):
                baseline, label = lake.read(table), f"the published version ({lake.version(table)})"
        scope = _scope(context)
        options = dict(
            lake=lake,
            date=day,
            mode="gate",
            scope=f"{scope}, before publishing",
            baseline=baseline,
            baseline_label=label,
            only_critical=True,
            max_future_hours=max_future_hours,
        )
        # A cheap pass/fail run first; only a failure pays for examples and Data Docs.
        outcome = validate_frame(lake.spark, df, table, quick=True, **options)
        if outcome.success:
            write_summary(lake, outcome)
        else:
            outcome = validate_frame(lake.spark, df, table, **options)
        if not outcome.success:
            message = gate_message(outcome, lake.version(table))
            log.error("%s", message)
            raise QualityGateError(message, outcome)
        log.info(
            "quality gate: %s passed %d critical checks (%s rows)", table, len(outcome.checks), outcome.rows
        )

    return gate


def _scope(context: Mapping[str, Any]) -> str:
    """`dt = 2026-11-04`, `dt in 28 values (2026-10-08 .. 2026-11-04)` or `new table version`."""
    values = sorted(context.get("partitions") or [])
    column = context.get("partition_column")
    if not values:
        return "appended rows" if context.get("mode") == "append" else "new table version"
    if len(values) == 1:
        return f"{column} = {values[0]}"
    if len(values) <= 3:
        return f"{column} in {', '.join(values)}"
    return f"{column} in {len(values)} values ({values[0]} .. {values[-1]})"


def enable_gates(lake, date: dt.date | str | None, tables: Iterable[str] | None = None) -> None:
    """Validate every table with a suite (or only `tables`) before the lake publishes it.

    Call once per run, e.g. at the start of `run-daily`: `enable_gates(lake, cfg.date)`.
    """
    lake.set_gate(make_gate(lake, date, tables))


def disable_gates(lake) -> None:
    lake.set_gate(None)
