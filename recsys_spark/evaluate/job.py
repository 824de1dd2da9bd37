"""`recsys-spark evaluate --date D`: every recall channel and the ranker, measured on held-out day D.

Everything evaluated was built *before* D: the similarity and embedding tables are read at their
newest Delta version committed for a date < D (time travel, so today's run may already have replaced
them), and the models are the newest full versions of a day < D. Day D's events are the truth:
a user's positives (interest weight > 0) for the recall channels, the shown pairs with their labels
for the ranker. Users are sampled (`--max-users`, by a seeded hash) so the driver only ever holds
the sampled users' top-K lists; item vectors are brought to the driver (catalogue-sized) for the
exact brute-force scoring that a serving ANN index would approximate.

Writes `_reports/evaluation/D.json` (the contract of DESIGN.md) and `D.html`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.candidates import lists as channels
from recsys_spark.catalog import WALK_METHODS
from recsys_spark.config import DatedConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.evaluate.metrics import auc, logloss, topk_metrics, uauc
from recsys_spark.samples.features import ITEM_DENSE, last_n_clicks
from recsys_spark.samples.recall import hash_uniform, positives

log = logging.getLogger(__name__)

CHANNELS = ("two_tower", "swing", "itemcf", "usercf", "deepwalk", "node2vec", "popularity")


@dataclass
class EvaluateConfig(DatedConfig):
    """Recall@K, NDCG@K, HitRate@K of each recall channel and AUC/uAUC/log-loss of the ranker on --date,
    using only what was built before it."""

    ks: list[int] = option([10, 50], "Cut-offs K of the top-K metrics.")
    max_users: int = option(2000, "Users evaluated at most (a seeded hash sample of those with positives).")
    max_rank_users: int = option(5000, "Users whose shown items score the ranker at most.")
    history_length: int = option(20, "Last-N clicks before --date that seed the item-to-item channels.")
    popularity_days: int = option(7, "Days before --date counted for the popularity channel.")
    channels: list[str] = option(list(CHANNELS), "Recall channels to evaluate (those with artefacts run).")
    seed: int = option(7, "Seed of the user sample.")


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


def _vector_channel(user_ids: list[str], user_matrix, item_ids, item_matrix, k: int) -> dict[str, list[str]]:
    frame = channels.vector_candidates(user_ids, user_matrix, item_ids, item_matrix, k)
    return channels.topk_lists(frame)


def embedding_lists(lake, method: str, day: dt.date, hist: DataFrame, k: int) -> dict[str, list[str]] | None:
    """Graph embeddings: a user is the mean of the vectors of their history items."""
    version = version_before(lake, "item_embeddings", day, method)
    if version is None:
        return None
    vectors = (
        lake.read("item_embeddings", version).filter(F.col("method") == method).select("item_id", "vector")
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
        return {}
    return _vector_channel(user_ids, np.stack(rows), list(items["item_id"]), matrix, k)


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


def two_tower_lists(spark, lake, day: dt.date, users: DataFrame, k: int) -> tuple[dict | None, str | None]:
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
        return {}, version
    with torch.no_grad():
        user_matrix = model.user_vectors(_batch(frame, USER_KEYS)).double().numpy()
    vectors = spark.read.parquet(f"{url}/item_vectors.parquet")
    vocab = spark.read.parquet(f"{url}/vocab/item").select(
        F.col("id").alias("item_id"), F.col("idx").alias("item_idx")
    )
    items = vectors.join(vocab, "item_idx").select("item_id", "vector").toPandas()
    item_matrix = np.stack(items["vector"].to_numpy()).astype(np.float64)
    user_ids = list(frame["user_id"])
    lists = _vector_channel(user_ids, user_matrix, list(items["item_id"]), item_matrix, k)
    return lists, version


def recall_results(spark, lake, cfg: EvaluateConfig, day: dt.date) -> tuple[dict, dict, int]:
    events = lake.read("events")
    truth_rows = positives(events.filter(F.col("dt") == F.lit(day)))
    users = sample_users(truth_rows, cfg.max_users, cfg.seed)
    truth: dict[str, set[str]] = {}
    for row in truth_rows.join(users, "user_id").select("user_id", "item_id").collect():
        truth.setdefault(row["user_id"], set()).add(row["item_id"])
    hist = last_n_clicks(events, day, cfg.history_length, 30).join(users, "user_id").cache()
    history = hist.select("user_id", F.explode("hist").alias("item_id"), F.lit(1.0).alias("weight"))
    k = max(cfg.ks)
    results, used = {}, {}

    def record(name: str, lists: dict | None, source: str | None) -> None:
        if lists is None:
            log.info("evaluate %s: channel %s skipped: nothing built before %s", day, name, day)
            return
        results[name] = topk_metrics(lists, truth, cfg.ks)
        used[name] = source

    for name in cfg.channels:
        if name in ("swing", "itemcf", "usercf"):
            table = f"{name}_sim"
            version = version_before(lake, table, day)
            if version is None:
                record(name, None, None)
                continue
            sim = lake.read(table, version)
            if name == "usercf":
                from recsys_spark.events import interest_weights

                inter = interest_weights(events, day - dt.timedelta(days=1), 30).select(
                    "user_id", "item_id", F.col("r").alias("weight")
                )
                cands = channels.user_to_user_candidates(
                    users.withColumn("item_id", F.lit(None)), sim, inter, k
                )
            else:
                cands = channels.item_to_item_candidates(history, sim, k)
            record(name, channels.topk_lists(cands), f"{table}@v{version}")
        elif name in WALK_METHODS:
            record(name, embedding_lists(lake, name, day, hist, k), f"item_embeddings[{name}]")
        elif name == "popularity":
            first = day - dt.timedelta(days=cfg.popularity_days)
            counts = (
                events.filter(
                    (F.col("dt") < F.lit(day)) & (F.col("dt") >= F.lit(first)) & (F.col("event") == "click")
                )
                .groupBy("item_id")
                .agg(F.count(F.lit(1)).alias("count"))
            )
            record(
                name,
                channels.topk_lists(channels.popularity_candidates(users, counts, k)),
                f"clicks {first}..{day - dt.timedelta(days=1)}",
            )
        elif name == "two_tower":
            lists, version = two_tower_lists(spark, lake, day, users, k)
            record(name, lists, f"two_tower {version}" if version else None)
    return results, used, len(truth)


def ranking_results(spark, lake, cfg: EvaluateConfig, day: dt.date) -> tuple[dict, dict, str | None, int]:
    """AUC/uAUC/log-loss per task of the newest ranker before D, and of the statistics-only baseline."""
    import torch

    from recsys_spark.lake.commit import read_bytes
    from recsys_spark.samples.job import SamplesConfig, build_samples
    from recsys_spark.train.checkpoint import load_checkpoint
    from recsys_spark.train.features import USER_KEYS
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
    frame = _encoded_rows(spark, rows, f"{url}/vocab", "ranker", model.sizes.hist_len, ("item_dense",))
    if frame.empty:
        return {}, {}, version, 0
    probs: dict[str, list] = {t: [] for t in model.tasks}
    with torch.no_grad():
        for start in range(0, len(frame), 4096):
            part = frame.iloc[start : start + 4096]
            out = model.predict(_batch(part, (*USER_KEYS, "item_idx")))
            for t in model.tasks:
                probs[t].append(out[t].double().numpy())
    dense = np.stack([np.zeros(len(ITEM_DENSE)) if d is None else d for d in frame["item_dense"]])
    ranking, baselines = {}, {}
    users_col = frame["user_idx"].to_numpy()
    for task in model.tasks:
        y, p = frame[f"label_{task}"].to_numpy(), np.concatenate(probs[task])
        ranking[task] = {"auc": auc(y, p), "uauc": uauc(users_col, y, p), "logloss": logloss(y, p)}
        b = baseline_scores(dense, task)
        baselines[task] = {"auc": auc(y, b), "uauc": uauc(users_col, y, b), "logloss": logloss(y, b)}
    return ranking, baselines, version, len(frame)


def baseline_scores(item_dense: np.ndarray, task: str) -> np.ndarray:
    """Statistics only: the item's smoothed 7-day CTR for clicks, times its 30-day rate for actions."""
    ctr = item_dense[:, ITEM_DENSE.index("ctr_7d")].astype(np.float64)
    if task == "click":
        return ctr
    column = {"like": "like_rate_30d", "share": "share_rate_30d"}.get(task)
    rate = item_dense[:, ITEM_DENSE.index(column)] if column else np.full(len(ctr), 0.01)
    return ctr * rate


def run(cfg: EvaluateConfig, spark, lake) -> int:
    from recsys_spark.evaluate.report import write_evaluation_report

    unknown = sorted(set(cfg.channels) - set(CHANNELS))
    if unknown or not cfg.ks or min(cfg.ks) < 1 or cfg.max_users < 1:
        raise UsageError(f"bad options: channels {unknown or 'ok'} (known {list(CHANNELS)}), --ks {cfg.ks}")
    day, started = cfg.date, time.time()
    recall, sources, n_users = recall_results(spark, lake, cfg, day)
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
    details = {
        "lake": lake.root,
        "seconds": round(time.time() - started, 1),
        "ks": cfg.ks,
        "max_users": cfg.max_users,
    }
    json_path, html_path = write_evaluation_report(lake, str(day), result, details)
    print(f"evaluate {day}: {n_users} users, {n_rank} ranking rows; report {html_path}")
    k = min(cfg.ks)
    for name, metrics in recall.items():
        print(
            f"  {name:<11} recall@{k} {metrics[f'recall@{k}']:.4f}  ndcg@{k} {metrics[f'ndcg@{k}']:.4f}  hitrate@{k} {metrics[f'hitrate@{k}']:.4f}"
        )
    for task, metrics in ranking.items():
        base = baselines.get(task, {})
        print(
            f"  ranker {task:<6} auc {metrics['auc']:.4f} (baseline {base.get('auc', float('nan')):.4f})  uauc {metrics['uauc']:.4f}  logloss {metrics['logloss']:.4f}"
        )
    if not recall and not ranking:
        print(f"  nothing to evaluate: no channel or model was built before {day}")
    return 0
