"""Interest weights `r_ui` from events, and the filtered interaction set every similarity is built on.

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
    """First and last day (inclusive) of the window ending at `date`; first is None for all history.

    Parameters
    ----------
    date : datetime.date
        Last day of the window.
    window_days : int
        Days in the window, >= 0; 0 means all history up to `date`.

    Returns
    -------
    tuple of (datetime.date or None, datetime.date)
        `(first, last)`, both inclusive.
    """
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

    Parameters
    ----------
    events : DataFrame
        The `events` table (`user_id, item_id, event, ts, dt`, ...).
    date : datetime.date
        Last day of the window.
    window_days : int
        Days in the window; 0 = all history up to `date`.
    weights : Mapping[str, float], optional
        Weight per event type; default `DEFAULT_WEIGHTS` (impression 0).

    Returns
    -------
    DataFrame
        `(user_id, item_id, r: double, last_ts: timestamp)` with `r > 0`.
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
