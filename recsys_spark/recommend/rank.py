"""Rank: score every recall candidate of day D with the published ranker and fuse the task scores.

- Features: a candidate of the lists of D (served on D+1) carries exactly what a ranking sample of
  day D+1 carries (`samples.job.day_features(lake, D + 1)`: statistics of D, profiles, the last-N
  clicks up to and including D; the profile matches `pair_dense` from `user_profiles` of D,
  `samples.job.pair_features`, for a ranker trained with them), joined by `samples.job.with_features`;
  the ranker's per-item buffers are refreshed to the item features of the same day
  (`train/scoring.with_item_features`).
- Scoring runs on the executors (`train/scoring.score_rows`): one probability `p_t` per task t.
- Fusion of the task probabilities into one score, with weights `w_t` (`--fusion "click:1,like:0.5"`):
  `sum`: score = Σ_t w_t p_t; `product`: score = Π_t p_t^{w_t} (a weighted geometric form: a
  candidate weak on any weighted task is pulled down multiplicatively).
  `rrf`: reciprocal-rank fusion of the channels and the tasks, score = Σ_{c ∈ channels} v_c /
  (rrf_k + rank_c) + Σ_t w_t / (rrf_k + rank_t), where rank_t is the candidate's rank among the
  user's candidates by p_t and v_c the channel weights (`--channel-weights`, default 1). The ranker
  predicts a click *given an impression*; the channels' ranks carry how likely the item is to be
  met at all, which the ranker never saw. Fusing ranks needs no calibration between them.
- Without a published ranker the score is the merged recall score, the same fusion over the
  channels only: score = Σ_{c ∈ channels} v_c / (rrf_k + rank_c) (Cormack et al. 2009, rrf_k = 60).
- `rank` = 1..n per user by score desc, then item_id asc (a total order: reruns are identical).

References
----------
Cormack, G. V., Clarke, C. L. A. and Büttcher, S. (2009). Reciprocal rank fusion outperforms
Condorcet and individual rank learning methods. SIGIR.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.errors import UsageError

FUSION_METHODS = ("sum", "product", "rrf")
RANKED_COLUMNS = (
    "user_id",
    "item_id",
    "score",
    "rank",
    "task_scores",
    "channels",
    "channel_scores",
    "channel_ranks",
    "model_version",
    "dt",
)


def parse_fusion(text: str, flag: str = "--fusion", allow_empty: bool = False) -> dict[str, float]:
    """`"click:1,like:0.5"` -> `{"click": 1.0, "like": 0.5}`.

    Parameters
    ----------
    text : str
        Comma-separated `name:weight` pairs; weights finite and >= 0, at least one > 0.
    flag : str
        The option named in errors (`--fusion`, `--channel-weights`).
    allow_empty : bool
        An empty `text` gives `{}` instead of an error (and all-zero weights are allowed).

    Returns
    -------
    dict of str to float
        Task -> weight, in the order given.

    Raises
    ------
    UsageError
        On a malformed pair, a repeated task or a bad weight.
    """
    weights: dict[str, float] = {}
    if allow_empty and not text.strip():
        return weights
    for part in (p.strip() for p in text.split(",")):
        task, sep, value = part.partition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not task.strip() or not math.isfinite(weight) or weight < 0:
            raise UsageError(f"{flag}: {part!r} is not name:weight with a weight >= 0 (in {text!r})")
        if task.strip() in weights:
            raise UsageError(f"{flag} names {task.strip()!r} twice")
        weights[task.strip()] = weight
    if not allow_empty and not any(w > 0 for w in weights.values()):
        raise UsageError(f"{flag} {text!r}: at least one weight must be > 0")
    return weights


def _check_tasks(weights: dict[str, float], have) -> None:
    """A UsageError naming the `--fusion` tasks the ranker has no head for."""
    missing = sorted(set(weights) - set(have))
    if missing:
        raise UsageError(f"--fusion names tasks {missing} the ranker has not: it has {sorted(have)}")


def fused_score(task_columns: dict[str, Column], weights: dict[str, float], method: str) -> Column:
    """The fused score of per-task probability columns.

    Parameters
    ----------
    task_columns : dict of str to Column
        Task -> its probability column.
    weights : dict of str to float
        Task -> weight (every task must be in `task_columns`).
    method : {"sum", "product"}
        Σ_t w_t p_t or Π_t p_t^{w_t} (`rrf` is `rank_fusion_score`, over ranks).

    Returns
    -------
    Column
        double.
    """
    _check_tasks(weights, task_columns)
    if method == "sum":
        terms = [task_columns[t].cast("double") * F.lit(float(w)) for t, w in weights.items()]
        return reduce(lambda a, b: a + b, terms)
    if method == "product":
        terms = [F.pow(task_columns[t].cast("double"), F.lit(float(w))) for t, w in weights.items()]
        return reduce(lambda a, b: a * b, terms)
    raise UsageError(f"--fusion-method {method!r}: choose one of {FUSION_METHODS}")


def reciprocal_rank_score(
    channel_ranks: Column, rrf_k: float = 60.0, channel_weights: dict[str, float] | None = None
) -> Column:
    """Σ over the channels of v_c / (rrf_k + rank_c): the merged recall score.

    Parameters
    ----------
    channel_ranks : Column
        map<string,int> channel -> rank of the item in that channel's list (1 = best).
    rrf_k : float
        The fusion constant (60 in Cormack et al.).
    channel_weights : dict of str to float, optional
        v_c per channel; a channel not named weighs 1.

    Returns
    -------
    Column
        double (0.0 for an empty map).
    """
    named = channel_weights or {}
    weights = (
        F.create_map(*[x for c, w in named.items() for x in (F.lit(c), F.lit(float(w)))])
        if named
        else F.create_map().cast("map<string,double>")
    )
    return F.aggregate(
        F.map_entries(channel_ranks),
        F.lit(0.0).cast("double"),
        lambda acc, e: (
            acc
            + F.coalesce(weights[e["key"]], F.lit(1.0)) / (F.lit(float(rrf_k)) + e["value"].cast("double"))
        ),
    )


def rank_fusion_score(
    channel_ranks: Column,
    task_ranks: dict[str, Column],
    task_weights: dict[str, float],
    rrf_k: float = 60.0,
    channel_weights: dict[str, float] | None = None,
) -> Column:
    """Reciprocal-rank fusion of the channels and the ranker's tasks (`--fusion-method rrf`).

    score = Σ_c v_c / (rrf_k + rank_c) + Σ_t w_t / (rrf_k + rank_t).

    Parameters
    ----------
    channel_ranks : Column
        map<string,int> channel -> rank in that channel's list.
    task_ranks : dict of str to Column
        Task -> int rank of the candidate among the user's candidates by that task's probability.
    task_weights : dict of str to float
        w_t (every task must be in `task_ranks`).
    rrf_k : float
        The fusion constant.
    channel_weights : dict of str to float, optional
        v_c; a channel not named weighs 1.

    Returns
    -------
    Column
        double.
    """
    _check_tasks(task_weights, task_ranks)
    score = reciprocal_rank_score(channel_ranks, rrf_k, channel_weights)
    for task, weight in task_weights.items():
        score = score + F.lit(float(weight)) / (F.lit(float(rrf_k)) + task_ranks[task].cast("double"))
    return score


def task_ranks(rows: DataFrame, tasks: tuple[str, ...], prefix: str = "p_") -> DataFrame:
    """Add `r_<task>`: the rank 1..n of each row among its user's rows by `p_<task>` desc, item_id asc.

    Parameters
    ----------
    rows : DataFrame
        `(user_id, item_id, p_<task> ...)`.
    tasks : tuple of str
        Task names.
    prefix : str
        Column prefix of the probabilities.

    Returns
    -------
    DataFrame
        The same rows plus one int column `r_<task>` per task.
    """
    for task in tasks:
        order = Window.partitionBy("user_id").orderBy(F.col(f"{prefix}{task}").desc(), F.col("item_id"))
        rows = rows.withColumn(f"r_{task}", F.row_number().over(order))
    return rows


def number_ranks(scored: DataFrame) -> DataFrame:
    """Add `rank: int`, 1..n per user, by score desc then item_id asc.

    Parameters
    ----------
    scored : DataFrame
        Any rows with `user_id`, `item_id`, `score`.

    Returns
    -------
    DataFrame
        The same rows plus `rank`.
    """
    order = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("item_id").asc())
    return scored.withColumn("rank", F.row_number().over(order).cast("int"))


def task_map(tasks: tuple[str, ...], prefix: str = "p_") -> Column:
    """map<string,double> task -> probability from the `p_<task>` columns.

    Parameters
    ----------
    tasks : tuple of str
        Task names.
    prefix : str
        Column prefix of the probabilities.

    Returns
    -------
    Column
        map<string,double>.
    """
    pairs = [x for t in tasks for x in (F.lit(t), F.col(f"{prefix}{t}").cast("double"))]
    return F.create_map(*pairs)


def ranked_candidates(
    candidates: DataFrame,
    scores: DataFrame | None,
    tasks: tuple[str, ...],
    weights: dict[str, float],
    method: str,
    model_version: str | None,
    day: dt.date,
    rrf_k: float = 60.0,
    channel_weights: dict[str, float] | None = None,
) -> DataFrame:
    """The `ranked_candidates` rows of `day` from the recall candidates and the ranker's scores.

    Parameters
    ----------
    candidates : DataFrame
        `recall_candidates` rows of `day`: `(user_id, item_id, channels, channel_scores,
        channel_ranks, ...)`.
    scores : DataFrame or None
        `(user_id, item_id, p_<task> ...)` from `train.scoring.score_rows`; None: no ranker
        (the merged recall score is used).
    tasks : tuple of str
        The ranker's tasks (ignored without `scores`).
    weights : dict of str to float
        Fusion weights (`parse_fusion`).
    method : {"sum", "product", "rrf"}
        Fusion method.
    model_version : str or None
        The ranker version, recorded on every row.
    day : datetime.date
        The lists' day (`dt`).
    rrf_k : float
        Reciprocal-rank-fusion constant (`rrf` and the no-ranker score).
    channel_weights : dict of str to float, optional
        v_c of the reciprocal-rank fusion; a channel not named weighs 1.

    Returns
    -------
    DataFrame
        `RANKED_COLUMNS`, one row per candidate.
    """
    base = candidates.select("user_id", "item_id", "channels", "channel_scores", "channel_ranks")
    if scores is None:
        score = reciprocal_rank_score(F.col("channel_ranks"), rrf_k, channel_weights)
        rows = base.withColumn("score", score).withColumn(
            "task_scores", F.create_map().cast("map<string,double>")
        )
    elif method == "rrf":
        ranks = {t: F.col(f"r_{t}") for t in tasks}
        score = rank_fusion_score(F.col("channel_ranks"), ranks, weights, rrf_k, channel_weights)
        rows = (
            task_ranks(base.join(scores, ["user_id", "item_id"]), tasks)
            .withColumn("score", score)
            .withColumn("task_scores", task_map(tasks))
        )
    else:
        columns = {t: F.col(f"p_{t}") for t in tasks}
        rows = (
            base.join(scores, ["user_id", "item_id"])
            .withColumn("score", fused_score(columns, weights, method))
            .withColumn("task_scores", task_map(tasks))
        )
    return number_ranks(rows).select(
        "user_id",
        "item_id",
        F.col("score").cast("double"),
        "rank",
        "task_scores",
        "channels",
        "channel_scores",
        "channel_ranks",
        F.lit(model_version).cast("string").alias("model_version"),
        F.lit(day).cast("date").alias("dt"),
    )
