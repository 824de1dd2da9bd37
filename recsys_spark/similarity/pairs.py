"""Skew-proof pair generation and order-independent sums, shared by the three similarities.

`blocked_pairs` turns one row holding a list of n elements into its n(n-1)/2 unordered pairs without
ever letting one task expand one list quadratically: a list longer than `block_size` is cut into
blocks, each pair of blocks becomes its own row, and all rows are hash-repartitioned before the
pairs are emitted. So any task emits at most `block_size` pairs per input element it receives
(≤ block_size² per block row), whatever the longest list is. The repartition moves lists, not
pairs: one shuffle of input size. (Pairing short lists in place and unioning them with the split
long ones would save it, but Spark then plans the whole upstream twice, which costs more.)

`exact_sum` sums doubles as two 64-bit fixed-point integers (2^-66 resolution). Integer sums are
associative, so a score no longer depends on how Spark partitioned the terms: reruns and cluster
sizes give bit-identical scores, and mathematically tied scores stay tied (and fall to the id order).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_HI = float(2**26)  # integer part of term·2^26: sums are exact below 2^27 (capped lists stay far below)
_LO = float(2**40)  # the remainder, in units of 2^-66


def shuffle_partitions(df: DataFrame, partitions: int | None) -> int:
    """The partition count of a shuffle: `partitions` if given, else `spark.sql.shuffle.partitions`.

    Parameters
    ----------
    df : DataFrame
        Any frame of the session whose configuration supplies the default.
    partitions : int or None
        An explicit count; None (or 0) uses the session's `spark.sql.shuffle.partitions`.

    Returns
    -------
    int
        The number of partitions to shuffle into.
    """
    if partitions:
        return partitions
    return int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))


def blocked_pairs(
    df: DataFrame, keys: Sequence[str], items: str, block_size: int, partitions: int | None = None
) -> DataFrame:
    """Rows `keys..., l, r`: every unordered pair of elements of the array column `items`.

    `items` must be sorted ascending with distinct elements (e.g. `array_sort(collect_list(struct(id,
    ...)))`), so every pair comes out once with `l < r`. Rows with fewer than 2 elements give nothing.

    Parameters
    ----------
    df : DataFrame
        Input rows, one list per row.
    keys : sequence of str
        Columns carried over to every pair (e.g. the user a list belongs to).
    items : str
        The array column to pair up: sorted ascending, distinct elements.
    block_size : int
        Longest list piece paired in one row (>= 2); longer lists are cut into blocks of this size.
    partitions : int, optional
        Partitions of the repartition before the pairs are emitted (default:
        `spark.sql.shuffle.partitions`, see `shuffle_partitions`).

    Returns
    -------
    DataFrame
        Columns `keys..., l, r`, one row per unordered pair with `l < r`.

    Raises
    ------
    ValueError
        If `block_size` is below 2.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    n = F.size(items)
    keep = [F.col(k) for k in keys]
    blocks = F.ceil(n / F.lit(block_size)).cast("int")
    block_pairs = F.flatten(
        F.transform(
            F.sequence(F.lit(0), blocks - 1),
            lambda a: F.transform(F.sequence(a, blocks - 1), lambda b: F.struct(a.alias("a"), b.alias("b"))),
        )
    )
    spread = (
        df.filter(n >= 2)
        .select(*keep, F.col(items).alias("_items"), F.explode(block_pairs).alias("_bp"))
        .select(
            *keep,
            F.slice("_items", F.col("_bp.a") * block_size + 1, block_size).alias("_left"),
            F.slice("_items", F.col("_bp.b") * block_size + 1, block_size).alias("_right"),
            (F.col("_bp.a") == F.col("_bp.b")).alias("_same"),
            F.col("_bp.a").alias("_a"),
            F.col("_bp.b").alias("_b"),
        )
        # An explicit partition count: AQE would otherwise coalesce these small rows by their input
        # bytes, blind to the block² pairs each one expands to.
        .repartition(shuffle_partitions(df, partitions), *keep, "_a", "_b")
    )
    return spread.select(*keep, F.posexplode("_left").alias("_i", "l"), "_right", "_same").select(
        *keep, "l", F.explode(F.filter("_right", lambda y, j: ~F.col("_same") | (j > F.col("_i")))).alias("r")
    )


def exact_sum(term: Column, name: str) -> list[Column]:
    """Aggregate expressions summing `term` (a non-negative double) exactly; finish with `exact_value`.

    Parameters
    ----------
    term : Column
        The non-negative double to sum per group.
    name : str
        Prefix of the two result columns.

    Returns
    -------
    list of Column
        Two aggregates, `<name>_hi` and `<name>_lo` (the fixed-point integer sums), for `agg(...)`.
    """
    scaled = term * F.lit(_HI)
    hi = F.floor(scaled)
    lo = F.round((scaled - hi) * F.lit(_LO)).cast("long")
    return [F.sum(hi).alias(f"{name}_hi"), F.sum(lo).alias(f"{name}_lo")]


def exact_value(name: str) -> Column:
    """The double from the two integer sums written by `exact_sum(..., name)`.

    Parameters
    ----------
    name : str
        The `name` given to `exact_sum`: reads columns `<name>_hi` and `<name>_lo`.

    Returns
    -------
    Column
        The exact sum as a double.
    """
    hi, lo = F.col(f"{name}_hi").cast("double"), F.col(f"{name}_lo").cast("double")
    return (hi + lo / F.lit(_LO)) / F.lit(_HI)
