"""Interest weights `r_ui` from events, and the filtered interaction set every similarity is built on.

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

import datetime as dt
from collections.abc import Mapping

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

DEFAULT_WEIGHTS: dict[str, float] = {
    "click": 1.0,
    "like": 2.0,
    "comment": 2.0,
    "share": 3.0,
    "follow": 3.0,
    "purchase": 4.0,
    "impression": 0.0,
}


def window_bounds(date: dt.date, window_days: int) -> tuple[dt.date | None, dt.date]:
    """First and last day (inclusive) of the window ending at `date`; first is None for all history."""
    if window_days < 0:
        raise ValueError(f"window_days must be >= 0, got {window_days}")
    first = date - dt.timedelta(days=window_days - 1) if window_days > 0 else None
    return first, date


def interest_weights(
    events: DataFrame, date: dt.date, window_days: int = 0, weights: Mapping[str, float] | None = None
) -> DataFrame:
    """`(user_id, item_id, r, last_ts)`: `r_ui` = Σ event weights of u's events on i in the window.

    The window is the `window_days` days ending at `date` inclusive (0 = all history up to `date`),
    selected on the `dt` partition column so Delta/Parquet readers prune files. Only `r > 0` rows are
    returned (`I_u`, `U_i` are defined on them). `last_ts` is u's latest event on i with a positive
    weight: an impression is exposure, not interest, so it does not make a user "recent".
    """
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    first, last = window_bounds(date, window_days)
    in_window = F.col("dt") <= F.lit(last)
    if first is not None:
        in_window &= F.col("dt") >= F.lit(first)
    weight = F.lit(0.0)
    for event, value in weights.items():
        weight = F.when(F.col("event") == event, F.lit(float(value))).otherwise(weight)
    return (
        events.filter(in_window)
        .select("user_id", "item_id", "ts", weight.alias("w"))
        .filter(F.col("w") != 0)  # impressions are most of the volume: drop them before the shuffle
        .groupBy("user_id", "item_id")
        .agg(F.sum("w").alias("r"), F.max(F.when(F.col("w") > 0, F.col("ts"))).alias("last_ts"))
        .filter(F.col("r") > 0)
    )


def filter_users(interactions: DataFrame, min_user_items: int, max_user_items: int) -> DataFrame:
    """`R`: drop users with fewer than `min_user_items` or more than `max_user_items` items.

    Adds `n_user` = |I_u| and, over the remaining users, `n_item` = |U_i|.
    Window counts keep this at one shuffle per key; a bot's rows are counted, never paired, here.
    """
    by_user = Window.partitionBy("user_id")
    by_item = Window.partitionBy("item_id")
    kept = interactions.withColumn("n_user", F.count(F.lit(1)).over(by_user)).filter(
        (F.col("n_user") >= min_user_items) & (F.col("n_user") <= max_user_items)
    )
    return kept.withColumn("n_item", F.count(F.lit(1)).over(by_item))


def recency_rank(r_set: DataFrame) -> DataFrame:
    """`R` with `pos`: 1 for an item's most recent user (latest ts, then user_id ascending), 2, ..."""
    recent = Window.partitionBy("item_id").orderBy(F.col("last_ts").desc_nulls_last(), F.col("user_id"))
    return r_set.withColumn("pos", F.row_number().over(recent))


def cap_users_per_item(r_set: DataFrame, max_users_per_item: int) -> DataFrame:
    """`T`: each item keeps its `max_users_per_item` most recent users (latest ts, then user_id).

    Adds `norm2` = Σ r_ui² over the item's kept users (ItemCF's norm, over the same users as its dot
    product). Sorting an item's users is linear work in one task even for a very hot item; only
    pairing is quadratic, and pairing happens after this cap.
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
    """`T` with `n_user`, `n_item` from `R` and `norm2` on `T`: user filter first, then the per-item cap."""
    return cap_users_per_item(filter_users(interactions, min_user_items, max_user_items), max_users_per_item)
