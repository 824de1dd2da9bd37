"""`recsys-spark embed`: item embeddings from random walks (skip-gram with negative sampling).

Spark builds the vocabulary (items of the walks with `count >= min_count`, indexed by count, then
item id) and the integer-encoded walks, materialised as Parquet that the PyTorch ranks read through
Petastorm (`graph/sgns.py`), launched by the shared runner (`distributed.py`: Horovod by default).
`--trainer mllib` trains Spark MLlib's Word2Vec on the same walks instead, as a baseline; its vectors
are stored under method `mllib-<walks method>`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys_spark.catalog import LAUNCHERS
from recsys_spark.config import GatedConfig, option, params_of
from recsys_spark.errors import UsageError
from recsys_spark.graph.sgns import SgnsParams, train_sgns

log = logging.getLogger(__name__)


@dataclass
class EmbedConfig(SgnsParams, GatedConfig):
    """Skip-gram item vectors from the walks of one method; replaces that method's item_embeddings."""

    method: str | None = option(
        None, "Walks to train on: deepwalk or node2vec (default: the latest walks written)."
    )
    trainer: str = option(
        "sgns",
        "sgns (PyTorch, data-parallel) or mllib (Spark MLlib Word2Vec baseline).",
        choices=["sgns", "mllib"],
    )
    min_count: int = option(1, "Items seen fewer times in the walks get no vector.")
    np: int = option(1, "Training processes (data-parallel ranks).", minimum=1)
    launcher: str = option(
        "horovod",
        "horovod (Gloo), torch (TorchDistributor), or local (one process, no launcher).",
        choices=list(LAUNCHERS),
    )


def build_vocab(walks: DataFrame, min_count: int = 1) -> DataFrame:
    """`(idx, item_id, count)`: items of the walks, most frequent first (ties by item id).

    Parameters
    ----------
    walks : DataFrame
        `(walk_id, items: array<string>)`.
    min_count : int
        Items seen fewer times get no index.

    Returns
    -------
    DataFrame
        `(item_id, count: long, idx: int)`, idx 0 = most frequent.
    """
    counts = (
        walks.select(F.explode("items").alias("item_id"))
        .groupBy("item_id")
        .agg(F.count(F.lit(1)).alias("count"))
    )
    ranked = Window.orderBy(F.desc("count"), "item_id")  # vocabulary-sized, not walk-sized
    return counts.filter(F.col("count") >= min_count).withColumn("idx", F.row_number().over(ranked) - 1)


def encode_walks(walks: DataFrame, vocab: DataFrame) -> DataFrame:
    """`(walk_id, tokens array<int>)`: each walk as vocabulary indices, out-of-vocabulary items dropped.

    Parameters
    ----------
    walks : DataFrame
        `(walk_id, items: array<string>)`.
    vocab : DataFrame
        From `build_vocab`.

    Returns
    -------
    DataFrame
        `(walk_id, tokens: array<int>)`, in walk order.
    """
    steps = walks.select("walk_id", F.posexplode("items").alias("pos", "item_id"))
    joined = steps.join(vocab.select("item_id", F.col("idx").cast("int")), "item_id")
    return joined.groupBy("walk_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("pos", "idx"))), lambda s: s["idx"]).alias("tokens")
    )


def mllib_word2vec(walks: DataFrame, cfg: EmbedConfig) -> DataFrame:
    from pyspark.ml.feature import Word2Vec
    from pyspark.ml.functions import vector_to_array

    model = Word2Vec(
        vectorSize=cfg.dim,
        windowSize=cfg.window,
        minCount=cfg.min_count,
        maxIter=cfg.epochs,
        stepSize=cfg.learning_rate,
        seed=cfg.seed,
        inputCol="items",
    ).fit(walks)
    return model.getVectors().select(
        F.col("word").alias("item_id"), vector_to_array("vector", dtype="float32").alias("vector")
    )


def latest_walks_method(lake) -> str:
    for entry in lake.history("walks"):
        if entry.get("method"):
            return entry["method"]
    methods = [r.method for r in lake.read("walks").select("method").distinct().collect()]
    if len(methods) != 1:
        raise UsageError(f"walks holds methods {sorted(methods)}: choose one with --method")
    return methods[0]


def sgns_embeddings(spark, walks: DataFrame, cfg: EmbedConfig, scratch: str) -> tuple[DataFrame, list[dict]]:
    """Train SGNS on `walks` and return `(item_id, vector)` plus each rank's metrics.

    Parameters
    ----------
    spark : SparkSession
        The session (launches the ranks).
    walks : DataFrame
        `(walk_id, items: array<string>)`.
    cfg : EmbedConfig
        SGNS hyper-parameters, `np` ranks and the launcher.
    scratch : str
        Folder (URI) for the vocabulary, encoded walks and vectors.

    Returns
    -------
    tuple of (DataFrame, list of dict)
        `(item_id, vector: array<float>)` and each rank's metrics.
    """
    from recsys_spark.distributed import launch

    vocab = build_vocab(walks, cfg.min_count).cache()
    vocab_url, walks_url, out_url = f"{scratch}/vocab", f"{scratch}/walks", f"{scratch}/vectors"
    vocab.coalesce(1).write.parquet(vocab_url)
    # Petastorm's batch reader stacks list columns, so walks cut short at dead ends are padded with -1
    # to one length (the ranks strip it). Enough files that every rank gets row groups of its own.
    encoded = encode_walks(walks, vocab)
    longest = encoded.agg(F.max(F.size("tokens"))).first()[0] or 1
    padded = encoded.select(
        "walk_id",
        F.concat("tokens", F.array_repeat(F.lit(-1), F.lit(longest) - F.size("tokens"))).alias("tokens"),
    )
    padded.repartition(max(4 * cfg.np, 8)).write.parquet(walks_url)
    params = dataclasses.asdict(params_of(cfg, SgnsParams))
    results = launch(
        train_sgns,
        {"walks_url": walks_url, "vocab_url": vocab_url, "out_url": out_url, "params": params},
        num_proc=cfg.np,
        launcher=cfg.launcher,
    )
    vectors = spark.read.parquet(out_url)
    return vectors, results


def run(cfg: EmbedConfig, spark, lake) -> int:
    started = time.time()
    method = cfg.method or latest_walks_method(lake)
    walks = lake.read("walks").filter(F.col("method") == method).select("walk_id", "items")
    scratch = lake.scratch_dir()
    try:
        if cfg.trainer == "mllib":
            vectors, results, stored = mllib_word2vec(walks, cfg), [], f"mllib-{method}"
        else:
            vectors, results = sgns_embeddings(spark, walks, cfg, scratch)
            stored = method
        version = lake.overwrite_partitions(
            "item_embeddings",
            vectors.withColumn("method", F.lit(stored)),
            "method",
            [stored],
            metadata={"date": str(cfg.date), "job": "embed", "method": stored, "trainer": cfg.trainer},
        )
    finally:
        from recsys_spark.lake.commit import remove_dir

        remove_dir(scratch)
    seconds = time.time() - started
    count = lake.read("item_embeddings").filter(F.col("method") == stored).count()
    print(f"item_embeddings {stored}: {count:,} vectors of dim {cfg.dim} (version {version}, {seconds:.1f}s)")
    if lake.exists("truth_items"):  # synthetic data: measure how well the planted clusters are recovered
        from recsys_spark.graph.quality import embedding_report, write_report

        vectors_now = lake.read("item_embeddings").filter(F.col("method") == stored)
        report = embedding_report(vectors_now, lake.read("truth_items"), stored)
        path = write_report(lake, str(cfg.date), report)
        print(
            f"  precision@10 against planted clusters: {report['precision@10']:.3f} "
            f"(random {report['random_precision@10']:.3f}; {report['items']} items; report {path})"
        )
    for r in results:
        print(
            f"  rank {r['rank']}/{r['size']} ({r['backend']}): {r['walks']:,} walks, {r['raw_tokens']:,} tokens, "
            f"{r['pairs']:,} pairs in {r['seconds']:.1f}s, mean loss {r['mean_loss']:.4f}"
        )
    return 0
