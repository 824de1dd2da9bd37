"""Landed event files of one micro-batch → valid `events` rows and `quarantine` rows, written exactly once.

Parsing reuses batch ingest's pieces (`ingest/canonical.py`, `ingest/quarantine.py`): every column is
read as a string, `event_checks` and `classify` give each record its first failed reason in `REASONS`
order, and `to_events` builds the contract's rows, so `recsys-spark stream` and `recsys-spark ingest`
agree on what a bad row is. What the stream adds:

- JSON lines (`.json`, `.jsonl`, `.ndjson`), next to canonical CSV and Parquet; the format comes from
  each file's extension (or `--format` for all of them).
- Many files per read: CSV files are grouped by header and Parquet files by schema, one Spark scan
  per group instead of one per file.
- A file that cannot be read at all (unknown extension, not the format its name says, required
  columns missing, corrupt) becomes one `unreadable_file` quarantine row naming it; it never stops
  the stream.
- Exactly-once appends: each commit carries the Delta app-transaction marker `(app_id, batch_id)`;
  a replayed batch whose marker is already in the table is skipped, and rows are anti-joined with
  what the table holds anyway (duplicates across files, or a batch ingest of the same events).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_spark.ingest import canonical, quarantine
from recsys_spark.ingest.canonical import EVENT_COLUMNS, event_checks, header_names, string_csv, to_events
from recsys_spark.ingest.quarantine import (
    CORRUPT,
    QUARANTINE_KEY,
    REASON,
    ROW,
    Parsed,
    classify,
    raw_row,
)

log = logging.getLogger(__name__)

FORMATS = ("auto", "json", "csv", "parquet")
# Longest suffixes first, so `.csv.gz` is not taken for `.gz`. Spark decompresses .gz by extension.
EXTENSIONS = (
    (".jsonl.gz", "json"),
    (".ndjson.gz", "json"),
    (".json.gz", "json"),
    (".jsonl", "json"),
    (".ndjson", "json"),
    (".json", "json"),
    (".csv.gz", "csv"),
    (".csv", "csv"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
)
REQUIRED = EVENT_COLUMNS[:4]
UNREADABLE = "unreadable_file"  # in ingest's REASONS: a whole file that cannot be read, not one record
EVENT_KEY = ["user_id", "item_id", "event", "ts", "session_id", "dt"]
# Messages of errors that belong to one file (Spark 4 error classes and the JVM's own), as opposed
# to the cluster, the disk or the driver: only these may turn a file into an `unreadable_file` row.
_FILE_ERRORS = (
    "FAILED_READ_FILE",
    "CANNOT_READ_FILE_FOOTER",
    "PATH_NOT_FOUND",
    "FileNotFoundException",
    "is not a Parquet file",
    "MALFORMED_RECORD_IN_PARSING",
    "ZipException",
    "EOFException",
)


@dataclass
class Landed:
    """One micro-batch's files read as strings: `staged` has EVENT_COLUMNS, `_corrupt` and `_row` (None
    when no file was readable); `unreadable` lists (path, why) of the files that could not be read."""

    staged: DataFrame | None
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def file_format(path: str, requested: str = "auto") -> str | None:
    """json, csv or parquet: `requested`, or from the extension; None for an unknown extension."""
    if requested != "auto":
        return requested
    name = path.rstrip("/").lower()
    for suffix, fmt in EXTENSIONS:
        if name.endswith(suffix):
            return fmt
    return None


def local_path(uri: str) -> str | None:
    """The local filesystem path of a `file:` URI or plain path; None for a remote one."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path) if parsed.scheme else uri
    return None


def _strings(columns: Iterable[str]) -> T.StructType:
    return T.StructType([T.StructField(c, T.StringType()) for c in columns])


def read_json(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    """JSON-lines files as canonical string columns plus `_corrupt` and `_row`.

    Lines are read as text and parsed with `from_json`, so `_row` is the record exactly as landed
    (extra keys included) and a line that is not a JSON object keeps its text in `_corrupt`, as a CSV
    line with the wrong field count does. Blank lines are skipped, as Spark's CSV reader skips them.
    """
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    text = spark.read.text(list(paths)).filter(F.trim("value") != "")
    parsed = text.select(
        F.col("value"),
        F.from_json("value", _strings([*EVENT_COLUMNS, CORRUPT]), options).alias("s"),
        # Spark renders a JSON number parsed into a string column through a double (1.7092872005E9),
        # which no timestamp parser reads; parsed as a decimal it keeps its digits. Each field is parsed
        # on its own, so one bad field cannot null the other.
        *[
            F.from_json(
                "value", T.StructType([T.StructField(c, T.DecimalType(38, 9))]), {"mode": "PERMISSIVE"}
            )
            .getField(c)
            .alias(f"_num_{c}")
            for c in ("ts", "dwell_ms")
        ],
    )

    def as_text(c: str):
        number = F.col(f"_num_{c}")
        digits = F.when(number == F.floor(number), F.floor(number).cast("string")).otherwise(
            number.cast("string")
        )
        return F.coalesce(digits, F.col(f"s.{c}")).alias(c)

    corrupt = F.col(f"s.{CORRUPT}")
    return parsed.select(
        *[as_text(c) if c in ("ts", "dwell_ms") else F.col(f"s.{c}").alias(c) for c in EVENT_COLUMNS],
        corrupt.alias(CORRUPT),
        F.when(corrupt.isNotNull(), F.to_json(F.struct(corrupt.alias("line"))))
        .otherwise(F.trim("value"))
        .alias(ROW),
    )


def read_csv(
    spark: SparkSession, paths: Sequence[str], header: bool = True, delimiter: str = ","
) -> tuple[list[DataFrame], list[tuple[str, str]]]:
    """Canonical CSV files as string columns, one scan per distinct header (columns map by name)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    unreadable = []
    for path in paths:
        if not header:
            groups.setdefault(tuple(EVENT_COLUMNS), []).append(path)
            continue
        try:
            names = header_names(spark, local_path(path) or path, delimiter)
        except OSError as exc:
            unreadable.append((path, f"cannot read the header: {exc}"))
            continue
        columns = tuple(c.strip().lower() for c in names)
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            unreadable.append((path, f"csv header lacks required columns {missing} (found {list(columns)})"))
            continue
        groups.setdefault(columns, []).append(path)
    frames = []
    for columns, group in groups.items():
        df = string_csv(spark, group, list(columns), header=str(header).lower(), sep=delimiter)
        frames.append(_canonical(df, list(columns)))
    return frames, unreadable


def read_parquet(spark: SparkSession, paths: Sequence[str]) -> tuple[list[DataFrame], list[tuple[str, str]]]:
    """Parquet files as string columns, one scan per distinct schema.

    Footers are read on the driver first (a few KB per file), so a file that is not Parquet is found
    here instead of failing the batch's scan, and files whose column types differ are not read as one.
    """
    import pyarrow.parquet as pq

    from recsys_spark.lake.commit import filesystem

    groups: dict[str, list[str]] = {}
    unreadable = []
    for path in paths:
        try:
            fs, fs_path = filesystem(path)
            schema = pq.read_schema(fs_path, filesystem=fs)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError... for anything not Parquet
            unreadable.append((path, f"not a readable Parquet file: {exc}"))
            continue
        names = [n.lower() for n in schema.names]
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            unreadable.append((path, f"parquet file lacks required columns {missing} (found {names})"))
            continue
        groups.setdefault(str(schema.remove_metadata()), []).append(path)
    frames = []
    for group in groups.values():
        df = spark.read.parquet(*group)
        # canonical._as_text: how batch ingest turns Parquet values into the strings a CSV would hold.
        df = df.select(*[canonical._as_text(f).alias(f.name.lower()) for f in df.schema.fields])
        columns = list(df.columns)
        frames.append(_canonical(df.withColumn(CORRUPT, F.lit(None).cast("string")), columns))
    return frames, unreadable


def _canonical(df: DataFrame, columns: list[str]) -> DataFrame:
    """`df` with `_row` over the file's own columns, then exactly EVENT_COLUMNS, `_corrupt`, `_row`."""
    df = df.withColumn(ROW, raw_row(columns))
    return df.select(
        *[F.col(c) if c in columns else F.lit(None).cast("string").alias(c) for c in EVENT_COLUMNS],
        F.col(CORRUPT),
        F.col(ROW),
    )


def read_landed(
    spark: SparkSession,
    paths: Sequence[str],
    fmt: str = "auto",
    header: bool = True,
    delimiter: str = ",",
) -> Landed:
    """The files of one micro-batch as one string DataFrame (lazy), and the files that cannot be read."""
    by_format: dict[str, list[str]] = {"json": [], "csv": [], "parquet": []}
    unreadable: list[tuple[str, str]] = []
    for path in paths:
        kind = file_format(path, fmt)
        if kind is None:
            known = ", ".join(s for s, _ in EXTENSIONS)
            unreadable.append((path, f"unknown file extension (expected one of {known}, or pass --format)"))
        else:
            by_format[kind].append(path)
    frames: list[DataFrame] = []
    if by_format["json"]:
        frames.append(read_json(spark, by_format["json"]))
    if by_format["csv"]:
        more, bad = read_csv(spark, by_format["csv"], header, delimiter)
        frames, unreadable = frames + more, unreadable + bad
    if by_format["parquet"]:
        more, bad = read_parquet(spark, by_format["parquet"])
        frames, unreadable = frames + more, unreadable + bad
    staged = None
    for frame in frames:
        staged = frame if staged is None else staged.unionByName(frame)
    return Landed(staged, unreadable)


def classify_events(staged: DataFrame, *, run_id: str, min_ts: str, max_ts: str) -> Parsed:
    """The checks of `canonical.parse_events` on landed strings: valid `events` rows and rejections."""
    df = staged.withColumn("event", F.lower(F.trim("event")))  # "Click" is a click, as in batch ingest
    classified = classify(df, event_checks(df, min_ts, max_ts))
    valid = to_events(classified.filter(F.col(REASON).isNull()))
    return Parsed(classified, valid, quarantine.rejected_rows(classified, "events", run_id))


def is_file_error(exc: BaseException) -> bool:
    """True when a failed read is the file's fault (corrupt, truncated, vanished), not the cluster's."""
    text = str(exc)
    return any(marker in text for marker in _FILE_ERRORS)


def unreadable_rows(spark: SparkSession, unreadable: Sequence[tuple[str, str]], run_id: str) -> DataFrame:
    """One `quarantine` row per unreadable file: reason `unreadable_file`, row `{"file", "error"}`."""
    rows = [
        ("events", run_id, UNREADABLE, json.dumps({"file": path, "error": why[:2000]}, sort_keys=True))
        for path, why in unreadable
    ]
    schema = "table string, run_id string, reason string, row string"
    return spark.createDataFrame(rows, schema).withColumn("ingested_at", F.current_timestamp())


@dataclass
class StagedBatch:
    """A micro-batch read and classified: `staged` (persisted; None when no file was readable), the
    unreadable files, input records per reason (valid ones under None) and the days of valid events."""

    staged: DataFrame | None
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str | None, int] = field(default_factory=dict)
    days: list = field(default_factory=list)

    def unpersist(self) -> None:
        if self.staged is not None:
            self.staged.unpersist()


def stage_batch(
    spark: SparkSession,
    paths: Sequence[str],
    *,
    run_id: str,
    min_ts: str,
    max_ts: str,
    fmt: str = "auto",
    header: bool = True,
    delimiter: str = ",",
) -> StagedBatch:
    """Read, classify and persist one micro-batch. The caller unpersists the result.

    The scan of all files runs once here, by the aggregation that counts reasons and days (it also
    fills the cache). If it fails because of a file, every file is read on its own so that only the
    broken ones become `unreadable_file`; an error that is not a file's (out of memory, a lost
    executor) propagates, and the stream retries the whole batch.
    """

    def staged_of(files: Sequence[str]) -> StagedBatch:
        landed = read_landed(spark, files, fmt, header, delimiter)
        if landed.staged is None:
            return StagedBatch(None, landed.unreadable)
        parsed = classify_events(landed.staged, run_id=run_id, min_ts=min_ts, max_ts=max_ts)
        frame = parsed.staged.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts, days = profile(frame)
        except Exception:
            frame.unpersist()
            raise
        return StagedBatch(frame, landed.unreadable, counts, days)

    try:
        return staged_of(paths)
    except Exception as exc:
        if not is_file_error(exc):
            raise
        log.warning("a file of this batch is unreadable; reading the %d files one by one", len(paths))
    merged = StagedBatch(None)
    for path in paths:
        try:
            one = staged_of([path])
        except Exception as exc:
            if not is_file_error(exc):
                raise
            one = StagedBatch(None, [(path, _first_line(exc))])
        merged.unreadable += one.unreadable
        for reason, n in one.counts.items():
            merged.counts[reason] = merged.counts.get(reason, 0) + n
        merged.days = sorted(set(merged.days) | set(one.days))
        if one.staged is not None:
            merged.staged = one.staged if merged.staged is None else merged.staged.unionByName(one.staged)
    return merged


def _first_line(exc: BaseException) -> str:
    """The meaningful part of a (long, Java) error message."""
    for line in str(exc).splitlines():
        if any(marker in line for marker in _FILE_ERRORS):
            return line.strip()[:500]
    return str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__


def events_of(staged: DataFrame) -> DataFrame:
    """The valid rows of a classified batch as `events` rows."""
    return to_events(staged.filter(F.col(REASON).isNull()))


def rejected_of(staged: DataFrame, run_id: str) -> DataFrame:
    """The rejected rows of a classified batch as `quarantine` rows."""
    return quarantine.rejected_rows(staged, "events", run_id)


# -- exactly-once writes --------------------------------------------------------------------------
def committed_batch(lake, table: str, app_id: str) -> int | None:
    """The highest batch id committed to `table` under `app_id` (its Delta app-transaction marker).

    Read with deltalake, which reads any Delta table whichever engine wrote it.
    """
    from deltalake import DeltaTable

    if not lake.exists(table):
        return None
    return DeltaTable(lake.uri(table), storage_options=lake.storage_options).transaction_version(app_id)


@dataclass
class EventsWrite:
    valid: int = 0  # valid events in the batch (duplicates included)
    unique: int = 0  # distinct by the event key
    present: int = 0  # of those, already in `events`
    written: int = 0
    version: int | None = None
    skipped: bool = False  # the marker said this batch was committed before


def append_events_once(
    lake, valid: DataFrame, days: Sequence, app_id: str, batch_id: int, metadata: dict[str, str]
) -> EventsWrite:
    """Append the batch's valid events exactly once, deduplicated like `recsys-spark ingest`.

    Exact duplicates within the batch are kept once (largest `dwell_ms` wins, as in batch ingest);
    rows already in `events` on the batch's days are skipped; the append carries the marker
    `(app_id, batch_id)`. A replayed batch whose marker is in the table writes nothing.
    """
    done = committed_batch(lake, "events", app_id)
    if done is not None and done >= batch_id:
        return EventsWrite(skipped=True)
    distinct = valid.groupBy(*EVENT_KEY).agg(
        F.max("dwell_ms").alias("dwell_ms"), F.count(F.lit(1)).alias("_copies")
    )
    existing = (
        lake.read("events", dates=days).filter(F.col("dt").isin(list(days)))
        if lake.exists("events")
        else None
    )
    marked = quarantine.mark_present(distinct, existing, EVENT_KEY).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = marked.agg(
            F.sum("_copies"), F.count(F.lit(1)), F.sum(F.col("_present").cast("long"))
        ).first()
        result = EventsWrite(*(int(n or 0) for n in totals))
        result.written = result.unique - result.present
        if result.written:
            new = marked.filter(~F.col("_present")).drop("_present", "_copies")
            result.version = lake.append("events", new, metadata=metadata, app_transaction=(app_id, batch_id))
        return result
    finally:
        marked.unpersist()


def append_quarantine_once(
    lake, rejected: DataFrame, app_id: str, batch_id: int, metadata: dict[str, str]
) -> tuple[int, int, bool]:
    """Append rejected records not yet in `quarantine` with the marker; (written, already there, skipped).

    The same `(table, reason, row)` rule as batch ingest (`quarantine.append_new`), plus the marker.
    """
    done = committed_batch(lake, "quarantine", app_id)
    if done is not None and done >= batch_id:
        return 0, 0, True
    existing = lake.read("quarantine") if lake.exists("quarantine") else None
    key = list(QUARANTINE_KEY)
    marked = quarantine.mark_present(rejected.dropDuplicates(key), existing, key)
    marked = marked.persist(StorageLevel.MEMORY_AND_DISK)  # also pins ingested_at
    try:
        totals = marked.agg(F.count(F.lit(1)), F.sum(F.col("_present").cast("long"))).first()
        total, present = int(totals[0] or 0), int(totals[1] or 0)
        if total - present:
            new = marked.filter(~F.col("_present")).drop("_present")
            lake.append("quarantine", new, metadata=metadata, app_transaction=(app_id, batch_id))
        return total - present, present, False
    finally:
        marked.unpersist()


def profile(staged: DataFrame) -> tuple[dict[str | None, int], list]:
    """Input records per quarantine reason (valid ones under None) and the days of the valid events.

    One small aggregation instead of two: each Spark job costs a micro-batch latency.
    """
    day = F.when(F.col(REASON).isNull(), F.to_date(canonical.parse_ts("ts")))
    counts: dict[str | None, int] = {}
    days = set()
    for row in staged.groupBy(REASON, day.alias("dt")).count().collect():
        counts[row[REASON]] = counts.get(row[REASON], 0) + int(row["count"])
        if row["dt"] is not None:
            days.add(row["dt"])
    return counts, sorted(days)
