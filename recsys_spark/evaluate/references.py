"""The recall channels every model is measured against: the generator's oracle, implicit ALS and EASE.

- `oracle`: on a generated lake, each sampled user's items ranked by the true expected clicks of D
  (`generate.truth.expected_clicks`): the best list anyone could serve, so a channel's gap to it is
  the room left. Skipped on a lake without the generator's truth.
- `als`, `ease`: the baselines users already know (`candidates.baselines`), trained on the interest
  weights of the `--baseline-days` ending at D − 1, so they see exactly what the other channels saw.

Each builder returns the channel's lists as ranked and with the seen pairs removed before the cut
(`ChannelLists`), and a source string for the report; `(None, None)` when the channel cannot run.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame

from recsys_spark.candidates import lists as channels
from recsys_spark.candidates.baselines import als_scores, ease_candidates, ease_weights, fit_implicit_als
from recsys_spark.config import option
from recsys_spark.events import interest_weights
from recsys_spark.generate.truth import expected_clicks, generated_config
from recsys_spark.lake.commit import remove_dir

log = logging.getLogger(__name__)

REFERENCE_CHANNELS = ("oracle", "als", "ease")


@dataclass
class BaselineParams:
    """Options of the baseline channels `als` and `ease`.

    Parameters
    ----------
    baseline_days : int
        Days of interest weights ending at D − 1 that train both.
    als_rank, als_iterations, als_reg, als_alpha : int, int, float, float
        MLlib ALS's rank, maxIter, regParam and implicit confidence alpha.
    ease_max_items : int
        N, EASE's item set (the N items most users engaged with): an N × N dense matrix on the driver.
    ease_l2 : float
        EASE's λ.
    """

    baseline_days: int = option(
        30, "Days of interest weights ending at D-1 that train als and ease.", minimum=1
    )
    als_rank: int = option(32, "Channel als: rank of the implicit ALS factors.", minimum=1)
    als_iterations: int = option(10, "Channel als: ALS iterations.", minimum=1)
    als_reg: float = option(0.05, "Channel als: ALS regParam.", minimum=0)
    als_alpha: float = option(
        10.0, "Channel als: confidence 1 + alpha * r of an interest weight r.", minimum=0
    )
    ease_max_items: int = option(
        2000, "Channel ease: the items (most engaged first) of its dense N x N weight matrix.", minimum=1
    )
    ease_l2: float = option(200.0, "Channel ease: the L2 weight lambda.", exclusive_minimum=0)


def _oracle_lists(lake, day: dt.date, users: DataFrame, k: int, seen: dict | None, spark_lists):
    """Channel `oracle`: the sampled users' items by true expected clicks on D (generated lakes only)."""
    gen = generated_config(lake)
    if gen is None:
        return None, None
    # Each cluster offers enough items that a user's exact top-K survives their exclusions.
    per_cluster = k + max((len(s) for s in (seen or {}).values()), default=0)
    scored = expected_clicks(
        users, lake.read("truth_items"), lake.read("truth_users"), lake.read("items"), gen, day, per_cluster
    ).cache()
    found = spark_lists(lambda ex: channels.rank_top_k(scored, k, ex))
    scored.unpersist()
    return found, f"generator truth (seed {gen.seed}): expected clicks on {day}"


def _training_weights(events: DataFrame, day: dt.date, days: int) -> tuple[DataFrame, str]:
    before = day - dt.timedelta(days=1)
    window = f"{before - dt.timedelta(days=days - 1)}..{before}"
    return interest_weights(events, before, days).select("user_id", "item_id", "r"), window


def _als_lists(
    lake, events: DataFrame, day: dt.date, users: DataFrame, k: int, params: BaselineParams, seen, spark_lists
):
    """Channel `als`: implicit ALS trained once on the window, listed with and without exclusions."""
    weights, window = _training_weights(events, day, params.baseline_days)
    weights = weights.cache()
    if not weights.limit(1).count():
        return None, None
    started = dt.datetime.now()
    scratch = lake.scratch_dir("als")
    try:
        fitted = fit_implicit_als(
            weights, params.als_rank, params.als_iterations, params.als_reg, params.als_alpha, 0, scratch
        )
        # One top-n per user serves both views: n = k + the most items any sampled user has excluded.
        most_seen = max((len(s) for s in (seen or {}).values()), default=0)
        scored = als_scores(fitted, users, k + most_seen).cache()
        found = spark_lists(lambda ex: channels.rank_top_k(scored, k, ex))
        scored.unpersist()
    finally:
        remove_dir(scratch)
    log.info(
        "evaluate %s: als trained and listed in %.1fs", day, (dt.datetime.now() - started).total_seconds()
    )
    weights.unpersist()
    source = f"ALS implicit rank {params.als_rank}, {params.als_iterations} iterations, weights {window}"
    return found, source


def _ease_lists(events: DataFrame, day: dt.date, users: DataFrame, k: int, params: BaselineParams, seen):
    """Channel `ease`: EASE's B from the window, applied to the sampled users' own window items."""
    weights, window = _training_weights(events, day, params.baseline_days)
    weights = weights.cache()
    ids, matrix = ease_weights(weights, params.ease_max_items, params.ease_l2)
    if not ids:
        weights.unpersist()
        return None, None
    histories: dict[str, set[str]] = {}
    for row in weights.join(users, "user_id").select("user_id", "item_id").collect():  # the sample only
        histories.setdefault(row["user_id"], set()).add(row["item_id"])
    weights.unpersist()
    plain = channels.topk_lists(ease_candidates(ids, matrix, histories, k))
    unseen = None if seen is None else channels.topk_lists(ease_candidates(ids, matrix, histories, k, seen))
    source = f"EASE {len(ids)} items, l2 {params.ease_l2:g}, weights {window}"
    return (plain, unseen), source


def reference_lists(name: str, lake, events, day, users, k, params: BaselineParams, seen, spark_lists):
    """The lists of reference channel `name` and what they were built from.

    Parameters
    ----------
    name : str
        One of `REFERENCE_CHANNELS`.
    lake : Lake
        The lake (truth tables for the oracle).
    events : DataFrame
        The `events` table; the baselines train on its interest weights of the window before D.
    day : datetime.date
        The held-out day D.
    users : DataFrame
        `(user_id)`: the evaluated sample.
    k : int
        List length.
    params : BaselineParams
        The baselines' options.
    seen : dict of str to set of str, or None
        Per sampled user, the items withheld from the served view (None without --exclude-seen).
    spark_lists : callable
        `build(exclude) -> candidates` to `ChannelLists`, the evaluate job's helper.

    Returns
    -------
    tuple
        `(ChannelLists, source str)`, or `(None, None)` when the channel cannot run on this lake.
    """
    if name == "oracle":
        return _oracle_lists(lake, day, users, k, seen, spark_lists)
    if name == "als":
        return _als_lists(lake, events, day, users, k, params, seen, spark_lists)
    if name == "ease":
        return _ease_lists(events, day, users, k, params, seen)
    raise ValueError(f"not a reference channel: {name}")
