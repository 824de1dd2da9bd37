"""Rerank: each user's final top K from their ranked candidates, with diversity and list rules.

Work is partitioned by user: `groupBy("user_id").applyInPandas` hands one user's candidate pool (the
best `pool` by the ranker's rank, with each item's category, author and vector joined on) to pure
NumPy (`recommend/diversity.select` under `recommend/rules.ListRules`), so an executor holds one
user's `pool × dim` vectors and `pool × pool` similarity at a time, never the catalogue.

`reason` is a short human string built from what put the item there: the channels that recalled it
(the best-ranked one explained in words), its position before reranking and by what it was scored,
and whether diversity or the rules moved it, e.g.
`"swing+itemcf: similar to items you engaged with; ranker #3; placed by mmr diversity"`.

References
----------
Carbonell & Goldstein (1998), MMR; Chen, Zhang & Zhou (2018), Fast Greedy MAP Inference for DPP
(see `recommend/diversity.py`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.candidates.cold_items import NewItemParams, new_item_window
from recsys_spark.config import option
from recsys_spark.recommend.diversity import METHODS, select
from recsys_spark.recommend.rules import ListRules, reserved_positions, with_new_item_slots

RECOMMENDATION_SCHEMA = (
    "user_id string, item_id string, rank int, score double, channels array<string>, "
    "reason string, model_version string, dt date"
)
# How a channel's recall reads to a user; a channel not listed is named as it is.
CHANNEL_PHRASES = {
    "swing": "similar to items you engaged with",
    "itemcf": "similar to items you engaged with",
    "usercf": "liked by users like you",
    "two_tower": "matches your interests",
    "deepwalk": "often viewed next to your items",
    "node2vec": "often viewed next to your items",
    "popularity": "popular right now",
    "cohort": "popular with people like you",
    "session": "viewed with what you just looked at",
    "profile": "new in a category, author or tag you like",
    "als": "matches your taste profile",
}


@dataclass
class RerankParams(NewItemParams):
    """The reranker's parameters (the job's options of the same names).

    Parameters
    ----------
    k, pool, diversity, mmr_lambda, mmr_window, dpp_theta, max_same_category, rule_window, author_rule,
    new_item_slots
        See each option's help.
    new_item_days
        From `candidates.cold_items.NewItemParams`, shared with recall (one `--new-item-days`).
    """

    k: int = option(50, "List length K of each user's recommendations.", minimum=1)
    pool: int = option(200, "Best-ranked candidates per user the reranker chooses from.", minimum=1)
    diversity: str = option("mmr", "none: by score; mmr; dpp (docs/recommend.md).", choices=list(METHODS))
    mmr_lambda: float = option(0.85, "MMR: weight of relevance (1 = pure score order).", minimum=0)
    mmr_window: int = option(10, "MMR: redundancy against the last W picks only (0 = all picks).", minimum=0)
    dpp_theta: float = option(
        0.7, "DPP: θ in [0, 1), quality q = exp(θ/(2(1-θ)) r); larger = more relevance.", minimum=0
    )
    max_same_category: int = option(
        3, "At most this many items of one category in any --rule-window positions (0 = no rule).", minimum=0
    )
    rule_window: int = option(6, "Width of the sliding window of the category rule.", minimum=1)
    author_rule: bool = option(True, "No two items of one author in adjacent positions.")
    new_item_slots: int = option(
        2,
        "Positions of each list reserved for new items (evenly spaced; filled by the user's best new "
        "candidates the rules allow, else by any item; 0 = none).",
        minimum=0,
    )


def reason_for(
    channels: Iterable[str], best_channel: str | None, pre_rank: int, rank: int, by_ranker: bool, method: str
) -> str:
    """The `reason` of one recommendation.

    Parameters
    ----------
    channels : iterable of str
        Channels that recalled the item (sorted).
    best_channel : str or None
        The channel that ranked it best (explained in words).
    pre_rank : int
        Its rank in `ranked_candidates`.
    rank : int
        Its final rank.
    by_ranker : bool
        Whether the score is the ranker's (else the merged recall score).
    method : str
        The diversity method.

    Returns
    -------
    str
        E.g. `"swing+itemcf: similar to items you engaged with; ranker #3; placed by mmr diversity"`.
    """
    names = list(channels)
    phrase = CHANNEL_PHRASES.get(
        best_channel or "", f"recalled by {best_channel}" if best_channel else "recalled"
    )
    text = f"{'+'.join(names) or 'recall'}: {phrase}; {'ranker' if by_ranker else 'recall score'} #{pre_rank}"
    if rank != pre_rank:
        text += "; placed by list rules" if method == "none" else f"; placed by {method} diversity"
    return text


def rerank_user(frame: pd.DataFrame, params: RerankParams) -> pd.DataFrame:
    """One user's recommendations from their candidate pool (sorted here by pre-rank).

    Parameters
    ----------
    frame : pandas.DataFrame
        One user's rows: `user_id, item_id, score, pre_rank, channels, best_channel, model_version,
        category, author_id, vector (array or None), dt`, and optionally `is_new` (bool: the item
        takes a reserved new-item slot first).
    params : RerankParams
        The reranker's parameters.

    Returns
    -------
    pandas.DataFrame
        `RECOMMENDATION_SCHEMA` rows, rank 1..len (<= k) without gaps.
    """
    frame = frame.sort_values(["pre_rank", "item_id"]).reset_index(drop=True)
    n = len(frame)
    vectors = None
    present = [v is not None and len(v) > 0 for v in frame["vector"]]
    if any(present):
        dim = len(next(v for v, ok in zip(frame["vector"], present) if ok))
        vectors = np.zeros((n, dim))
        for i, (v, ok) in enumerate(zip(frame["vector"], present)):
            if ok and len(v) == dim:
                vectors[i] = np.asarray(v, dtype=np.float64)
    categories = np.array([c if isinstance(c, str) else None for c in frame["category"]], dtype=object)
    authors = np.array([a if isinstance(a, str) else None for a in frame["author_id"]], dtype=object)
    rules = ListRules(params.max_same_category, params.rule_window, params.author_rule)
    is_new = frame["is_new"].fillna(False).to_numpy(dtype=bool) if "is_new" in frame else np.zeros(n, bool)
    slots = reserved_positions(params.k, params.new_item_slots) if is_new.any() else []
    chosen = select(
        params.diversity,
        frame["score"].to_numpy(dtype=np.float64),
        vectors,
        params.k,
        with_new_item_slots(rules.checker(categories, authors), is_new, slots),
        params.mmr_lambda,
        params.mmr_window,
        params.dpp_theta,
    )
    picked = frame.iloc[chosen].reset_index(drop=True)
    ranks = np.arange(1, len(picked) + 1, dtype=np.int32)
    reserved = set(slots)
    reasons = [
        reason_for(
            row.channels,
            row.best_channel,
            int(row.pre_rank),
            int(r),
            isinstance(row.model_version, str),
            params.diversity,
        )
        + ("; new item, in a reserved slot" if is_new[c] and int(r) - 1 in reserved else "")
        for row, r, c in zip(picked.itertuples(index=False), ranks, chosen)
    ]
    return pd.DataFrame(
        {
            "user_id": picked["user_id"],
            "item_id": picked["item_id"],
            "rank": ranks,
            "score": picked["score"].astype(np.float64),
            "channels": picked["channels"],
            "reason": reasons,
            "model_version": picked["model_version"],
            "dt": picked["dt"],
        }
    )


def recommendations(
    ranked: DataFrame, items: DataFrame, vectors: DataFrame | None, params: RerankParams, day: dt.date
) -> DataFrame:
    """The `recommendations` rows of `day`.

    Parameters
    ----------
    ranked : DataFrame
        `ranked_candidates` rows of `day`.
    items : DataFrame
        `(item_id, category, author_id, created_ts)`.
    vectors : DataFrame or None
        `(item_id, vector: array<float>)` item vectors for the similarity, or None (identity).
    params : RerankParams
        The reranker's parameters.
    day : datetime.date
        The lists' day.

    Returns
    -------
    DataFrame
        `RECOMMENDATION_SCHEMA`: per user at most `k` rows, rank 1..n without gaps.
    """
    best = F.array_min(
        F.transform(
            F.map_entries("channel_ranks"), lambda e: F.struct(e["value"].alias("r"), e["key"].alias("c"))
        )
    )["c"]
    # New items (created in the new_item_days ending at D) join the pool wherever they rank: the
    # reserved slots are theirs, and a ranker that never saw them ranks them low.
    first_new, end = new_item_window(day, params.new_item_days)  # the window recall fills vectors for
    created = items.select(
        "item_id",
        ((F.col("created_ts") >= F.lit(first_new)) & (F.col("created_ts") < F.lit(end))).alias("is_new"),
    )
    keep_new = params.new_item_slots > 0
    pool = ranked.join(created, "item_id", "left")
    pool = pool.filter(
        (F.col("rank") <= params.pool) | (F.lit(keep_new) & F.coalesce("is_new", F.lit(False)))
    )
    pool = pool.select(
        "user_id",
        "item_id",
        F.col("score").cast("double"),
        F.col("rank").alias("pre_rank"),
        "channels",
        best.alias("best_channel"),
        "model_version",
        F.coalesce("is_new", F.lit(False)).alias("is_new"),
        F.lit(day).cast("date").alias("dt"),
    )
    pool = pool.join(items.select("item_id", "category", "author_id"), "item_id", "left")
    if vectors is None:
        pool = pool.withColumn("vector", F.lit(None).cast("array<float>"))
    else:
        pool = pool.join(vectors.select("item_id", "vector"), "item_id", "left")

    def per_user(frame: pd.DataFrame) -> pd.DataFrame:
        return rerank_user(frame, params)

    return pool.groupBy("user_id").applyInPandas(per_user, RECOMMENDATION_SCHEMA)


def short_lists(recs: DataFrame, ranked: DataFrame, k: int, pool: int) -> int:
    """Users whose list is shorter than it could be (min(k, pool, candidates)): the rules ended it early.

    Parameters
    ----------
    recs : DataFrame
        `recommendations` rows of a day.
    ranked : DataFrame
        `ranked_candidates` rows of the same day.
    k : int
        List length wanted.
    pool : int
        Candidates per user the reranker chose from.

    Returns
    -------
    int
        Number of such users.
    """
    got = recs.groupBy("user_id").agg(F.count(F.lit(1)).alias("got"))
    could = ranked.groupBy("user_id").agg(F.least(F.count(F.lit(1)), F.lit(k), F.lit(pool)).alias("could"))
    return could.join(got, "user_id", "left").filter(F.coalesce("got", F.lit(0)) < F.col("could")).count()
