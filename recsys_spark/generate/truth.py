"""The generator's own truth, recomputed: true event probabilities and true expected clicks.

A generated lake holds `truth_items (item_id, cluster, popularity_rank, quality)`, `truth_users
(user_id, clusters, weights, activity)` and, in every table's commit metadata under
`recsys.generate.config`, the options that drew it. From those the model of `tables` gives, for
user u and item i of cluster c (C clusters, n_c items in c):

- per impression, P(click) = ctr(u, i) = min(0.95, base_ctr · quality_i · (taste_boost if c ∈
  clusters_u else 1)), and P(action a) = ctr(u, i) · min(1, boost · rate_a), boost = 1.5 on a
  preferred cluster, 0.5 elsewhere;
- over a day with n impressions of the pair, P(label_e = 1) = 1 − (1 − P_e)^n (labels are "any e");
- P(an impression of u shows i) = P(segment c | u) · P(rank_i | n_c), with
  P(segment c | u) = (1 − explore) · w_{u,c} + explore / C and the power law of `power_law_index`,
  P(k | n) = ((k + 2)^{1−a} − (k + 1)^{1−a}) / ((n + 1)^{1−a} − 1) (logs when a = 1).

`label_probabilities` ranks the shown pairs of a day by their true probability (the oracle AUC) and
by the probability a model serving on D could at best know, without D's impression count of the
pair (the serving oracle AUC, the ranker's reachable limit). `expected_clicks` ranks a user's items by P(shown) · ctr, times the share of day D
the item existed (items are never shown before created_ts); that is the expected number of clicks
per impression on D and the recall oracle. Both ignore the second-order redraw of too-new items.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.generate.config import ACTION_BOOST_OTHER, ACTION_BOOST_PREFERRED, GenerateConfig

CONFIG_KEY = "recsys.generate.config"
TRUTH_TABLES = ("truth_items", "truth_users")
# The column prefixes `label_probabilities` adds per task: `<prefix>_<task>`.
ORACLE_COLUMNS = ("oracle", "oracle_serving")


def generated_config(lake) -> GenerateConfig | None:
    """The options that generated the lake's truth tables; None on a lake that was not generated.

    Parameters
    ----------
    lake : Lake
        The lake; its `truth_items` commit metadata is read.

    Returns
    -------
    GenerateConfig or None
        The stored options (unknown keys ignored, so an older lake still reads), or None without the
        truth tables or the metadata.
    """
    if not all(lake.exists(t) for t in TRUTH_TABLES):
        return None
    raw = next((e[CONFIG_KEY] for e in lake.history("truth_items") if e.get(CONFIG_KEY)), None)
    if raw is None:
        return None
    stored = json.loads(raw)
    fields = {f.name: f for f in dataclasses.fields(GenerateConfig)}
    values = {k: v for k, v in stored.items() if k in fields and k not in ("lake", "master")}
    if "start_date" in values:
        values["start_date"] = dt.date.fromisoformat(str(values["start_date"]))
    return GenerateConfig(**values)


def click_probability(cfg: GenerateConfig, quality: Column, preferred: Column) -> Column:
    """ctr(u, i) of one impression: min(0.95, base_ctr · quality · (taste_boost if preferred else 1)).

    Parameters
    ----------
    cfg : GenerateConfig
        The generating options.
    quality, preferred : Column
        The item's quality (double) and whether its cluster is one of the user's (boolean).

    Returns
    -------
    Column
        The probability (double).
    """
    boost = F.when(preferred, F.lit(cfg.taste_boost)).otherwise(F.lit(1.0))
    return F.least(F.lit(0.95), F.lit(cfg.base_ctr) * quality * boost)


def event_probability(cfg: GenerateConfig, event: str, quality: Column, preferred: Column) -> Column:
    """P(event) of one impression: the click probability, times min(1, boost · rate) for an action.

    Parameters
    ----------
    cfg : GenerateConfig
        The generating options.
    event : str
        `click` or an action of `cfg.action_rates()`.
    quality, preferred : Column
        As in `click_probability`.

    Returns
    -------
    Column
        The probability (double).
    """
    ctr = click_probability(cfg, quality, preferred)
    if event == "click":
        return ctr
    rate = cfg.action_rates()[event]
    boost = F.when(preferred, F.lit(ACTION_BOOST_PREFERRED)).otherwise(F.lit(ACTION_BOOST_OTHER))
    return ctr * F.least(F.lit(1.0), boost * rate)


def label_probabilities(
    rows: DataFrame,
    truth_items: DataFrame,
    truth_users: DataFrame,
    cfg: GenerateConfig,
    tasks,
    items: DataFrame | None = None,
    day: dt.date | None = None,
) -> DataFrame:
    """Adds `oracle_<task>` and `oracle_serving_<task>`: the true label probabilities of the shown pairs.

    `oracle_<task>` knows how often D showed the pair (n = `impressions`): 1 − (1 − P_task)^n. No
    model serving on D can know n, and on generated lakes n alone ranks the labels better than the
    true per-impression probability does, so `oracle_serving_<task>` is the limit of a model that
    knows everything but n: with n ~ Poisson(λ) given the pair was shown (n ≥ 1),

        P(label = 1 | shown) = (1 − e^{−λ P_task}) / (1 − e^{−λ}),
        λ(u, i) = activity_u · E[session length] · P(segment c_i | u) · P(rank_i | n_{c_i}) · live_i,

    the expected impressions of the pair on D (live_i the share of D after the item's created_ts, 1
    without `items`). It ignores the day-to-day activity factor and the clumping of a segment's
    draws, so it is an approximation of that limit, not a bound a model can never pass.

    Parameters
    ----------
    rows : DataFrame
        Shown pairs `(user_id, item_id, impressions, ...)` of one day (`samples.ranking` rows).
    truth_items, truth_users : DataFrame
        The generator's truth tables.
    cfg : GenerateConfig
        The options that generated them (`generated_config`).
    tasks : sequence of str
        Events: `click` or one of the generator's actions.
    items : DataFrame, optional
        The `items` table (`created_ts`), for live_i; with `day`.
    day : datetime.date, optional
        The pairs' day D.

    Returns
    -------
    DataFrame
        `rows` with double columns `oracle_<task>` and `oracle_serving_<task>` per task; pairs whose
        user or item has no truth (ingested rows) get null.
    """
    truth = truth_items.select("item_id", "cluster", "quality", "popularity_rank")
    if items is not None and day is not None:
        truth = truth.join(items.select("item_id", _live_share(day).alias("_live")), "item_id", "left")
    else:
        truth = truth.withColumn("_live", F.lit(1.0))
    users = truth_users.select(
        "user_id", F.col("clusters").alias("_clusters"), _tastes().alias("_t"), F.col("activity").alias("_a")
    )
    joined = rows.join(truth, "item_id", "left").join(users, "user_id", "left")
    preferred = F.array_contains(F.col("_clusters"), F.col("cluster"))
    shown = F.col("impressions").cast("double")
    session = max(1.0, cfg.session_length)  # the geometric length's mean (1 when lengths are 1)
    expected = (
        F.col("_a")
        * session
        * segment_probability(cfg, F.col("_t"), F.col("cluster"))
        * rank_probability(cfg, F.col("popularity_rank"), _cluster_size(cfg, F.col("cluster")))
        * F.coalesce(F.col("_live"), F.lit(1.0))
    )
    # An ingested user or item has no truth: null, not the probability of a non-preferred pair.
    known = F.col("_clusters").isNotNull() & F.col("quality").isNotNull()
    added = []
    for t in tasks:
        p = event_probability(cfg, t, F.col("quality"), preferred)
        added.append(F.when(known, 1 - F.pow(1 - p, shown)).alias(f"{ORACLE_COLUMNS[0]}_{t}"))
        # A pair expected to be shown almost never (λ → 0) is shown once: the limit is P itself.
        serving = F.when(expected > 1e-12, F.expm1(-expected * p) / F.expm1(-expected)).otherwise(p)
        added.append(F.when(known, serving).alias(f"{ORACLE_COLUMNS[1]}_{t}"))
    return joined.select(*rows.columns, *added)


def _live_share(day: dt.date) -> Column:
    """The share of day D after the item's `created_ts`, in [0, 1]."""
    start = F.lit(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp())
    return F.least(
        F.lit(1.0), F.greatest(F.lit(0.0), 1 - (F.col("created_ts").cast("double") - start) / 86400)
    )


def _cluster_size(cfg: GenerateConfig, cluster: Column) -> Column:
    """n_c: items are indexed rank · C + cluster, so cluster c holds ⌈(items − c) / C⌉ of them."""
    clusters = min(cfg.clusters, cfg.items)
    return F.floor((F.lit(cfg.items) - cluster + (clusters - 1)) / clusters)


def _tastes() -> Column:
    """`truth_users`' tastes as array<struct<c, w>>."""
    return F.arrays_zip(F.col("clusters").alias("c"), F.col("weights").alias("w"))


def segment_probability(cfg: GenerateConfig, tastes: Column, cluster: Column) -> Column:
    """P(segment c | u) = (1 − explore) · w_{u,c} + explore / C.

    Parameters
    ----------
    cfg : GenerateConfig
        The generating options.
    tastes : Column
        The user's tastes, array<struct<c: int, w: double>> (`w` = 0 for a cluster not in them).
    cluster : Column
        The cluster c (int).

    Returns
    -------
    Column
        The probability (double) that a segment of u's sessions shows cluster c.
    """
    weight = F.aggregate(
        F.filter(tastes, lambda t: t["c"] == cluster), F.lit(0.0).cast("double"), lambda acc, t: acc + t["w"]
    )
    return (1 - cfg.explore) * weight + F.lit(cfg.explore / min(cfg.clusters, cfg.items))


def rank_probability(cfg: GenerateConfig, rank: Column, size: Column) -> Column:
    """P(k | n): the share of the power law on [1, n + 1) that `power_law_index` maps to rank k.

    Parameters
    ----------
    cfg : GenerateConfig
        The generating options (`popularity_exponent` a).
    rank, size : Column
        The item's 0-based popularity rank k within its cluster, and the cluster's item count n.

    Returns
    -------
    Column
        ((k + 2)^{1−a} − (k + 1)^{1−a}) / ((n + 1)^{1−a} − 1); Σ_{k<n} = 1.
    """
    a = cfg.popularity_exponent
    k, n = rank.cast("double"), size.cast("double")
    if abs(a - 1.0) < 1e-9:
        return (F.log(k + 2) - F.log(k + 1)) / F.log(n + 1)
    e = 1.0 - a
    return (F.pow(k + 2, F.lit(e)) - F.pow(k + 1, F.lit(e))) / (F.pow(n + 1, F.lit(e)) - 1)


def expected_clicks(
    users: DataFrame,
    truth_items: DataFrame,
    truth_users: DataFrame,
    items: DataFrame,
    cfg: GenerateConfig,
    day: dt.date,
    per_cluster: int,
) -> DataFrame:
    """`(user_id, item_id, score)`: u's expected clicks on i per impression of day D, the recall oracle.

    score(u, i) = P(segment c_i | u) · P(rank_i | n_{c_i}) · ctr(u, i) · live_i, live_i the share of D
    after the item's created_ts. Within a cluster the order of items depends on the user only through
    "is c preferred", so each cluster offers its `per_cluster` best items of either kind and the
    result has at most users × clusters × per_cluster rows (bounded by the sample, not the catalogue).

    Parameters
    ----------
    users : DataFrame
        `(user_id)` to score.
    truth_items, truth_users, items : DataFrame
        The truth tables and `items` (for `created_ts`).
    cfg : GenerateConfig
        The generating options.
    day : datetime.date
        The day D whose clicks are expected.
    per_cluster : int
        Items offered per cluster: the list length K plus the most items any user will have excluded,
        so that every user's exact top-K survives.

    Returns
    -------
    DataFrame
        `(user_id, item_id, score double)`, score > 0.
    """
    live, size = _live_share(day), _cluster_size(cfg, F.col("cluster"))
    offered = (
        truth_items.join(items.select("item_id", "created_ts"), "item_id")
        .select(
            "item_id",
            "cluster",
            "quality",
            (rank_probability(cfg, F.col("popularity_rank"), size) * live).alias("_shown"),
        )
        .filter(F.col("_shown") > 0)
    )
    kinds = []
    for preferred in (True, False):
        ctr = click_probability(cfg, F.col("quality"), F.lit(preferred))
        kinds.append(
            offered.select(
                "item_id", "cluster", F.lit(preferred).alias("preferred"), (F.col("_shown") * ctr).alias("_b")
            )
        )
    order = Window.partitionBy("cluster", "preferred").orderBy(F.col("_b").desc(), F.col("item_id"))
    best = (
        kinds[0]
        .unionByName(kinds[1])
        .withColumn("_r", F.row_number().over(order))
        .filter(F.col("_r") <= per_cluster)
    )
    tastes = truth_users.join(users.select("user_id"), "user_id").select("user_id", _tastes().alias("_t"))
    grid = tastes.crossJoin(F.broadcast(best.select("cluster").distinct()))
    segment = segment_probability(cfg, F.col("_t"), F.col("cluster"))
    in_tastes = F.exists(F.col("_t"), lambda t: t["c"] == F.col("cluster"))
    per_user = grid.select("user_id", "cluster", segment.alias("_seg"), in_tastes.alias("preferred"))
    return per_user.join(best, ["cluster", "preferred"]).select(
        "user_id", "item_id", (F.col("_seg") * F.col("_b")).cast("double").alias("score")
    )
