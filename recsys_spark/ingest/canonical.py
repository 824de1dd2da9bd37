"""Canonical files (Parquet or CSV in the contract's own columns), and the event checks every format shares.

Every input column is read as a string, so a bad value becomes a quarantined record instead of a
failed job or a silent null, and the quarantine keeps the value exactly as it was in the file.
"""

from __future__ import annotations

import csv
import os

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_spark.ingest.quarantine import (
    CORRUPT,
    REASON,
    ROW,
    Parsed,
    blank,
    classify,
    malformed,
    raw_row,
    rejected_rows,
)
from recsys_spark.lake.tables import EVENT_TYPES

EVENT_COLUMNS = ("user_id", "item_id", "event", "ts", "session_id", "dwell_ms")
ITEM_COLUMNS = ("item_id", "category", "author_id", "tags", "created_ts")
USER_COLUMNS = ("user_id", "gender", "age_bucket", "region", "signup_ts")
EVENT_KEY = ("user_id", "item_id", "event", "ts", "session_id")
# Epoch seconds, optionally fractional; 12 digits reach year 33658, so longer numbers are garbage.
EPOCH_RE = r"^-?\d{1,12}(\.\d+)?$"


def file_format(path: str, requested: str = "auto") -> str:
    """csv or parquet: as requested, else from the extension (a directory is Spark-written Parquet)."""
    if requested != "auto":
        return requested
    name = path.rstrip("/").lower()
    if name.endswith((".csv", ".tsv", ".txt", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")) or os.path.isdir(path):
        return "parquet"
    raise ValueError(f"cannot tell the format of {path} from its name; pass --file-format csv|parquet")


def string_csv(spark: SparkSession, path: str, columns: list[str], **options: str) -> DataFrame:
    """A delimited file with every column a string plus `_corrupt`, the raw line of malformed records.

    In PERMISSIVE mode Spark fills `_corrupt` for lines with too many or too few fields (and keeps
    what it could split in the columns); the tests pin that behaviour down.
    """
    schema = T.StructType([T.StructField(c, T.StringType()) for c in [*columns, CORRUPT]])
    return (
        spark.read.schema(schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .options(**options)
        .csv(path)
    )


def read_strings(
    spark: SparkSession,
    path: str,
    required: tuple[str, ...],
    default_columns: tuple[str, ...],
    fmt: str = "auto",
    header: bool = True,
    delimiter: str = ",",
) -> tuple[DataFrame, list[str]]:
    """A canonical file as strings with `_corrupt` and `_row`; returns it and its (lower-cased) columns.

    A CSV with a header maps columns by name (any order, optional ones may be absent); without a
    header the columns must be `default_columns` in that order.
    """
    if file_format(path, fmt) == "parquet":
        df = spark.read.parquet(path)
        df = df.select(*[_as_text(f).alias(f.name.lower()) for f in df.schema.fields])
        df = df.withColumn(CORRUPT, F.lit(None).cast("string"))
        columns = [c for c in df.columns if c != CORRUPT]
    else:
        columns = list(default_columns)
        if header:
            columns = [c.strip().lower() for c in header_names(spark, path, delimiter)]
        df = string_csv(spark, path, columns, header=str(header).lower(), sep=delimiter)
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{path}: required columns {missing} are missing (found {columns})")
    for c in default_columns:
        if c not in columns:
            df = df.withColumn(c, F.lit(None).cast("string"))
    return df.withColumn(ROW, raw_row(columns)), columns


def _as_text(field: T.StructField) -> Column:
    """A Parquet column as the string a CSV would hold. Doubles need care: Spark writes 1709287200.5 as
    `1.7092872005E9`, which no parser here reads, so float epoch times were all quarantined."""
    col = F.col(f"`{field.name}`")
    if isinstance(field.dataType, (T.FloatType, T.DoubleType)):
        whole = col.try_cast("long").cast("string")
        return F.when(col == F.floor(col), whole).otherwise(col.try_cast("decimal(38,9)").cast("string"))
    return col.cast("string")


def header_names(spark: SparkSession, path: str, delimiter: str) -> list[str]:
    """The names in a CSV's first line; a local plain file is read directly, sparing a Spark job."""
    sep = {"\\t": "\t"}.get(delimiter, delimiter)
    if "://" not in path and os.path.isfile(path) and not path.endswith(".gz") and len(sep) == 1:
        # Only the first line, leniently decoded: a text reader would decode a whole buffer, so one
        # non-UTF-8 byte in the first records failed the entire file instead of quarantining that line.
        with open(path, "rb") as f:
            first = f.readline(1 << 20).decode("utf-8-sig", errors="replace")
        return next(csv.reader([first], delimiter=sep), [])
    return spark.read.option("header", True).option("sep", delimiter).csv(path).columns


def parse_ts(col: Column | str) -> Column:
    """ISO-8601 (with or without offset; none means UTC) or epoch seconds; null when neither."""
    text = F.trim(F.col(col) if isinstance(col, str) else col)
    epoch = F.timestamp_seconds(text.try_cast("decimal(18,6)"))
    return F.when(text.rlike(EPOCH_RE), epoch).otherwise(text.try_cast("timestamp"))


def event_checks(df: DataFrame, min_ts: str, max_ts: str) -> dict[str, Column]:
    """The checks of a staged event record with string columns user_id, item_id, event, ts, dwell_ms.

    `event` must already be mapped to the contract's vocabulary (null or unknown → unknown_event).
    """
    ts = parse_ts("ts")
    dwell = F.trim("dwell_ms").try_cast("long")
    return {
        "wrong_column_count": malformed(),
        "missing_user_id": blank("user_id"),
        "missing_item_id": blank("item_id"),
        "unknown_event": F.col("event").isNull() | ~F.col("event").isin(*EVENT_TYPES),
        "unparseable_ts": ts.isNull(),
        "ts_out_of_range": (ts < F.lit(min_ts).cast("timestamp")) | (ts > F.lit(max_ts).cast("timestamp")),
        "negative_dwell_ms": dwell < 0,
        "unparseable_dwell_ms": ~blank("dwell_ms") & dwell.isNull(),
    }


def to_events(valid: DataFrame) -> DataFrame:
    """Valid staged records as `events` rows (ids trimmed, blank session_id as null, dt = date of ts)."""
    ts = parse_ts("ts")
    return valid.select(
        F.trim("user_id").alias("user_id"),
        F.trim("item_id").alias("item_id"),
        F.col("event"),
        ts.alias("ts"),
        F.when(blank("session_id"), None).otherwise(F.col("session_id")).alias("session_id"),
        F.trim("dwell_ms").try_cast("long").alias("dwell_ms"),
        F.to_date(ts).alias("dt"),
    )


def parse_events(
    spark: SparkSession,
    path: str,
    *,
    run_id: str,
    min_ts: str,
    max_ts: str,
    fmt: str = "auto",
    header: bool = True,
    delimiter: str = ",",
) -> Parsed:
    """A canonical events file: columns user_id, item_id, event, ts and optionally session_id, dwell_ms."""
    df, _ = read_strings(spark, path, EVENT_COLUMNS[:4], EVENT_COLUMNS, fmt, header, delimiter)
    # Event names are matched case-insensitively: "Click" is a click.
    df = df.withColumn("event", F.lower(F.trim("event")))
    staged = classify(df, event_checks(df, min_ts, max_ts))
    valid = to_events(staged.filter(F.col(REASON).isNull()))
    return Parsed(staged, valid, rejected_rows(staged, "events", run_id))


def parse_items(
    spark: SparkSession,
    path: str,
    *,
    run_id: str,
    fmt: str = "auto",
    header: bool = True,
    delimiter: str = ",",
) -> Parsed:
    """A canonical items file; in CSV, `tags` is pipe-separated (`a|b`)."""
    df, _ = read_strings(spark, path, ("item_id",), ITEM_COLUMNS, fmt, header, delimiter)
    staged = classify(
        df,
        {
            "wrong_column_count": malformed(),
            "missing_item_id": blank("item_id"),
            "unparseable_ts": ~blank("created_ts") & parse_ts("created_ts").isNull(),
        },
    )
    # Parquet arrays arrive here as their string form "[a, b]"; CSV tags as "a|b".
    tags = F.regexp_replace(F.trim("tags"), r"^\[|\]$", "")
    valid = staged.filter(F.col(REASON).isNull()).select(
        F.trim("item_id").alias("item_id"),
        _blank_null("category"),
        _blank_null("author_id"),
        F.when(blank("tags"), None).otherwise(F.split(tags, r"\s*[|,]\s*")).alias("tags"),
        parse_ts("created_ts").alias("created_ts"),
    )
    return Parsed(staged, valid, rejected_rows(staged, "items", run_id))


def parse_users(
    spark: SparkSession,
    path: str,
    *,
    run_id: str,
    fmt: str = "auto",
    header: bool = True,
    delimiter: str = ",",
) -> Parsed:
    """A canonical users file in the `users` contract's columns."""
    df, _ = read_strings(spark, path, ("user_id",), USER_COLUMNS, fmt, header, delimiter)
    staged = classify(
        df,
        {
            "wrong_column_count": malformed(),
            "missing_user_id": blank("user_id"),
            "unparseable_ts": ~blank("signup_ts") & parse_ts("signup_ts").isNull(),
        },
    )
    valid = staged.filter(F.col(REASON).isNull()).select(
        F.trim("user_id").alias("user_id"),
        _blank_null("gender"),
        _blank_null("age_bucket"),
        _blank_null("region"),
        parse_ts("signup_ts").alias("signup_ts"),
    )
    return Parsed(staged, valid, rejected_rows(staged, "users", run_id))


def _blank_null(name: str) -> Column:
    return F.when(blank(name), None).otherwise(F.trim(name)).alias(name)
