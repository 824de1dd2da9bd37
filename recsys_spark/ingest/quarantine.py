"""Rejecting input rows: the reasons, how a row gets its first reason, and the `quarantine` table.

Parsers build a *staged* DataFrame: one row per input record with the raw record as JSON (`_row`)
and the first failed check (`_reason`, null when the record is good). Both the valid output and the
quarantine rows derive from it, so the job can persist it once and count everything from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

# Precedence order: a record failing several checks is quarantined with the first of these.
REASONS = (
    "wrong_column_count",
    "missing_user_id",
    "missing_item_id",
    "unknown_event",
    "unparseable_ts",
    "ts_out_of_range",
    "negative_dwell_ms",
    "unparseable_dwell_ms",
    "unparseable_rating",
    "unreadable_file",  # a whole landed file the stream cannot read (recsys_spark/streaming); row names it
)

REASON = "_reason"
ROW = "_row"
CORRUPT = "_corrupt"  # Spark's columnNameOfCorruptRecord: the raw line of a malformed CSV record
QUARANTINE_KEY = ("table", "reason", "row")


class Parsed(NamedTuple):
    """What a parser returns: the staged input, the valid rows (target contract), the rejected ones."""

    staged: DataFrame
    valid: DataFrame
    rejected: DataFrame


def blank(col: Column | str) -> Column:
    """Missing: null, or a string that is empty after trimming."""
    col = F.col(col) if isinstance(col, str) else col
    return col.isNull() | (F.trim(col) == "")


def raw_row(columns: list[str]) -> Column:
    """The record as JSON: the fields as read, or the whole line when Spark could not split it."""
    fields = F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns]))
    return F.when(F.col(CORRUPT).isNotNull(), F.to_json(F.struct(F.col(CORRUPT).alias("line")))).otherwise(
        fields
    )


def malformed() -> Column:
    """The record's line had too many or too few fields (Spark filled `_corrupt`).

    Spark only compares a line's field count with the schema when every column is read: with CSV
    column pruning, a query touching a few columns sees `_corrupt` null on such lines. Referring to
    `_row`, which reads every column and is never null, keeps pruning off for any query on the result.
    """
    return F.col(CORRUPT).isNotNull() & F.col(ROW).isNotNull()


def classify(df: DataFrame, checks: Mapping[str, Column]) -> DataFrame:
    """Add `_reason`: the first reason (in `REASONS` order) whose check is true, else null."""
    unknown = set(checks) - set(REASONS)
    if unknown:
        raise ValueError(f"unknown quarantine reasons {sorted(unknown)}")
    reason: Column = F.lit(None).cast("string")
    for name in reversed([r for r in REASONS if r in checks]):
        # null checks (e.g. comparisons on null) must not count as failures: coalesce to false
        reason = F.when(F.coalesce(checks[name], F.lit(False)), F.lit(name)).otherwise(reason)
    return df.withColumn(REASON, reason)


def rejected_rows(staged: DataFrame, table: str, run_id: str) -> DataFrame:
    """The staged records that failed a check, shaped as the `quarantine` contract."""
    return staged.filter(F.col(REASON).isNotNull()).select(
        F.lit(table).alias("table"),
        F.lit(run_id).alias("run_id"),
        F.col(REASON).alias("reason"),
        F.col(ROW).alias("row"),
        F.current_timestamp().alias("ingested_at"),
    )


def mark_present(df: DataFrame, existing: DataFrame | None, key: list[str]) -> DataFrame:
    """`df` plus a boolean `_present`: whether a row with the same key (nulls equal) is in `existing`."""
    if existing is None:
        return df.withColumn("_present", F.lit(False))
    # distinct first: a table written by other jobs may hold a key twice, which would repeat rows here
    seen = existing.select(*[F.col(c).alias(f"_seen_{c}") for c in key]).distinct()
    same = [F.col(c).eqNullSafe(F.col(f"_seen_{c}")) for c in key]
    joined = df.join(seen.withColumn("_seen", F.lit(True)), same, "left")
    return joined.select(*df.columns, F.coalesce("_seen", F.lit(False)).alias("_present"))


def append_new(lake, rejected: DataFrame, metadata: dict[str, str] | None = None) -> tuple[int, int]:
    """Append the (table, reason, row) records not yet in `quarantine`; (written, already present).

    Identical rejected records within the input are kept once. Nothing is written (no new version)
    when every record is already there.
    """
    read_version = lake.read_version("quarantine")
    existing = lake.read("quarantine", version=read_version) if read_version >= 0 else None
    marked = mark_present(rejected.dropDuplicates(list(QUARANTINE_KEY)), existing, list(QUARANTINE_KEY))
    marked = marked.persist()  # also pins ingested_at: counted and written rows are the same rows
    try:
        totals = marked.agg(F.count(F.lit(1)), F.sum(F.col("_present").cast("long"))).first()
        total, present = totals[0], totals[1] or 0
        if total - present:
            new = marked.filter(~F.col("_present")).drop("_present")
            lake.append("quarantine", new, metadata=metadata, read_version=read_version)
        return total - present, present
    finally:
        marked.unpersist()
