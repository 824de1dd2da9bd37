"""Item cold start, measured: how often the final lists show new items, how the held-out day treats
them, and how long a new item takes to reach the item-to-item similarity tables.

An item is *new as of day D* (with `n = new_item_days`, the window of rerank's new-item slots and of
recall's filled-in vectors) when its `created_ts` lies in

    [D − (n − 1) 00:00 UTC,  D + 1 00:00 UTC)

so an item created at D − (n − 1) 00:00 is new and one created at D + 1 00:00 is not. An item whose
`created_ts` is null (or that is missing from `items`) is not known to be new and counts as old.

- `new_item_share`: over the final lists of day D (`recommendations`, dt = D), the share of lists
  holding at least one new item and the share of list slots that are new items; beside them, their
  peer: the share of the catalogue of D (items created before D + 1 00:00, or with no `created_ts`)
  that is new.
- `new_vs_old_ctr`: on the held-out day D + 1, CTR = clicks / impressions (events `click` and
  `impression`; the generator logs an impression per item shown and a click after some of them,
  docs/generate.md) summed over the items new as of D, and over the old items (created before
  D − (n − 1), or unknown); items created on D + 1 or later belong to neither and are reported
  apart. The ratio new / old is the comparison.
- `days_to_similarity`: for each item, the first dated version of `itemcf_sim` / `swing_sim` holding
  it as `item_id` or `sim_item_id`, in days after its creation day.

Everything is Spark aggregates; what comes back to the driver is a few rows (one per group, or one
per distinct day count), never rows per user, item or pair.

References
----------
A. I. Schein, A. Popescul, L. H. Ungar, D. M. Pennock. "Methods and Metrics for Cold-Start
Recommendations." SIGIR 2002 (measuring recommenders on items without usage history).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.candidates.cold_items import new_item_window
from recsys_spark.catalog import SIMILARITY_TABLES as CATALOG_SIMILARITY

# The item-to-item tables a new item has to reach (ItemCF, Swing).
SIMILARITY_TABLES = tuple(CATALOG_SIMILARITY[algo] for algo in ("itemcf", "swing"))


def _day(day: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(day) if isinstance(day, str) else day


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def new_item_share(
    recommendations: DataFrame, items: DataFrame, day: dt.date | str, new_item_days: int
) -> dict[str, Any]:
    """Share of the final lists of day D holding a new item, share of their slots that are new items.

    With L the users' lists of D (one per user), N the items new as of D and C the catalogue of D
    (items with `created_ts` < D + 1 00:00 UTC or null):

        share_lists_with_new_item = |{u ∈ L : list(u) ∩ N ≠ ∅}| / |L|
        share_slots_new           = Σ_u |list(u) ∩ N| / Σ_u |list(u)|
        share_catalogue_new       = |N| / |C|              (the peer: new items' share of what exists)

    Parameters
    ----------
    recommendations : DataFrame
        The `recommendations` partition dt = D: `user_id, item_id, ...` (one row per list slot). A
        `dt` column, when present, is filtered to D, so the whole table may be passed too.
    items : DataFrame
        The `items` table: `item_id, created_ts, ...`.
    day : date or str
        The lists' day D.
    new_item_days : int
        n: items created in the n days ending at D are new, >= 1.

    Returns
    -------
    dict
        `date`, `new_item_days`; `lists`, `lists_with_new_item`, `share_lists_with_new_item`;
        `slots`, `new_item_slots`, `share_slots_new`; `catalogue_items`, `catalogue_new_items`,
        `share_catalogue_new`. A share is None when its denominator is 0.

    Raises
    ------
    ValueError
        If `new_item_days` < 1.
    """
    day = _day(day)
    start, end = new_item_window(day, new_item_days)
    created = F.col("created_ts")
    is_new = (created >= F.lit(start)) & (created < F.lit(end))
    if "dt" in recommendations.columns:
        recommendations = recommendations.filter(F.col("dt") == F.lit(day))
    new = items.filter(is_new).select("item_id").distinct().withColumn("new", F.lit(1))
    per_user = (
        recommendations.select("user_id", "item_id")
        .join(new, "item_id", "left")
        .groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("slots"), F.count("new").alias("new_slots"))
    )
    lists = per_user.agg(
        F.count(F.lit(1)).alias("lists"),
        F.count(F.when(F.col("new_slots") > 0, 1)).alias("with_new"),
        F.coalesce(F.sum("slots"), F.lit(0)).alias("slots"),
        F.coalesce(F.sum("new_slots"), F.lit(0)).alias("new_slots"),
    )
    catalogue = items.agg(
        F.count(F.when(created.isNull() | (created < F.lit(end)), 1)).alias("items"),
        F.count(F.when(is_new, 1)).alias("new"),
    )
    row = lists.crossJoin(catalogue).first()  # two one-row aggregates, one job
    return {
        "date": str(day),
        "new_item_days": new_item_days,
        "lists": int(row["lists"]),
        "lists_with_new_item": int(row["with_new"]),
        "share_lists_with_new_item": _share(row["with_new"], row["lists"]),
        "slots": int(row["slots"]),
        "new_item_slots": int(row["new_slots"]),
        "share_slots_new": _share(row["new_slots"], row["slots"]),
        "catalogue_items": int(row["items"]),
        "catalogue_new_items": int(row["new"]),
        "share_catalogue_new": _share(row["new"], row["items"]),
    }


def new_vs_old_ctr(
    events: DataFrame, items: DataFrame, day: dt.date | str, new_item_days: int
) -> dict[str, Any]:
    """Click-through on the held-out day D + 1 of the items new as of D against the old items'.

    Each event of D + 1 falls in the group of its item: `new` (created in [D − (n − 1) 00:00,
    D + 1 00:00) UTC), `created_after` (created at D + 1 00:00 or later: not yet existing on D, so
    neither new as of D nor old) or `old` (everything else: created before the window, null
    `created_ts`, or missing from `items`). Per group g:

        impressions_g = events `impression` of g's items,  clicks_g = events `click` of g's items
        ctr_g         = clicks_g / impressions_g            (pooled over the group's events)
        ctr_ratio_new_vs_old = ctr_new / ctr_old

    Parameters
    ----------
    events : DataFrame
        Events of D + 1: `item_id, event, ...`. A `dt` column, when present, is filtered to D + 1, so
        the whole table may be passed too.
    items : DataFrame
        The `items` table: `item_id, created_ts, ...`.
    day : date or str
        D, the day the lists were computed for (the held-out day is D + 1).
    new_item_days : int
        n: items created in the n days ending at D are new, >= 1.

    Returns
    -------
    dict
        `date` (D), `held_out_day` (D + 1), `new_item_days`; `new`, `old`, `created_after`: each a dict
        of `items` (items with an impression or click that day), `impressions`, `clicks`, `ctr`;
        `ctr_ratio_new_vs_old`. A CTR or ratio is None when its denominator is 0.

    Raises
    ------
    ValueError
        If `new_item_days` < 1.
    """
    day = _day(day)
    held_out = day + dt.timedelta(days=1)
    start, end = new_item_window(day, new_item_days)
    if "dt" in events.columns:
        events = events.filter(F.col("dt") == F.lit(held_out))
    per_item = (
        events.filter(F.col("event").isin("impression", "click"))
        .groupBy("item_id")
        .agg(
            F.count(F.when(F.col("event") == "impression", 1)).alias("impressions"),
            F.count(F.when(F.col("event") == "click", 1)).alias("clicks"),
        )
    )
    created = F.col("created_ts")
    group = (
        F.when(created >= F.lit(end), "created_after").when(created >= F.lit(start), "new").otherwise("old")
    )
    rows = (
        per_item.join(items.select("item_id", "created_ts"), "item_id", "left")
        .groupBy(group.alias("group"))
        .agg(
            F.count(F.lit(1)).alias("items"),
            F.sum("impressions").alias("impressions"),
            F.sum("clicks").alias("clicks"),
        )
        .collect()
    )
    found = {r["group"]: r for r in rows}
    out: dict[str, Any] = {"date": str(day), "held_out_day": str(held_out), "new_item_days": new_item_days}
    for name in ("new", "old", "created_after"):
        row = found.get(name)
        impressions, clicks = (int(row["impressions"]), int(row["clicks"])) if row else (0, 0)
        out[name] = {
            "items": int(row["items"]) if row else 0,
            "impressions": impressions,
            "clicks": clicks,
            "ctr": _share(clicks, impressions),
        }
    new_ctr, old_ctr = out["new"]["ctr"], out["old"]["ctr"]
    out["ctr_ratio_new_vs_old"] = new_ctr / old_ctr if new_ctr is not None and old_ctr else None
    return out


def _quantile(histogram: dict[int, int], q: float) -> float | None:
    """numpy.quantile's default (linear) of the values a {value: count} histogram stands for."""
    n = sum(histogram.values())
    if not n:
        return None
    position = (n - 1) * q
    below, frac = int(math.floor(position)), position - math.floor(position)

    def order_statistic(k: int) -> int:  # the k-th smallest value, 0-based
        seen = 0
        for value in sorted(histogram):
            seen += histogram[value]
            if k < seen:
                return value
        raise AssertionError("k beyond the histogram")

    low = order_statistic(below)
    high = order_statistic(min(below + 1, n - 1))
    return low + frac * (high - low)


def days_to_similarity(lake, table: str, items: DataFrame) -> dict[str, Any] | None:
    """Days from an item's creation to the first dated version of a similarity table holding it.

    The table's versions with a `date` in their commit metadata (the day whose events built them;
    `lake.history`) are V, with dates d_1 <= ... <= d_m (ISO days). For an item i created on day c_i
    (`created_ts`'s UTC date), with A_i the versions in which i appears as `item_id` or `sim_item_id`:

        first_i = min_{v ∈ A_i} date(v)        (the earliest-dated version holding i; by version order
                                                for a history written day after day)
        days_i  = first_i − c_i                (0: in the table built from its own creation day)

    Only items with d_1 <= c_i <= d_m count (created on or after the first version's day, so their day
    0 is observed; not after the last): `items` is their number, `reached` those with A_i ≠ ∅,
    `share_never_reached` = (items − reached) / items. An item created late in the span has had few
    versions to get in, so that share is an upper bound of the eventual one. `median_days` and
    `p90_days` are numpy's default (linear) quantiles 0.5 and 0.9 of days_i over the reached items.

    Each version is read once (`lake.read(table, version=v)`), reduced to its distinct item ids; only
    the histogram of days_i (one row per distinct value) reaches the driver. A version whose files were
    vacuumed cannot be read (`maintain` keeps 7 days).

    Parameters
    ----------
    lake : Lake
        The lake holding `table`.
    table : str
        A similarity table: `itemcf_sim` or `swing_sim` (any table with `item_id, sim_item_id` works).
    items : DataFrame
        The `items` table: `item_id, created_ts, ...`; items with a null `created_ts` are left out.

    Returns
    -------
    dict or None
        `table`, `versions` (dated versions), `first_date`, `last_date`, `items`, `reached`,
        `never_reached`, `share_never_reached`, `median_days`, `p90_days`, `days_histogram`
        ({days: items}, str keys). Shares and quantiles are None when there is nothing to take them
        of. None when the table does not exist.
    """
    if not lake.exists(table):
        return None
    dated = sorted(
        (dt.date.fromisoformat(str(e["date"])[:10]), e["version"])
        for e in lake.history(table)
        if e.get("date")
    )
    out: dict[str, Any] = {
        "table": table,
        "versions": len(dated),
        "first_date": str(dated[0][0]) if dated else None,
        "last_date": str(dated[-1][0]) if dated else None,
    }
    histogram: dict[int, int] = {}
    never = 0
    if dated:
        seen = None
        for day, version in dated:
            ids = (
                lake.read(table, version=version)
                .select(F.explode(F.array("item_id", "sim_item_id")).alias("item_id"))
                .distinct()
                .withColumn("day", F.lit(day))
            )
            seen = ids if seen is None else seen.unionByName(ids)
        first = seen.groupBy("item_id").agg(F.min("day").alias("first_day"))
        created = items.filter(F.col("created_ts").isNotNull()).select(
            "item_id", F.to_date("created_ts").alias("created_day")
        )
        cohort = created.filter(
            (F.col("created_day") >= F.lit(dated[0][0])) & (F.col("created_day") <= F.lit(dated[-1][0]))
        )
        rows = (
            cohort.join(first, "item_id", "left")
            .groupBy(F.datediff("first_day", "created_day").alias("days"))
            .count()
            .collect()
        )
        for row in rows:
            if row["days"] is None:
                never = int(row["count"])
            else:
                histogram[int(row["days"])] = int(row["count"])
    reached = sum(histogram.values())
    out.update(
        items=reached + never,
        reached=reached,
        never_reached=never,
        share_never_reached=_share(never, reached + never),
        median_days=_quantile(histogram, 0.5),
        p90_days=_quantile(histogram, 0.9),
        days_histogram={str(d): histogram[d] for d in sorted(histogram)},
    )
    return out
