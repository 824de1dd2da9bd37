"""`recsys-spark ingest`: load a canonical, MovieLens or Taobao file into events, items, users, quarantine.

Ingesting the same file again changes nothing: events already in the lake are skipped, quarantined
records are not re-added, items/users are upserted by id and only rewritten when something differs.
Each read-then-write step commits against the version it read: when another writer committed to the
table in between (e.g. two ingests of one file at once), the step is redone from the new version a few
times and the ingest fails naming the conflict if it keeps losing, so nothing is duplicated or lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys_spark.config import CommonConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.ingest import canonical, movielens, quarantine, taobao
from recsys_spark.ingest.quarantine import REASON, Parsed
from recsys_spark.lake.delta import retry_on_conflict
from recsys_spark.lake.tables import table_schema

log = logging.getLogger(__name__)

FORMATS = ["canonical", "movielens", "taobao"]
DEFAULT_MIN_TS = "2000-01-01"
MOVIELENS_MIN_TS = "1995-01-01"  # MovieLens ratings go back to 1995; 2000 would reject all of ml-100k


@dataclass
class IngestConfig(CommonConfig):
    """Rows that fail a check go to the `quarantine` table with the reason; nothing is dropped silently."""

    events: str | None = option(
        None, "Events file (required): canonical CSV/Parquet, ratings file, UserBehavior.csv."
    )
    format: str = option("canonical", "Input format.", choices=FORMATS)
    items: str | None = option(None, "Items file: canonical items, or MovieLens u.item / movies.csv.")
    users: str | None = option(None, "Users file: canonical users, or MovieLens u.user / users.dat.")
    file_format: str = option(
        "auto",
        "Canonical files only: csv or parquet; auto = from the extension.",
        choices=["auto", "csv", "parquet"],
    )
    csv_header: bool = option(True, "Canonical CSV files have a header line naming the columns.")
    delimiter: str = option(",", "Field delimiter of canonical CSV and Taobao files.")
    min_ts: str | None = option(
        None,
        "Events before this time (UTC) are ts_out_of_range; default 2000-01-01, for movielens 1995-01-01 "
        "(its ratings start in 1995).",
    )
    max_future_hours: float = option(24.0, "Events later than now + this many hours are ts_out_of_range.")
    like_threshold: float = option(4.0, "MovieLens: a rating at least this high also makes a like event.")
    run_id: str | None = option(None, "Id recorded with quarantined rows and commits; default generated.")


@dataclass
class IngestSummary:
    run_id: str
    rows_read: int = 0
    events_valid: int = 0
    duplicates_skipped: int = 0
    already_present: int = 0
    events_written: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)  # "table/reason" -> input records
    quarantine_written: int = 0
    quarantine_already_present: int = 0
    items_written: int = 0
    users_written: int = 0

    def lines(self) -> list[str]:
        out = [
            f"ingest run {self.run_id}",
            f"rows read: {self.rows_read}",
            f"events valid: {self.events_valid}",
            f"duplicates skipped: {self.duplicates_skipped}",
            f"already present: {self.already_present}",
            f"events written: {self.events_written}",
            f"quarantined: {sum(self.quarantined.values())}",
        ]
        out += [f"  {key}: {n}" for key, n in sorted(self.quarantined.items())]
        out += [
            f"quarantine written: {self.quarantine_written} (already present: {self.quarantine_already_present})",
            f"items written: {self.items_written}",
            f"users written: {self.users_written}",
        ]
        return out


def run(cfg: IngestConfig, spark: SparkSession, lake) -> int:
    summary = ingest(cfg, spark, lake)
    for line in summary.lines():
        log.info("ingest: %s", line)
    print("\n".join(summary.lines()), flush=True)
    return 0


def ingest(cfg: IngestConfig, spark: SparkSession, lake) -> IngestSummary:
    if not cfg.events:
        raise UsageError("--events FILE is required")
    if cfg.format == "taobao" and (cfg.items or cfg.users):
        raise UsageError("taobao has no items/users files: items come from the behaviour file itself")
    events, items, users = (_existing(spark, p) for p in (cfg.events, cfg.items, cfg.users))
    run_id = cfg.run_id or f"ingest-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    summary = IngestSummary(run_id)
    metadata = {"recsys.job": "ingest", "recsys.run_id": run_id}
    min_ts = cfg.min_ts or (MOVIELENS_MIN_TS if cfg.format == "movielens" else DEFAULT_MIN_TS)
    bounds = {"run_id": run_id, "min_ts": min_ts, "max_ts": _max_ts(cfg.max_future_hours)}
    csv = {"fmt": cfg.file_format, "header": cfg.csv_header, "delimiter": cfg.delimiter}

    try:  # building the plans checks file names and columns: a bad input is a usage error
        if cfg.format == "canonical":
            parsed = canonical.parse_events(spark, events, **bounds, **csv)
        elif cfg.format == "movielens":
            parsed = movielens.parse_ratings(spark, events, **bounds, like_threshold=cfg.like_threshold)
        else:
            parsed = taobao.parse_events(spark, events, **bounds, delimiter=cfg.delimiter)
        sides = list(_sides(cfg, spark, parsed, items, users, run_id, csv))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    persisted = [parsed.staged.persist(StorageLevel.MEMORY_AND_DISK)]
    try:
        summary.rows_read = _count_reasons(parsed, "events", summary)
        retry_on_conflict(lambda: write_events(lake, parsed.valid, summary, metadata), "ingest events")
        rejected = [parsed.rejected]
        for table, parsed_side in sides:
            persisted.append(parsed_side.staged.persist(StorageLevel.MEMORY_AND_DISK))
            _count_reasons(parsed_side, table, summary)
            written = retry_on_conflict(
                lambda t=table, p=parsed_side: upsert(lake, t, p.valid, metadata), f"ingest {table}"
            )
            setattr(summary, f"{table}_written", written)
            rejected.append(parsed_side.rejected)
        union = rejected[0]
        for df in rejected[1:]:
            union = union.unionByName(df)
        summary.quarantine_written, summary.quarantine_already_present = retry_on_conflict(
            lambda: quarantine.append_new(lake, union, metadata), "ingest quarantine"
        )
    finally:
        for df in persisted:
            df.unpersist()
    return summary


def _sides(cfg, spark, parsed: Parsed, items: str | None, users: str | None, run_id: str, csv: dict):
    """(table, Parsed) for the items and users the format provides."""
    if cfg.format == "canonical":
        if items:
            yield "items", canonical.parse_items(spark, items, run_id=run_id, **csv)
        if users:
            yield "users", canonical.parse_users(spark, users, run_id=run_id, **csv)
    elif cfg.format == "movielens":
        if items:
            yield "items", movielens.parse_items(spark, items, run_id=run_id)
        if users:
            first = movielens.first_ratings(parsed.valid)
            yield "users", movielens.parse_users(spark, users, run_id=run_id, first_seen=first)
    else:
        empty = parsed.staged.limit(0)
        yield (
            "items",
            Parsed(empty, taobao.items_from(parsed.staged), quarantine.rejected_rows(empty, "items", run_id)),
        )


def write_events(lake, valid: DataFrame, summary: IngestSummary, metadata: dict[str, str]) -> None:
    """Append the valid events that are neither duplicates within the input nor already in the lake.

    The append is checked against the version read (`CommitConflict` if another writer won meanwhile).
    """
    key = ["user_id", "item_id", "event", "ts", "session_id", "dt"]
    # Duplicates may differ in dwell_ms (not part of the key): keep the longest, deterministically.
    distinct = valid.groupBy(*key).agg(
        F.max("dwell_ms").alias("dwell_ms"), F.count(F.lit(1)).alias("_copies")
    )
    existing = None
    read_version = lake.read_version("events")
    if read_version >= 0:
        dates = [r[0] for r in distinct.select("dt").distinct().collect()]
        existing = lake.read("events", version=read_version, dates=dates)
    marked = quarantine.mark_present(distinct, existing, key).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = marked.agg(
            F.sum("_copies"), F.count(F.lit(1)), F.sum(F.col("_present").cast("long"))
        ).first()
        summary.events_valid, unique, summary.already_present = (n or 0 for n in counts)
        summary.duplicates_skipped = summary.events_valid - unique
        summary.events_written = unique - summary.already_present
        if summary.events_written:
            new = marked.filter(~F.col("_present")).drop("_present", "_copies")
            lake.append("events", new, metadata=metadata, read_version=read_version)
    finally:
        marked.unpersist()


def upsert(lake, table: str, rows: DataFrame, metadata: dict[str, str]) -> int:
    """Replace rows by id (new wins); rewrite the table only if some row is new or different.

    Returns how many rows were new or changed.
    """
    schema = table_schema(table)
    (key,) = schema.key
    rows = schema.conform(rows)
    # One row per id even if the input repeats an id: the same one every run.
    order = [F.col(c).desc_nulls_last() for c in rows.columns]
    rows = (
        rows.withColumn("_n", F.row_number().over(Window.partitionBy(key).orderBy(*order)))
        .filter("_n = 1")
        .drop("_n")
    )
    read_version = lake.read_version(table)
    if read_version < 0:
        changed = rows.count()
        if changed:
            lake.overwrite(table, rows, metadata=metadata, read_version=read_version)
        return changed
    existing = lake.read(table, version=read_version)
    changed = rows.subtract(schema.conform(existing)).count()
    if changed:
        merged = existing.join(rows.select(key), key, "left_anti").unionByName(rows)
        lake.overwrite(table, merged, metadata=metadata, read_version=read_version)
    return changed


def _count_reasons(parsed: Parsed, table: str, summary: IngestSummary) -> int:
    """Record quarantined input records per reason; return how many records were read."""
    total = 0
    for row in parsed.staged.groupBy(REASON).count().collect():
        total += row["count"]
        if row[REASON] is not None:
            summary.quarantined[f"{table}/{row[REASON]}"] = row["count"]
    return total


def _max_ts(hours: float) -> str:
    limit = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)
    return limit.strftime("%Y-%m-%d %H:%M:%S")


def _existing(spark: SparkSession, path: str | None) -> str | None:
    """The path as Spark should read it; FileNotFoundError naming it when it is not there."""
    if path is None:
        return None
    if "://" not in path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"input file not found: {path}")
        return os.path.abspath(path)
    hadoop_path = spark._jvm.org.apache.hadoop.fs.Path(path)
    if not hadoop_path.getFileSystem(spark._jsc.hadoopConfiguration()).exists(hadoop_path):
        raise FileNotFoundError(f"input file not found: {path}")
    return path
