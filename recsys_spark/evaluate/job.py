"""`recsys-spark evaluate --date D`: every recall channel and the ranker, measured on held-out day D.

Everything evaluated was built *before* D: the similarity and embedding tables are read at their
newest Delta version committed for a date < D (time travel, so today's run may already have replaced
them), and the models are the newest full versions of a day < D. Day D's events are the truth:
a user's positives (interest weight > 0) for the recall channels, the shown pairs with their labels
for the ranker. Users are sampled (`--max-users`, by a seeded hash) so the driver only ever holds
the sampled users' top-K lists; item vectors are brought to the driver (catalogue-sized) for the
exact brute-force scoring that a serving ANN index would approximate.

The served lists are scored too: channel `final` is the `recommendations` of dt = D−1 (computed
from data up to D−1, served on D) and `ranked` the `ranked_candidates` of dt = D−1 (before rerank),
each cut to its top K by `rank`. Beside recall/NDCG/HitRate every channel gets the beyond-accuracy
metrics of `metrics.beyond_accuracy_metrics` (coverage, ILD, category ILD, novelty). With
`--exclude-seen` (default) every channel is also scored as it would serve: the items recall of D−1
withheld from each user (engaged with, r > 0, before D; and over-exposed by D−1 under
`--max-exposures` / `--exposure-days`, the rule of `candidates.exclusions`) are removed from its list
before the top-K cut, and from the truth; those numbers go to `recall_exclude_seen`, while `recall` keeps the lists as the channels rank them.

On a generated lake every number has its limit beside it (`evaluate.references`): channel `oracle`
lists each user's items by the generator's true expected clicks of D, and per ranking task
`oracle_auc` / `oracle_uauc` rank the shown pairs by their true label probability
(`generate.truth`). Channels `als` and `ease` are the classic baselines, trained on the same window.

`--variant-by LAYER` adds the A/B readout of the final lists per variant (`variants`). The online
side of the same day goes to `business`: the business metrics (`experiments.business`) of D, the day
the lists of D−1 were served, and of the 7 days before it, overall and per variant of that layer.

Writes `_reports/evaluation/D.json` (the contract of DESIGN.md) and `D.html`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.candidates import lists as channels
from recsys_spark.candidates.cohorts import cohort_candidates, cohort_click_counts, user_cohorts
from recsys_spark.candidates.cold_items import NewItemParams, with_new_item_vectors
from recsys_spark.candidates.exclusions import ExposureParams, over_exposed, seen_pairs
from recsys_spark.catalog import WALK_METHODS
from recsys_spark.config import DatedConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.evaluate.metrics import (
    ItemFacts,
    auc,
    beyond_accuracy_metrics,
    logloss,
    topk_metrics,
    uauc,
)
from recsys_spark.evaluate.references import REFERENCE_CHANNELS, BaselineParams, reference_lists
from recsys_spark.events import clicks_in_window, interest_weights
from recsys_spark.generate.truth import ORACLE_COLUMNS, generated_config, label_probabilities
from recsys_spark.samples.features import ITEM_DENSE, last_n_clicks
from recsys_spark.samples.recall import hash_uniform, positives

log = logging.getLogger(__name__)

CHANNELS = (
    "oracle",
    "two_tower",
    "swing",
    "itemcf",
    "usercf",
    "deepwalk",
    "node2vec",
    "profile",
    "cohort",
    "popularity",
    "als",
    "ease",
    "final",
    "ranked",
)
# The served-list channels: the table whose partition dt = D−1 holds the lists scored on D.
LIST_TABLES = {"final": "recommendations", "ranked": "ranked_candidates"}

# A channel's lists per user: as the channel ranks them, and with the user's seen items removed
# before the top-K cut (None without --exclude-seen).
Lists = dict[str, list[str]]
ChannelLists = tuple[Lists, Lists | None]


@dataclass
class EvaluateConfig(NewItemParams, ExposureParams, BaselineParams, DatedConfig):
    """Recall@K, NDCG@K, HitRate@K of each recall channel and AUC/uAUC/log-loss of the ranker on --date,
    using only what was built before it."""

    ks: list[int] = option([10, 50], "Cut-offs K of the top-K metrics.")
    max_users: int = option(2000, "Users evaluated at most (a seeded hash sample of those with positives).")
    max_rank_users: int = option(5000, "Users whose shown items score the ranker at most.")
    history_length: int = option(20, "Last-N clicks before --date that seed the item-to-item channels.")
    popularity_days: int = option(7, "Days before --date counted for the popularity channel.")
    channels: list[str] = option(list(CHANNELS), "Recall channels to evaluate (those with artefacts run).")
    seed: int = option(7, "Seed of the user sample.")
    exclude_seen: bool = option(
        True,
        "Also score every channel as served: items a user engaged with (r > 0) before --date, and items "
        "over-exposed by then (--max-exposures in --exposure-days, as recall drops them), are removed "
        "from its list (still K long) and from the truth; reported as recall_exclude_seen, headlined.",
    )
    variant_by: str | None = option(
        None,
        "A/B readout: the final lists' metrics per variant of this experiment layer, with 95% bootstrap "
        "intervals over users and the difference to the holdout (docs/evaluate.md).",
    )
    experiments: str | None = option(
        None, "With --variant-by and no ab_buckets table: the JSON spec (default: that of `buckets`)."
    )
    buckets: int = option(100, "With --variant-by and no ab_buckets table: buckets per layer.", minimum=1)
    bootstrap: int = option(1000, "Bootstrap resamples of each variant's users.", minimum=1)
    diversity_embedding: list[str] = option(
        ["node2vec", "deepwalk"],
        "item_embeddings methods whose vectors give ILD@K: the first with a version before --date.",
    )


def version_before(lake, table: str, day: dt.date, method: str | None = None) -> int | None:
    """Newest version of `table` written for a date before `day` (and for `method`, if given)."""
    if not lake.exists(table):
        return None
    for entry in lake.history(table):  # newest first
        date = entry.get("date") or entry.get("recsys.date")
        if date and date < day.isoformat() and (method is None or entry.get("method") == method):
            return entry["version"]
    return None


def sample_users(truth: DataFrame, limit: int, seed: int) -> DataFrame:
    users = truth.select("user_id").distinct().withColumn("_h", hash_uniform(seed, "user_id"))
    return users.orderBy("_h", "user_id").limit(limit).select("user_id").cache()


def _vector_channel(
    user_ids: list[str], user_matrix, item_ids, item_matrix, k: int, exclude: dict | None = None
) -> ChannelLists:
    frame = channels.vector_candidates(user_ids, user_matrix, item_ids, item_matrix, k)
    if exclude is None:
        return channels.topk_lists(frame), None
    unseen = channels.vector_candidates(user_ids, user_matrix, item_ids, item_matrix, k, exclude=exclude)
    return channels.topk_lists(frame), channels.topk_lists(unseen)


def embedding_lists(
    lake,
    method: str,
    day: dt.date,
    hist: DataFrame,
    k: int,
    exclude: dict | None = None,
    new_item_days: int | None = None,
) -> ChannelLists | None:
    """Graph embeddings: a user is the mean of the vectors of their history items. With `new_item_days`,
    the items new by D−1 without a vector get recall's day-0 neighbour average (candidates.cold_items)."""
    version = version_before(lake, "item_embeddings", day, method)
    if version is None:
        return None
    vectors = (
        lake.read("item_embeddings", version).filter(F.col("method") == method).select("item_id", "vector")
    )
    if new_item_days and lake.exists("items"):
        before = day - dt.timedelta(days=1)
        vectors = with_new_item_vectors(lake.read("items"), vectors, before, new_item_days).select(
            "item_id", "vector"
        )
    items = vectors.toPandas()
    index = {item: n for n, item in enumerate(items["item_id"])}
    matrix = np.stack(items["vector"].to_numpy()).astype(np.float64)
    # Cosine, as word2vec similarity is read: raw SGNS norms grow with frequency and would rank
    # every user's list by popularity instead of by closeness to their history.
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    user_ids, rows = [], []
    for row in hist.collect():  # the sampled users only
        known = [index[i] for i in row["hist"] if i in index]
        if known:
            user_ids.append(row["user_id"])
            rows.append(matrix[known].mean(axis=0))
    if not rows:
        return {}, None if exclude is None else {}
    return _vector_channel(user_ids, np.stack(rows), list(items["item_id"]), matrix, k, exclude)


def _encoded_rows(spark, rows: DataFrame, vocab_url: str, kind: str, hist_len: int, keep: tuple[str, ...]):
    """The sampled rows encoded with a model version's vocabularies, on the driver (bounded by the sample)."""
    from recsys_spark.train.data import encode_samples
    from recsys_spark.train.vocab import read_vocabs

    return encode_samples(rows, read_vocabs(spark, vocab_url), kind, hist_len, keep).toPandas()


def _batch(frame, keys) -> dict:
    import torch

    out = {}
    for key in keys:
        values = frame[key].to_numpy()
        if values.dtype == object:
            values = np.stack(values)
        out[key] = torch.from_numpy(np.ascontiguousarray(values))
    return out


def two_tower_lists(
    spark, lake, day: dt.date, users: DataFrame, k: int, exclude: dict | None = None
) -> tuple[ChannelLists | None, str | None]:
    """The two-tower's top-K: the user tower on D's features against the version's item vectors."""
    import torch

    from recsys_spark.lake.commit import read_bytes
    from recsys_spark.samples.job import SamplesConfig, build_samples
    from recsys_spark.train.checkpoint import load_checkpoint
    from recsys_spark.train.features import USER_KEYS
    from recsys_spark.train.registry import FULL, Registry

    registry = Registry.for_model(lake, "two_tower")
    version = registry.full_before(day)
    if version is None:
        return None, None
    url = registry.version_url(FULL, version)
    model = load_checkpoint(read_bytes(f"{url}/checkpoint.pt")).eval()
    # User features exactly as a sample of day D would carry them (statistics of D-1, clicks before D).
    recall, _ = build_samples(
        lake, day, SamplesConfig(date=day, hard_negative_channel="none", easy_negatives=0)
    )
    rows = recall.join(users, "user_id").dropDuplicates(["user_id"])
    frame = _encoded_rows(spark, rows, f"{url}/vocab", "two_tower", model.sizes.hist_len, ("user_id",))
    if frame.empty:
        return ({}, None if exclude is None else {}), version
    with torch.no_grad():
        user_matrix = model.user_vectors(_batch(frame, USER_KEYS)).double().numpy()
    vectors = spark.read.parquet(f"{url}/item_vectors.parquet")
    vocab = spark.read.parquet(f"{url}/vocab/item").select(
        F.col("id").alias("item_id"), F.col("idx").alias("item_idx")
    )
    items = vectors.join(vocab, "item_idx").select("item_id", "vector").toPandas()
    item_matrix = np.stack(items["vector"].to_numpy()).astype(np.float64)
    user_ids = list(frame["user_id"])
    lists = _vector_channel(user_ids, user_matrix, list(items["item_id"]), item_matrix, k, exclude)
    return lists, version


def profile_lists(lake, events: DataFrame, day: dt.date, users: DataFrame, k: int, seen_rows, spark_lists):
    """The profile channel as recall of D−1 builds it: `user_profiles` of D−1 (or computed), items by D−1."""
    from recsys_spark.profiles.interests import end_of_day_seconds
    from recsys_spark.profiles.stored import profiles_as_of

    before = day - dt.timedelta(days=1)
    end = F.timestamp_seconds(F.lit(end_of_day_seconds(before)))
    items = lake.read("items").filter(F.col("created_ts") < end)
    profiles, source = profiles_as_of(lake, before, events.filter(F.col("dt") <= F.lit(before)), items)
    profiles = profiles.join(users, "user_id", "left_semi").cache()
    if not profiles.limit(1).count():
        return None, None
    keys = channels.item_keys(items)
    found = spark_lists(lambda ex: channels.profile_candidates(profiles, keys, k, exclude=ex))
    return found, source


def table_lists(
    lake, name: str, day: dt.date, users: DataFrame, k: int, exclude: DataFrame | None = None
) -> tuple[ChannelLists | None, str | None]:
    """Channel `final` / `ranked`: the sampled users' lists in `LIST_TABLES[name]` of dt = D−1, top-K by rank.

    The lists of dt = D−1 were computed from data up to D−1 to be served on D. `exclude (user_id,
    item_id)` is removed before the top-K cut, so a longer table (`ranked_candidates`) refills the list.
    `(None, None)` when the table or its D−1 partition does not exist.
    """
    table, served = LIST_TABLES[name], day - dt.timedelta(days=1)
    if not lake.exists(table):
        return None, None
    frame = lake.read(table, dates=[served])
    if not frame.limit(1).count():
        return None, None
    rows = frame.join(users, "user_id", "left_semi").select("user_id", "item_id", "rank", "model_version")
    if exclude is not None:
        flags = exclude.select("user_id", "item_id").distinct().withColumn("_seen", F.lit(True))
        rows = rows.join(flags, ["user_id", "item_id"], "left")
    rows = rows.withColumn(
        "_seen", F.coalesce(F.col("_seen") if exclude is not None else F.lit(None), F.lit(False))
    )
    # One pass, one collect (at most 2 × users × k rows): the rank among all rows, and among the unseen.
    order = (F.col("rank").asc(), F.col("item_id").asc())
    picked = (
        rows.withColumn("_all", F.row_number().over(Window.partitionBy("user_id").orderBy(*order)))
        .withColumn("_new", F.row_number().over(Window.partitionBy("user_id", "_seen").orderBy(*order)))
        .filter((F.col("_all") <= k) | (~F.col("_seen") & (F.col("_new") <= k)))
        .collect()
    )
    plain: dict[str, list[tuple[int, str]]] = {}
    fresh: dict[str, list[tuple[int, str]]] = {}
    for r in picked:
        if r["_all"] <= k:
            plain.setdefault(r["user_id"], []).append((r["_all"], r["item_id"]))
        if not r["_seen"] and r["_new"] <= k:
            fresh.setdefault(r["user_id"], []).append((r["_new"], r["item_id"]))

    def ordered(by_user: dict[str, list[tuple[int, str]]]) -> Lists:
        return {user: [item for _, item in sorted(entries)] for user, entries in by_user.items()}

    versions = sorted({str(r["model_version"]) for r in picked if r["model_version"] is not None})
    source = f"{table} dt={served}" + (f" ({', '.join(versions)})" if versions else "")
    return (ordered(plain), None if exclude is None else ordered(fresh)), source


def item_facts(lake, cfg: EvaluateConfig, day: dt.date, events: DataFrame, listed: set[str]):
    """What the beyond-accuracy metrics need, for the listed items only (joined in Spark, then collected).

    Catalogue = the `items` table when it has rows, else the distinct items with any event before D.
    Popularity n_i = users with r_ui > 0 before D (all history), N = users with any r > 0 before D.
    Vectors: `item_embeddings` of the first `--diversity-embedding` method with a version before D.
    Returns `(ItemFacts, source of the vectors or None)`.
    """
    spark = events.sparkSession
    wanted = spark.createDataFrame([(i,) for i in sorted(listed)], "item_id string")
    catalogue, categories = 0, None
    if lake.exists("items"):
        items = lake.read("items")
        catalogue = items.select("item_id").distinct().count()
        if catalogue:
            categories = {
                r.item_id: r.category
                for r in items.select("item_id", "category").join(wanted, "item_id", "left_semi").collect()
            }
    if not catalogue:
        catalogue = events.filter(F.col("dt") < F.lit(day)).select("item_id").distinct().count()
    weights = interest_weights(events, day - dt.timedelta(days=1), 0)
    n_users = weights.select("user_id").distinct().count()
    item_users = {
        r.item_id: int(r.n)
        for r in weights.join(wanted, "item_id", "left_semi")
        .groupBy("item_id")
        .agg(F.countDistinct("user_id").alias("n"))
        .collect()
    }
    vectors, source = None, None
    for method in cfg.diversity_embedding:
        version = version_before(lake, "item_embeddings", day, method)
        if version is None:
            continue
        rows = (
            lake.read("item_embeddings", version)
            .filter(F.col("method") == method)
            .join(wanted, "item_id", "left_semi")
            .select("item_id", "vector")
            .collect()
        )
        vectors = {r.item_id: np.asarray(r.vector, dtype=np.float64) for r in rows}
        source = f"item_embeddings[{method}]@v{version}"
        break
    if vectors is None:
        log.info("evaluate %s: no item_embeddings of %s before it: no ild@K", day, cfg.diversity_embedding)
    return ItemFacts(catalogue, vectors, categories, item_users, n_users), source


@dataclass
class RecallResults:
    """The recall channels' results of one day.

    Parameters
    ----------
    recall : dict
        Per channel, metrics of the lists as ranked (seen items included).
    exclude_seen : dict or None
        Per channel, metrics with seen items removed from lists and truth (None without the option).
    sources : dict
        Per channel (and `diversity`), what was evaluated.
    users : int
        Users evaluated (with a positive on D).
    users_exclude_seen : int
        Users with a positive on D that they had not engaged with before.
    served : tuple of (dict, dict) or None
        The `final` lists and the truth of the headline view (exclude-seen when on), per user, for
        the A/B readout; None without final lists.
    """

    recall: dict
    exclude_seen: dict | None
    sources: dict
    users: int
    users_exclude_seen: int
    served: tuple[dict, dict] | None = None


def recall_results(spark, lake, cfg: EvaluateConfig, day: dt.date) -> RecallResults:
    events = lake.read("events")
    truth_rows = positives(events.filter(F.col("dt") == F.lit(day)))
    users = sample_users(truth_rows, cfg.max_users, cfg.seed)
    truth: dict[str, set[str]] = {}
    for row in truth_rows.join(users, "user_id").select("user_id", "item_id").collect():
        truth.setdefault(row["user_id"], set()).add(row["item_id"])
    hist = last_n_clicks(events, day, cfg.history_length, 30).join(users, "user_id").cache()
    history = hist.select("user_id", F.explode("hist").alias("item_id"), F.lit(1.0).alias("weight"))
    k = max(cfg.ks)
    seen_rows, seen = None, None
    if cfg.exclude_seen:  # what recall of D−1 withheld from the sampled users: seen and over-exposed
        before = day - dt.timedelta(days=1)
        seen_rows = seen_pairs(events, before, users)
        if cfg.max_exposures > 0:
            exposed = over_exposed(events, before, cfg.exposure_days, cfg.max_exposures, users)
            seen_rows = seen_rows.unionByName(exposed.select("user_id", "item_id")).distinct()
        seen_rows = seen_rows.cache()
        seen = {}
        for row in seen_rows.collect():
            seen.setdefault(row["user_id"], set()).add(row["item_id"])
    lists: dict[str, ChannelLists] = {}
    used: dict[str, str | None] = {}

    def record(name: str, found: ChannelLists | None, source: str | None) -> None:
        if found is None:
            log.info("evaluate %s: channel %s skipped: nothing built before %s", day, name, day)
            return
        lists[name] = found
        used[name] = source

    def spark_lists(build) -> ChannelLists:
        """A Spark channel's lists, and again with the seen pairs excluded before the cut."""
        plain = channels.topk_lists(build(None))
        return plain, None if seen_rows is None else channels.topk_lists(build(seen_rows))

    for name in cfg.channels:
        if name in ("swing", "itemcf", "usercf"):
            table = f"{name}_sim"
            version = version_before(lake, table, day)
            if version is None:
                record(name, None, None)
                continue
            sim = lake.read(table, version)
            if name == "usercf":
                inter = interest_weights(events, day - dt.timedelta(days=1), 30).select(
                    "user_id", "item_id", F.col("r").alias("weight")
                )
                found = spark_lists(
                    lambda ex, sim=sim, inter=inter: channels.user_to_user_candidates(
                        users.withColumn("item_id", F.lit(None)), sim, inter, k, exclude=ex
                    )
                )
            else:
                found = spark_lists(
                    lambda ex, sim=sim: channels.item_to_item_candidates(history, sim, k, exclude=ex)
                )
            record(name, found, f"{table}@v{version}")
        elif name in WALK_METHODS:
            found = embedding_lists(lake, name, day, hist, k, seen, cfg.new_item_days)
            record(name, found, f"item_embeddings[{name}]")
        elif name == "popularity":
            first, before = day - dt.timedelta(days=cfg.popularity_days), day - dt.timedelta(days=1)
            counts = (
                clicks_in_window(events, before, cfg.popularity_days)
                .groupBy("item_id")
                .agg(F.count(F.lit(1)).alias("count"))
            )
            found = spark_lists(
                lambda ex, counts=counts: channels.popularity_candidates(users, counts, k, exclude=ex)
            )
            record(name, found, f"clicks {first}..{before}")
        elif name == "cohort":
            if not lake.exists("users"):
                record(name, None, None)
                continue
            cohorts = user_cohorts(lake.read("users"))
            before = day - dt.timedelta(days=1)
            counts = cohort_click_counts(events, cohorts, before, cfg.popularity_days)
            sampled = users.join(cohorts, "user_id")
            found = spark_lists(
                lambda ex, counts=counts, sampled=sampled: cohort_candidates(sampled, counts, k, exclude=ex)
            )
            first = before - dt.timedelta(days=cfg.popularity_days - 1)
            record(name, found, f"clicks by region|age_bucket {first}..{before}")
        elif name == "profile":
            found, source = profile_lists(lake, events, day, users, k, seen_rows, spark_lists)
            record(name, found, source)
        elif name == "two_tower":
            found, version = two_tower_lists(spark, lake, day, users, k, seen)
            record(name, found, f"two_tower {version}" if version else None)
        elif name in REFERENCE_CHANNELS:
            found, source = reference_lists(name, lake, events, day, users, k, cfg, seen, spark_lists)
            record(name, found, source)
        elif name in LIST_TABLES:
            found, source = table_lists(lake, name, day, users, k, seen_rows)
            if found is None:
                log.info(
                    "evaluate %s: channel %s skipped: no %s partition dt=%s",
                    day,
                    name,
                    LIST_TABLES[name],
                    day - dt.timedelta(days=1),
                )
            record(name, found, source)

    results: dict[str, dict] = {}
    unseen_results: dict[str, dict] | None = None if seen is None else {}
    unseen_truth = {} if seen is None else {u: t - seen.get(u, set()) for u, t in truth.items()}
    if lists:
        listed = {i for pair in lists.values() for part in pair if part for ls in part.values() for i in ls}
        facts, vector_source = item_facts(lake, cfg, day, events, listed)
        if vector_source:
            used["diversity"] = vector_source
        evaluated = [u for u, t in truth.items() if t]
        evaluated_unseen = [u for u, t in unseen_truth.items() if t]
        for name, (plain, unseen) in lists.items():
            results[name] = {
                **topk_metrics(plain, truth, cfg.ks),
                **beyond_accuracy_metrics(plain, evaluated, cfg.ks, facts),
            }
            if unseen_results is not None:
                unseen_results[name] = {
                    **topk_metrics(unseen, unseen_truth, cfg.ks),
                    **beyond_accuracy_metrics(unseen, evaluated_unseen, cfg.ks, facts),
                }
    if seen_rows is not None:
        seen_rows.unpersist()
    hist.unpersist()
    served = None
    if "final" in lists:
        plain, unseen = lists["final"]
        served = (plain, truth) if unseen is None else (unseen, unseen_truth)
    return RecallResults(
        results, unseen_results, used, len(truth), sum(1 for t in unseen_truth.values() if t), served
    )


def ranking_results(spark, lake, cfg: EvaluateConfig, day: dt.date) -> tuple[dict, dict, str | None, int]:
    """AUC/uAUC/log-loss per task of the newest ranker before D, and of the statistics-only baseline."""
    import torch

    from recsys_spark.lake.commit import read_bytes
    from recsys_spark.samples.job import SamplesConfig, build_samples
    from recsys_spark.train.checkpoint import load_checkpoint
    from recsys_spark.train.features import PAIR_KEY, USER_KEYS
    from recsys_spark.train.registry import FULL, Registry

    registry = Registry.for_model(lake, "ranker")
    version = registry.full_before(day)
    if version is None:
        return {}, {}, None, 0
    url = registry.version_url(FULL, version)
    model = load_checkpoint(read_bytes(f"{url}/checkpoint.pt")).eval()
    _, rank = build_samples(lake, day, SamplesConfig(date=day, hard_negative_channel="none"))
    users = sample_users(rank, cfg.max_rank_users, cfg.seed)
    rows = rank.join(users, "user_id")
    keep: tuple[str, ...] = ("item_dense",)
    generated = generated_config(lake)
    if generated is not None:  # the limit: the shown pairs ranked by their true label probability
        truth = (lake.read("truth_items"), lake.read("truth_users"))
        rows = label_probabilities(rows, *truth, generated, model.tasks, lake.read("items"), day)
        keep += tuple(f"{kind}_{t}" for t in model.tasks for kind in ORACLE_COLUMNS)
    frame = _encoded_rows(spark, rows, f"{url}/vocab", "ranker", model.sizes.hist_len, keep)
    if frame.empty:
        return {}, {}, version, 0
    probs: dict[str, list] = {t: [] for t in model.tasks}
    # The samples carry pair_dense; a ranker saved before it existed (width 0) is scored without it.
    keys = (*USER_KEYS, "item_idx", *((PAIR_KEY,) if model.sizes.pair_dense_dim else ()))
    with torch.no_grad():
        for start in range(0, len(frame), 4096):
            part = frame.iloc[start : start + 4096]
            out = model.predict(_batch(part, keys))
            for t in model.tasks:
                probs[t].append(out[t].double().numpy())
    dense = np.stack([np.zeros(len(ITEM_DENSE)) if d is None else d for d in frame["item_dense"]])
    ranking, baselines = {}, {}
    users_col = frame["user_idx"].to_numpy()
    keep = float(model.hyper.get("negative_keep", 1.0))
    for task in model.tasks:
        y, p = frame[f"label_{task}"].to_numpy(), np.concatenate(probs[task])
        ranking[task] = {"auc": auc(y, p), "uauc": uauc(users_col, y, p), "logloss": logloss(y, p)}
        if keep < 1:  # trained on a share r of the negatives: the log-loss of q, before p = q/(q+(1-q)/r)
            q = p / (p + (1 - p) * keep)
            ranking[task]["logloss_uncalibrated"] = logloss(y, q)
        for kind in ORACLE_COLUMNS:
            if f"{kind}_{task}" in frame:
                truth = frame[f"{kind}_{task}"].to_numpy(float)
                ranking[task].update(oracle_ranking(users_col, y, truth, f"{kind}_"))
        b = baseline_scores(dense, task)
        baselines[task] = {"auc": auc(y, b), "uauc": uauc(users_col, y, b), "logloss": logloss(y, b)}
    return ranking, baselines, version, len(frame)


def oracle_ranking(users: np.ndarray, y: np.ndarray, truth: np.ndarray, prefix: str = "oracle_") -> dict:
    """`<prefix>auc`, `<prefix>uauc`: AUC/uAUC of true probabilities (rows without truth left out)."""
    known = ~np.isnan(truth)
    if not known.any():
        return {}
    return {
        f"{prefix}auc": auc(y[known], truth[known]),
        f"{prefix}uauc": uauc(users[known], y[known], truth[known]),
    }


def baseline_scores(item_dense: np.ndarray, task: str) -> np.ndarray:
    """Statistics only: the item's smoothed 7-day CTR for clicks, times its 30-day rate for actions."""
    ctr = item_dense[:, ITEM_DENSE.index("ctr_7d")].astype(np.float64)
    if task == "click":
        return ctr
    column = {"like": "like_rate_30d", "share": "share_rate_30d"}.get(task)
    rate = item_dense[:, ITEM_DENSE.index(column)] if column else np.full(len(ctr), 0.01)
    return ctr * rate


def _headline_cells(metrics: dict, k: int) -> list[str]:
    """`name@K value` for the printed table: accuracy, then diversity and novelty (NaN as `—`)."""
    cells = []
    for name in ("recall", "ndcg", "hitrate", "coverage", "ild", "category_ild", "novelty"):
        value = metrics.get(f"{name}@{k}")
        if value is not None or name in ("recall", "ndcg", "hitrate"):
            shown = "—" if value is None or value != value else f"{value:.4f}"
            cells.append(f"{name}@{k} {shown}")
    return cells


def run(cfg: EvaluateConfig, spark, lake) -> int:
    from recsys_spark.evaluate.report import write_evaluation_report

    unknown = sorted(set(cfg.channels) - set(CHANNELS))
    bad_methods = sorted(set(cfg.diversity_embedding) - set(WALK_METHODS))
    if bad_methods:
        raise UsageError(f"--diversity-embedding {bad_methods}: known {list(WALK_METHODS)}")
    if unknown or not cfg.ks or min(cfg.ks) < 1 or cfg.max_users < 1:
        raise UsageError(f"bad options: channels {unknown or 'ok'} (known {list(CHANNELS)}), --ks {cfg.ks}")
    day, started = cfg.date, time.time()
    found = recall_results(spark, lake, cfg, day)
    recall, sources, n_users = found.recall, found.sources, found.users
    ranking, baselines, ranker_version, n_rank = ranking_results(spark, lake, cfg, day)
    result = {
        "date": str(day),
        "recall": recall,
        "ranking": ranking,
        "baselines": baselines,
        "users_evaluated": n_users,
        "ranking_rows": n_rank,
        "sources": {**sources, **({"ranker": ranker_version} if ranker_version else {})},
    }
    if found.exclude_seen is not None:
        result["recall_exclude_seen"] = found.exclude_seen
        result["users_evaluated_exclude_seen"] = found.users_exclude_seen
    if cfg.variant_by:
        result["variants"] = variant_results(spark, lake, cfg, found)
    result["business"] = business_results(lake, cfg)
    curves = training_curves(lake, day)
    if curves:
        result["training"] = curves
    details = {
        "lake": lake.root,
        "seconds": round(time.time() - started, 1),
        "ks": cfg.ks,
        "max_users": cfg.max_users,
        "exclude_seen": cfg.exclude_seen,
    }
    json_path, html_path = write_evaluation_report(lake, str(day), result, details)
    print(f"evaluate {day}: {n_users} users, {n_rank} ranking rows; report {html_path}")
    k = min(cfg.ks)
    headline = recall if found.exclude_seen is None else found.exclude_seen
    if recall:
        print(
            "  recall channels, "
            + (
                "seen items excluded (--exclude-seen)"
                if found.exclude_seen is not None
                else "seen items kept"
            )
        )
    for name, metrics in headline.items():
        print(f"  {name:<11} " + "  ".join(_headline_cells(metrics, k)))
    for task, metrics in ranking.items():
        base = baselines.get(task, {})
        print(
            f"  ranker {task:<6} auc {metrics['auc']:.4f} (baseline {base.get('auc', float('nan')):.4f})  uauc {metrics['uauc']:.4f}  logloss {metrics['logloss']:.4f}"
            + (
                f"  oracle auc {metrics['oracle_auc']:.4f} uauc {metrics['oracle_uauc']:.4f}"
                if "oracle_auc" in metrics
                else ""
            )
            + (
                f"  serving oracle auc {metrics['oracle_serving_auc']:.4f}"
                if "oracle_serving_auc" in metrics
                else ""
            )
        )
    if not recall and not ranking:
        print(f"  nothing to evaluate: no channel or model was built before {day}")
    if result.get("variants"):
        ab = result["variants"]
        print(f"  A/B layer {ab['layer']} (final lists; 95% bootstrap intervals, vs {ab['reference']})")
        for variant, entry in ab["by_variant"].items():
            m = entry["metrics"][f"ndcg@{k}"]
            vs = entry.get(f"vs_{ab['reference']}", {}).get(f"ndcg@{k}")
            versus = (
                f"; diff {vs['diff']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}]"
                f"{' significant' if vs['significant'] else ' not significant'}"
                if vs
                else ""
            )
            print(
                f"  {variant:<11} users {entry['users']:>5}  ndcg@{k} {m['mean']:.4f} "
                f"[{m['low']:.4f}, {m['high']:.4f}]{versus}"
            )
    for row in (result["business"] or {}).get("rows", []):
        print(
            f"  business {row['layer']}/{row['variant']}: active users {row['active_users']}, "
            f"clicks/user {_shown(row['clicks_per_user'])}, coverage {_shown(row['coverage'])}"
        )
    return 0


def training_curves(lake, day: dt.date) -> dict:
    """`{model: {"version", "epochs": [{epoch, rows, mean_loss, rows_per_second}]}}` of the versions
    evaluated on D (the newest full version before D), from their manifests; models without a curve
    (trained before it was recorded) are left out."""
    from recsys_spark.catalog import MODELS
    from recsys_spark.train.registry import FULL, Registry

    curves = {}
    for model in MODELS:
        registry = Registry.for_model(lake, model)
        version = registry.full_before(day)
        epochs = registry.manifest(FULL, version).get("epochs") if version else None
        if epochs:
            curves[model] = {"version": version, "epochs": epochs}
    return curves


def _shown(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def variant_results(spark, lake, cfg: EvaluateConfig, found: RecallResults) -> dict | None:
    """The A/B readout of the final lists by the variants of layer `--variant-by` (`evaluate.variants`)."""
    from recsys_spark.evaluate.variants import variant_readout
    from recsys_spark.experiments.buckets import HOLDOUT, recorded_spec, variant_of

    if found.served is None:
        log.warning("evaluate %s: --variant-by: no final lists of the day before: no A/B readout", cfg.date)
        return None
    spec, source = recorded_spec(lake, cfg.experiments, cfg.buckets)
    layer = spec.layer(cfg.variant_by)
    lists, truth = found.served
    users = spark.createDataFrame([(u,) for u in truth], "user_id string")  # the evaluated users
    rows = variant_of(users, spec).filter(F.col("layer") == layer.name).collect()
    variant = {r.user_id: r.variant for r in rows}
    reference = HOLDOUT if layer.holdout else layer.default
    by_variant = variant_readout(lists, truth, variant, reference, cfg.ks, cfg.bootstrap, cfg.seed)
    return {"layer": layer.name, "spec": source, "reference": reference, "by_variant": by_variant}


def business_results(lake, cfg: EvaluateConfig) -> dict | None:
    """The business metrics of D (and of the `HORIZON_DAYS` days before it) from the events, not the table.

    Day D is the day the lists of D−1 were served. The rows are `experiments.business.business_metrics`
    of the days D−7..D that have events, in one call over the events of D−7..D+7: group `all` and, with
    `--variant-by LAYER`, every variant of that layer under the assignment in force on D (the
    `ab_buckets` version dated on or before D, as the business-metrics job reads it; without the table,
    `variant_of` under the spec `--variant-by` reads out). The earlier days' retention and LT7 are those
    their week in the lake allows; D's own need D+1.. and are null on the daily run.

    Parameters
    ----------
    lake : Lake
        The lake (`events`, `items`, optionally `ab_buckets`).
    cfg : EvaluateConfig
        `date` and `variant_by` (with `experiments` / `buckets` for the spec fallback).

    Returns
    -------
    dict or None
        `{"date": D, "layer": LAYER or None, "assignment": where the variants came from or None,
        "rows": [the rows of D], "earlier": [the rows of D−7..D−1]}`, each row a dict of
        `business.METRIC_COLUMNS` (`dt` as YYYY-MM-DD), ordered by day, `all` first, then the
        variants by name; None without an `items` table (coverage needs the catalogue).

    References
    ----------
    R. Kohavi et al. "Controlled experiments on the web: survey and practical guide." Data Mining and
    Knowledge Discovery 18(1), 2009.
    """
    from recsys_spark.catalog import AB_BUCKETS
    from recsys_spark.experiments.buckets import ALL, UNASSIGNED, recorded_spec, variant_of
    from recsys_spark.experiments.business import HORIZON_DAYS, METRIC_COLUMNS, business_metrics

    day = cfg.date
    if not lake.exists("items"):
        log.warning("evaluate %s: no items table: no business metrics", day)
        return None
    first = day - dt.timedelta(days=HORIZON_DAYS)
    span = [first + dt.timedelta(days=n) for n in range(2 * HORIZON_DAYS + 1)]
    events = lake.read("events", dates=span)
    present = sorted(r[0] for r in events.select("dt").distinct().collect())  # at most 15 rows
    days = [d for d in present if d <= day]
    layer, assignment, buckets = None, None, None
    if cfg.variant_by:
        spec, source = recorded_spec(lake, cfg.experiments, cfg.buckets)
        layer = spec.layer(cfg.variant_by).name
        if lake.exists(AB_BUCKETS):
            buckets = lake.read_as_of(AB_BUCKETS, day + dt.timedelta(days=1))
            assignment = f"{AB_BUCKETS} as of {day}"
            if buckets is None:
                log.warning("no %s version dated on or before %s: using the latest", AB_BUCKETS, day)
                buckets, assignment = lake.read(AB_BUCKETS), f"{AB_BUCKETS} (latest; none dated by {day})"
        else:
            buckets = variant_of(events.filter(F.col("dt") <= F.lit(day)), spec)
            assignment = f"buckets of {source}"
        buckets = buckets.filter(F.col("layer") == F.lit(layer))
    out = {"date": str(day), "layer": layer, "assignment": assignment, "rows": [], "earlier": []}
    if not days:
        return out
    table = business_metrics(events, lake.read("items"), days, present, buckets)
    rows = [r.asDict() for r in table.collect()]  # one per (day, group): days x variants of one layer

    def order(row: dict):
        return (row["dt"], row["layer"] != ALL, row["layer"], row["variant"] == UNASSIGNED, row["variant"])

    for row in sorted(rows, key=order):
        entry = {name: row[name] for name in METRIC_COLUMNS}
        entry["dt"] = str(row["dt"])
        out["rows" if row["dt"] == day else "earlier"].append(entry)
    return out
