"""Top-K neighbour lists: highest score first, ties by the other id ascending, no self pairs, score > 0."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def both_directions(pairs: DataFrame, a: str, b: str, id_col: str, other_col: str) -> DataFrame:
    """`(id_col, other_col, score)` from unordered pairs `(a, b, score)`: each pair listed both ways.

    Parameters
    ----------
    pairs : DataFrame
        Unordered pairs with columns `a`, `b` and `score`.
    a, b : str
        The two id columns of `pairs`.
    id_col, other_col : str
        Output names of the id and of its neighbour.

    Returns
    -------
    DataFrame
        `(id_col, other_col, score)`, two rows per input pair.
    """
    forward = pairs.select(F.col(a).alias(id_col), F.col(b).alias(other_col), "score")
    backward = pairs.select(F.col(b).alias(id_col), F.col(a).alias(other_col), "score")
    return forward.unionByName(backward)


def top_k(pairs: DataFrame, id_col: str, other_col: str, k: int) -> DataFrame:
    """`(id_col, other_col, score, rank)` with rank 1..k per `id_col`.

    Order: score descending, then `other_col` ascending, so equal scores always list the same way.
    Self pairs and scores ≤ 0 are dropped before ranking, so they never take a slot.

    Parameters
    ----------
    pairs : DataFrame
        Directed pairs `(id_col, other_col, score)`, e.g. from `both_directions`.
    id_col, other_col : str
        The id and neighbour columns.
    k : int
        Neighbours kept per id, >= 1.

    Returns
    -------
    DataFrame
        `(id_col, other_col, score: double, rank: int)`, rank 1 = most similar.

    Raises
    ------
    ValueError
        If `k < 1`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = Window.partitionBy(id_col).orderBy(F.col("score").desc(), F.col(other_col).asc())
    return (
        pairs.filter((F.col(id_col) != F.col(other_col)) & (F.col("score") > 0))
        .withColumn("rank", F.row_number().over(order))
        .filter(F.col("rank") <= k)
        .select(id_col, other_col, F.col("score").cast("double"), F.col("rank").cast("int"))
    )
