"""The filtered interaction set every similarity is built on, from the interest weights `r_ui`.

`r_ui` itself (`interest_weights`) is in `recsys_spark.events`, shared with the graph and the samples.

Two sets, fixed here so that Spark and the brute-force references in the tests agree exactly:

- `R` (`filter_users`): interactions with `r_ui > 0` in the window, of users whose item count
  `|I_u|` lies in `[min_user_items, max_user_items]` (counted on all their `r > 0` items in the window).
  Per-entity quantities are taken on `R`: `|I_u|`, `|U_i|`, `Σ_u r_ui²`. They describe real activity
  and popularity, and cost one aggregation each.
- `T` (`cap_users_per_item`): `R` with each item keeping at most `max_users_per_item` users, the
  most recent ones (by the user's latest positive event on the item, ties by `user_id` ascending).
  Pair quantities (co-occurrence sums, `|I_u ∩ I_v|`) are taken on `T`: that is what the cap bounds.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def filter_users(interactions: DataFrame, min_user_items: int, max_user_items: int) -> DataFrame:
    """`R`: drop users with fewer than `min_user_items` or more than `max_user_items` items.

    Adds `n_user` = |I_u| and, over the remaining users, `n_item` = |U_i| and `norm2` = Σ_u r_ui².
    Window counts keep this at one shuffle per key; a bot's rows are counted, never paired, here.

    Parameters
    ----------
    interactions : DataFrame
        `(user_id, item_id, r, last_ts)` from `interest_weights`.
    min_user_items, max_user_items : int
        Inclusive bounds on `|I_u|`.

    Returns
    -------
    DataFrame
        The input columns plus `n_user`, `n_item` (long) and `norm2` (double).
    """
    by_user = Window.partitionBy("user_id")
    by_item = Window.partitionBy("item_id")
    kept = interactions.withColumn("n_user", F.count(F.lit(1)).over(by_user)).filter(
        (F.col("n_user") >= min_user_items) & (F.col("n_user") <= max_user_items)
    )
    return kept.withColumn("n_item", F.count(F.lit(1)).over(by_item)).withColumn(
        "norm2", F.sum(F.col("r") * F.col("r")).over(by_item)
    )


def cap_users_per_item(r_set: DataFrame, max_users_per_item: int) -> DataFrame:
    """`T`: each item keeps its `max_users_per_item` most recent users (latest ts, then user_id).

    Sorting an item's users is linear work in one task even for a very hot item; only pairing is
    quadratic, and pairing happens after this cap.

    Parameters
    ----------
    r_set : DataFrame
        `R` from `filter_users` (needs `item_id`, `user_id`, `last_ts`).
    max_users_per_item : int
        Users kept per item.

    Returns
    -------
    DataFrame
        The rows of `r_set` that are kept, same columns.
    """
    recent = Window.partitionBy("item_id").orderBy(F.col("last_ts").desc_nulls_last(), F.col("user_id"))
    return (
        r_set.withColumn("_pos", F.row_number().over(recent))
        .filter(F.col("_pos") <= max_users_per_item)
        .drop("_pos")
    )


def filtered_interactions(
    interactions: DataFrame, min_user_items: int, max_user_items: int, max_users_per_item: int
) -> DataFrame:
    """`T` with the per-entity columns of `R`: user filter first, then the per-item cap.

    Parameters
    ----------
    interactions : DataFrame
        `(user_id, item_id, r, last_ts)` from `interest_weights`.
    min_user_items, max_user_items : int
        Inclusive bounds on `|I_u|` (see `filter_users`).
    max_users_per_item : int
        Users kept per item (see `cap_users_per_item`).

    Returns
    -------
    DataFrame
        `T`: `(user_id, item_id, r, last_ts, n_user, n_item, norm2)`.
    """
    return cap_users_per_item(filter_users(interactions, min_user_items, max_user_items), max_users_per_item)
