"""The filtered interaction set every similarity is built on, from the interest weights `r_ui`.

`r_ui` itself (`interest_weights`) is in `recsys_spark.events`, shared with the graph and the samples.

Two sets, as DESIGN.md defines them (the brute-force references in the tests follow DESIGN, not this):

- `R` (`filter_users`): interactions with `r_ui > 0` in the window, of users whose item count
  `|I_u|` lies in `[min_user_items, max_user_items]` (counted on all their `r > 0` items in the window).
  A user's whole item set `I_u` and an item's whole user set `U_i` are taken on `R`: `|I_u|` (Swing's
  w_u, UserCF), `|U_i|` (UserCF's penalty), and Swing's `|I_u ∩ I_v|` (see `swing`).
- `T` (`cap_users_per_item`): `R` with each item keeping at most `max_users_per_item` users, the
  most recent ones (by the user's latest positive event on the item, ties by `user_id` ascending).
  The cap decides which pairs an item generates (its capped users are the only ones it pairs), and
  ItemCF's cosine runs over it entirely: dot product and norms `Σ_u r_ui²` over the same capped users.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def filter_users(interactions: DataFrame, min_user_items: int, max_user_items: int) -> DataFrame:
    """`R`: drop users with fewer than `min_user_items` or more than `max_user_items` items.

    Adds `n_user` = |I_u| and, over the remaining users, `n_item` = |U_i|.
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
        The input columns plus `n_user`, `n_item` (long).
    """
    by_user = Window.partitionBy("user_id")
    by_item = Window.partitionBy("item_id")
    kept = interactions.withColumn("n_user", F.count(F.lit(1)).over(by_user)).filter(
        (F.col("n_user") >= min_user_items) & (F.col("n_user") <= max_user_items)
    )
    return kept.withColumn("n_item", F.count(F.lit(1)).over(by_item))


def recency_rank(r_set: DataFrame) -> DataFrame:
    """`R` with `pos`: 1 for an item's most recent user (latest ts, then user_id ascending), 2, ...

    Parameters
    ----------
    r_set : DataFrame
        `R` from `filter_users` (needs `item_id`, `user_id`, `last_ts`).

    Returns
    -------
    DataFrame
        The rows of `r_set` plus `pos: int`, the user's recency rank on the item.
    """
    recent = Window.partitionBy("item_id").orderBy(F.col("last_ts").desc_nulls_last(), F.col("user_id"))
    return r_set.withColumn("pos", F.row_number().over(recent))


def cap_users_per_item(r_set: DataFrame, max_users_per_item: int) -> DataFrame:
    """`T`: each item keeps its `max_users_per_item` most recent users (latest ts, then user_id).

    Adds `norm2` = Σ r_ui² over the item's kept users (ItemCF's norm, over the same users as its dot
    product). Sorting an item's users is linear work in one task even for a very hot item; only
    pairing is quadratic, and pairing happens after this cap.

    Parameters
    ----------
    r_set : DataFrame
        `R` from `filter_users` (needs `item_id`, `user_id`, `last_ts`).
    max_users_per_item : int
        Users kept per item.

    Returns
    -------
    DataFrame
        The rows of `r_set` that are kept, plus `norm2` over the kept users.
    """
    return (
        recency_rank(r_set)
        .filter(F.col("pos") <= max_users_per_item)
        .drop("pos")
        .withColumn("norm2", F.sum(F.col("r") * F.col("r")).over(Window.partitionBy("item_id")))
    )


def filtered_interactions(
    interactions: DataFrame, min_user_items: int, max_user_items: int, max_users_per_item: int
) -> DataFrame:
    """`T` with `n_user`, `n_item` from `R` and `norm2` on `T`: user filter first, then the per-item cap.

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
