"""Taobao user behaviour (`UserBehavior.csv`, no header): user, item, category, behavior, timestamp.

Behaviours map to events as pv → click, fav → like, cart → like, buy → purchase; anything else is
quarantined as `unknown_event` (the row's JSON keeps the behaviour as written). Items come from the
events themselves: each item with the category of its latest valid row.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys_spark.ingest.canonical import event_checks, parse_ts, string_csv, to_events
from recsys_spark.ingest.quarantine import REASON, ROW, Parsed, classify, raw_row, rejected_rows

COLUMNS = ("user_id", "item_id", "category_id", "behavior", "timestamp")
BEHAVIORS = {"pv": "click", "fav": "like", "cart": "like", "buy": "purchase"}


def parse_events(
    spark: SparkSession, path: str, *, run_id: str, min_ts: str, max_ts: str, delimiter: str = ","
) -> Parsed:
    df = string_csv(spark, path, list(COLUMNS), sep=delimiter, header="false")
    df = df.withColumn(ROW, raw_row(list(COLUMNS)))
    behavior = F.lower(F.trim("behavior"))
    mapping = F.create_map(*[F.lit(x) for pair in BEHAVIORS.items() for x in pair])
    df = df.withColumns(
        {
            "event": F.when(behavior.isin(*BEHAVIORS), mapping[behavior]),
            "ts": F.col("timestamp"),
            "session_id": F.lit(None).cast("string"),
            "dwell_ms": F.lit(None).cast("string"),
        }
    )
    staged = classify(df, event_checks(df, min_ts, max_ts))
    good = staged.filter(F.col(REASON).isNull())
    return Parsed(staged, to_events(good), rejected_rows(staged, "events", run_id))


def items_from(staged: DataFrame) -> DataFrame:
    """One `items` row per item of the valid records: the category of its latest row (ties: highest)."""
    valid = staged.filter(F.col(REASON).isNull()).select(
        F.trim("item_id").alias("item_id"),
        F.when(F.trim("category_id") != "", F.trim("category_id")).alias("category"),
        parse_ts("timestamp").alias("_t"),
    )
    latest = Window.partitionBy("item_id").orderBy(F.col("_t").desc(), F.col("category").desc_nulls_last())
    return (
        valid.withColumn("_n", F.row_number().over(latest))
        .filter("_n = 1")
        .select(
            "item_id",
            "category",
            F.lit(None).cast("string").alias("author_id"),
            F.lit(None).cast("array<string>").alias("tags"),
            F.lit(None).cast("timestamp").alias("created_ts"),
        )
    )
