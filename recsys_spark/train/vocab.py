"""Id vocabularies: string ids to dense indices that stay stable across model versions.

Index 0 of every field is "unknown". A warm start keeps every index of the previous version and
appends the new ids after them (ordered by id), so an embedding row keeps meaning the same id for
the life of a model lineage and `RecModel.grow` only has to add rows at the end.
Vocabularies are one Parquet file per field, `(id, idx)`, stored with each model version.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

# field -> (column holding the id in samples / profiles)
FIELDS: dict[str, str] = {
    "user": "user_id",
    "item": "item_id",
    "category": "category",
    "author": "author_id",
    "gender": "gender",
    "age": "age_bucket",
    "region": "region",
}


def extend_vocab(spark: SparkSession, old: DataFrame | None, ids: DataFrame) -> DataFrame:
    """`(id, idx)`: `old` unchanged plus the ids of `ids` (one column `id`) it lacks, appended by id.

    The numbering window is vocabulary-sized (one partition), like word2vec's vocabulary build.
    """
    ids = ids.filter(F.col("id").isNotNull()).distinct()
    if old is None:
        old = spark.createDataFrame([], "id string, idx long")
    base = old.agg(F.coalesce(F.max("idx"), F.lit(0)).alias("base"))
    new = ids.join(old, "id", "left_anti")
    numbered = new.crossJoin(F.broadcast(base)).withColumn(
        "idx", (F.col("base") + F.row_number().over(Window.orderBy("id"))).cast("long")
    )
    return old.select("id", F.col("idx").cast("long")).unionByName(numbered.select("id", "idx"))


def read_vocabs(spark: SparkSession, url: str) -> dict[str, DataFrame]:
    return {field: spark.read.parquet(f"{url}/{field}") for field in FIELDS}


def write_vocabs(vocabs: dict[str, DataFrame], url: str) -> dict[str, int]:
    """Write each field's vocabulary under `url/<field>`; returns the sizes (max idx + 1, with unknown)."""
    sizes = {}
    for field, vocab in vocabs.items():
        vocab.coalesce(1).write.mode("overwrite").parquet(f"{url}/{field}")
        sizes[field] = 1 + (
            vocab.sparkSession.read.parquet(f"{url}/{field}").agg(F.max("idx")).first()[0] or 0
        )
    return sizes


def encode(df: DataFrame, column: str, vocab: DataFrame, out: str) -> DataFrame:
    """Replace string column `column` with its index `out` (0 when unknown)."""
    lookup = vocab.select(F.col("id").alias(column), F.col("idx").alias(out))
    return (
        df.join(lookup, column, "left")
        .withColumn(out, F.coalesce(F.col(out), F.lit(0)).cast("long"))
        .drop(column)
    )
