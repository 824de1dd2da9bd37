"""Vectors for new items on day 0: the neighbour average over the items sharing their attributes.

A vector channel (graph embeddings, the two-tower's `item_vectors`) can only recall an item that has
a vector, and a new item has none until the vectors are rebuilt after someone clicked it. Every item
created in the `new_item_days` ending at D (created before D + 1 00:00 UTC, so never an item created
after D) that has no vector gets one from the items it shares an attribute with:

    u_j  = v_j / ‖v_j‖                              (the direction of item j's vector)
    G(i) = {category(i)} ∪ {author(i)} ∪ tags(i)    (item i's attribute values; nulls dropped)
    S_g  = {j with a vector : g ∈ G(j)},   m_g = (1 / |S_g|) Σ_{j ∈ S_g} u_j
    A(i) = {g ∈ G(i) : S_g ≠ ∅}
    w_i  = (1 / |A(i)|) Σ_{g ∈ A(i)} m_g            if A(i) ≠ ∅
         = (1 / |V|) Σ_{j ∈ V} u_j                  otherwise: the catalogue mean (V = items with a vector)
    v_i  = w_i / ‖w_i‖   if the source vectors are L2-normalised, else w_i

Each attribute value is one group with one vote (a category, an author, each distinct tag), so the
new item sits where the items like it sit. Directions, not raw vectors, are averaged because every
reader of these spaces reads them by cosine (the ANN index normalises item vectors; skip-gram norms
grow with an item's frequency and would pull the average to the head). When the source vectors are
unit vectors (the two-tower's item tower ends in an L2 normalisation) the result is scaled back to
unit length, so it looks like the rows it joins; skip-gram vectors are not normalised, and there only
the direction of v_i matters to its readers.

Pure Spark: the groups are exploded attribute values (the catalogue one more group, `*`), the means
`posexplode` + `groupBy` + `avg` per dimension, reassembled in dimension order; only the groups some
new item has are averaged, and nothing catalogue-sized leaves the executors.

References
----------
J. Wang, P. Huang, H. Zhao, Z. Zhang, B. Zhao, D. L. Lee. "Billion-scale Commodity Embedding for
E-commerce Recommendation in Alibaba." KDD 2018 (EGES: a cold-start item's embedding as the average of
its side-information embeddings).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_spark.config import option

# |‖v‖ − 1| up to this counts as a unit vector (float32 storage and the towers' own normalisation).
UNIT_TOLERANCE = 1e-3
CATALOGUE = "*"  # the group of every item with a vector


@dataclass
class NewItemParams:
    """Which items are new (item cold start), written once: recall fills in their vectors, rerank
    reserves slots for them.

    Parameters
    ----------
    new_item_days : int
        Items created in this many days ending at the lists' day D are new, >= 1.
    """

    new_item_days: int = option(
        3, "Items created in this many days ending at --date are new (item cold start).", minimum=1
    )


def new_item_window(day: dt.date, new_item_days: int) -> tuple[dt.datetime, dt.datetime]:
    """`[start, end)` of the creation times of new items: D − (n − 1) 00:00 UTC to D + 1 00:00 UTC.

    Parameters
    ----------
    day : datetime.date
        The lists' day D.
    new_item_days : int
        Days n of the window ending at D, >= 1.

    Returns
    -------
    tuple of datetime.datetime
        `(start, end)`, timezone-aware UTC; an item is new when `start <= created_ts < end`.
    """
    if new_item_days < 1:
        raise ValueError(f"new_item_days must be >= 1, got {new_item_days}")
    start = dt.datetime.combine(day - dt.timedelta(days=new_item_days - 1), dt.time(), dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return start, end


def _norm(vector: Column) -> Column:
    return F.sqrt(F.aggregate(vector, F.lit(0.0).cast("double"), lambda acc, x: acc + x * x))


def _scaled(vector: Column) -> Column:
    return F.transform(vector, lambda x: x / F.greatest(_norm(vector), F.lit(1e-12)))


def are_unit_vectors(vectors: DataFrame) -> bool:
    """Whether every vector has L2 norm 1 (within `UNIT_TOLERANCE`): one aggregate, one number back.

    Parameters
    ----------
    vectors : DataFrame
        `(item_id, vector array<float|double>)`, shape (items, 2).

    Returns
    -------
    bool
        True when all norms are within the tolerance of 1 (and there is at least one vector).
    """
    worst = vectors.agg(F.max(F.abs(_norm(F.col("vector")) - F.lit(1.0))).alias("w")).first()["w"]
    return worst is not None and worst <= UNIT_TOLERANCE


def _attribute_keys(items: DataFrame) -> DataFrame:
    """`(item_id, key)`: one row per distinct non-null attribute value, keyed "kind=value"."""
    category = F.when(F.col("category").isNotNull(), F.concat(F.lit("c="), F.col("category").cast("string")))
    author = F.when(F.col("author_id").isNotNull(), F.concat(F.lit("a="), F.col("author_id").cast("string")))
    tags = F.transform(
        F.array_distinct(F.coalesce(F.col("tags"), F.array().cast("array<string>"))),
        lambda t: F.when(t.isNotNull(), F.concat(F.lit("t="), t)),
    )
    keys = F.concat(F.array(category, author), tags)  # distinct per item: item_id is unique in `items`
    return items.select("item_id", F.explode(keys).alias("key")).filter(F.col("key").isNotNull())


def with_new_item_vectors(
    items: DataFrame,
    vectors: DataFrame,
    day: dt.date,
    new_item_days: int,
    normalise: bool | None = None,
) -> DataFrame:
    """`vectors` plus one neighbour-average vector per new item without one (formula: module docstring).

    Parameters
    ----------
    items : DataFrame
        The `items` table (`item_id, category, author_id, tags, created_ts`), shape (items, ≥ 5).
    vectors : DataFrame
        `(item_id, vector array<float|double>)`, shape (items with a vector, 2): one vector version.
    day : datetime.date
        The lists' day D: new = created in `new_item_window(D, new_item_days)`.
    new_item_days : int
        Length of the new-item window, >= 1.
    normalise : bool, optional
        L2-normalise the added vectors; default: when every source vector is a unit vector
        (`are_unit_vectors`).

    Returns
    -------
    DataFrame
        `(item_id, vector array<float>, filled boolean)`: every row of `vectors` with `filled` false,
        then one row per new item that had no vector, `filled` true. An item created after D, or
        before the window, without a vector gets no row.
    """
    start, end = new_item_window(day, new_item_days)
    source = vectors.select("item_id", F.col("vector").cast("array<double>").alias("vector"))
    if normalise is None:
        normalise = are_unit_vectors(source)
    unit = source.select("item_id", _scaled(F.col("vector")).alias("vector"))
    new = (
        items.filter((F.col("created_ts") >= F.lit(start)) & (F.col("created_ts") < F.lit(end)))
        .select("item_id", "category", "author_id", "tags")
        .join(source.select("item_id"), "item_id", "left_anti")
    )
    # The catalogue is one more group, "*" (no attribute key starts so), that every new item has and
    # every vector belongs to: its mean is the fallback, taken in the same pass as the others.
    new_keys = _attribute_keys(new).unionByName(new.select("item_id", F.lit(CATALOGUE).alias("key")))
    # Only the groups some new item has are averaged, never the whole catalogue's; a member is any
    # item with a vector (its vector says it existed when the vectors were built).
    members = (
        _attribute_keys(items.select("item_id", "category", "author_id", "tags"))
        .join(new_keys.select("key").distinct(), "key", "left_semi")
        .join(unit, "item_id")
        .select("key", "vector")
        .unionByName(unit.select(F.lit(CATALOGUE).alias("key"), "vector"))
    )
    group_means = (
        members.select("key", F.posexplode("vector").alias("d", "x"))
        .groupBy("key", "d")
        .agg(F.avg("x").alias("x"))
    )
    # Each available group has one row per dimension, so the (item, d) average is the average of the
    # group means; the catalogue's mean only where the item has no other group.
    is_catalogue = F.col("key") == F.lit(CATALOGUE)
    per_dim = (
        new_keys.join(group_means, "key")
        .groupBy("item_id", "d")
        .agg(
            F.coalesce(
                F.avg(F.when(~is_catalogue, F.col("x"))), F.avg(F.when(is_catalogue, F.col("x")))
            ).alias("x")
        )
    )
    added = per_dim.groupBy("item_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("d", "x"))), lambda s: s["x"]).alias("vector")
    )
    if normalise:
        added = added.select("item_id", _scaled(F.col("vector")).alias("vector"))
    return (
        source.withColumn("filled", F.lit(False))
        .unionByName(added.withColumn("filled", F.lit(True)))
        .select("item_id", F.col("vector").cast("array<float>").alias("vector"), "filled")
    )


def filled_summary(vectors: DataFrame) -> tuple[int, str | None]:
    """How many rows `with_new_item_vectors` added, and a digest of them (ids and vectors).

    The digest names what was filled in: an ANN index built over these vectors is the same index
    exactly when the version and the digest are (one aggregate over the added rows, a string back).

    Parameters
    ----------
    vectors : DataFrame
        The output of `with_new_item_vectors` (`item_id, vector, filled`).

    Returns
    -------
    tuple
        `(n, digest)`: n added rows and the first 12 hex digits of the SHA-256 of their sorted
        `item_id=vector` strings; `(0, None)` when none was added.
    """
    row = (
        vectors.filter(F.col("filled"))
        .select(
            F.concat(
                F.col("item_id"), F.lit("="), F.array_join(F.col("vector").cast("array<string>"), ",")
            ).alias("s")
        )
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sha2(F.concat_ws(";", F.array_sort(F.collect_list("s"))), 256).alias("digest"),
        )
        .first()
    )
    n = int(row["n"] or 0)
    return (n, row["digest"][:12]) if n else (0, None)
