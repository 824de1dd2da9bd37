"""Training data: Spark encodes a sample table into a Parquet store; each rank reads its shard with Petastorm.

The store holds only the model's tensors (`train/features.py` contract): integer indices, fixed-width
`user_dense` (and, for the ranker, `pair_dense`), and `hist` padded with 0 to `hist_len` (Petastorm's batch reader stacks list columns,
so they must have one length). Rows are shuffled globally by a seeded hash before they are cut into
files, so every file is a random slice and row groups split across ranks carry equal work. The
two-tower's store under `--own-negatives` hashes the user instead of the row: a user's rows stay together, in files, in the
read buffer and so in batches, where its own hard negatives meet it in the loss.

Ranks shard by row group (`cur_shard=rank, shard_count=size`): each row is read by exactly one rank
per epoch. Within a rank a shuffle buffer of row groups mixes rows again every epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.samples.features import PAIR_DENSE
from recsys_spark.train.vocab import encode

RECALL_LABELS = ("label", "weight")
RANK_TASKS = ("click", "like", "share", "comment", "follow", "purchase")


def encode_history(df: DataFrame, item_vocab: DataFrame, hist_len: int) -> DataFrame:
    """Replace `hist` (item ids, most recent first) with item indices padded by 0 to `hist_len`.

    Each distinct history is encoded once and joined back on its own value: a generated row key
    (`monotonically_increasing_id`) would not survive Spark recomputing `df` in a different order.
    """
    histories = df.select(F.coalesce("hist", F.array().cast("array<string>")).alias("hist")).distinct()
    steps = histories.select("hist", F.posexplode(F.slice("hist", 1, hist_len)).alias("pos", "id"))
    encoded = (
        steps.join(item_vocab.select("id", "idx"), "id")  # unknown history items are dropped, not "unknown"
        .groupBy("hist")
        .agg(
            F.transform(F.array_sort(F.collect_list(F.struct("pos", "idx"))), lambda s: s["idx"]).alias("_h")
        )
    )
    keyed = df.withColumn("hist", F.coalesce("hist", F.array().cast("array<string>")))
    joined = keyed.join(encoded, "hist", "left")
    h = F.coalesce(F.col("_h"), F.array().cast("array<long>"))
    padded = F.concat(h, F.array_repeat(F.lit(0).cast("long"), F.lit(hist_len) - F.size(h)))
    return joined.withColumn("hist", padded).drop("_h")


def encode_samples(
    samples: DataFrame, vocabs: dict[str, DataFrame], kind: str, hist_len: int, keep: tuple[str, ...] = ()
) -> DataFrame:
    """The model's columns for each sample row (see the module docstring), plus a unique `row_id`.

    `keep` names raw columns carried along unchanged (evaluation keeps `user_id`, `item_dense`).
    """
    df = samples.select("*", *[F.col(c).alias(f"_keep_{c}") for c in keep])
    for field, column, out in (
        ("user", "user_id", "user_idx"),
        ("item", "item_id", "item_idx"),
        ("gender", "gender", "gender_idx"),
        ("age", "age_bucket", "age_idx"),
        ("region", "region", "region_idx"),
    ):
        df = encode(df, column, vocabs[field], out)
    df = encode_history(df, vocabs["item"], hist_len)
    pair: list = []
    if kind == "two_tower":
        labels = [F.col("label").cast("float").alias("label"), F.col("weight").cast("float").alias("weight")]
    else:
        labels = [F.col(f"label_{t}").cast("float").alias(f"label_{t}") for t in RANK_TASKS]
        pair = [pair_dense_column(df)]
    return df.select(
        F.xxhash64("user_idx", "item_idx", *(["sample_type"] if kind == "two_tower" else [])).alias("row_id"),
        "user_idx",
        "gender_idx",
        "age_idx",
        "region_idx",
        F.col("user_dense").cast("array<float>"),
        "hist",
        "item_idx",
        *pair,
        *labels,
        *[F.col(f"_keep_{c}").alias(c) for c in keep],
    )


def pair_dense_column(df: DataFrame):
    """`pair_dense` as array<float> of width `len(PAIR_DENSE)`: zeros where it is null, absent or short.

    A `rank_samples` partition written before the column existed reads it as null; its pairs are then
    treated like a user without a profile (all zeros). One written before inputs were appended to
    `PAIR_DENSE` gets zeros for them. Either way the store stays fixed-width.
    """
    zeros = F.array(*[F.lit(0.0).cast("float") for _ in PAIR_DENSE])
    if "pair_dense" not in df.columns:
        return zeros.alias("pair_dense")
    padded = F.slice(F.concat(F.col("pair_dense").cast("array<float>"), zeros), 1, len(PAIR_DENSE))
    return F.coalesce(padded, zeros).alias("pair_dense")


def write_store(encoded: DataFrame, url: str, files: int, seed: int, group_by: str | None = None) -> int:
    """Shuffle rows by a seeded hash, cut them into `files` Parquet files at `url`; returns the row count.

    With `group_by` (the two-tower's `user_idx`) the hash is of that column, so a group's rows are
    adjacent in one file: the rows of one user land in the same batches (`iterate_shard`), where the
    user's own negatives meet the user in the loss.
    """
    key = F.col(group_by) if group_by else F.col("row_id")
    shuffled = encoded.withColumn("_order", F.xxhash64(F.lit(seed), key))
    shuffled.repartition(files, "_order").sortWithinPartitions("_order", "row_id").drop("_order").write.mode(
        "overwrite"
    ).parquet(url)
    return encoded.sparkSession.read.parquet(url).count()


def item_table(items: DataFrame, vocabs: dict[str, DataFrame]) -> DataFrame:
    """`(item_idx, category_idx, author_idx, item_dense)` for every item of the item vocabulary."""
    df = encode(items, "item_id", vocabs["item"], "item_idx").filter(F.col("item_idx") > 0)
    df = encode(df, "category", vocabs["category"], "category_idx")
    df = encode(df, "author_id", vocabs["author"], "author_idx")
    return df.select("item_idx", "category_idx", "author_idx", F.col("item_dense").cast("array<float>"))


def item_frequencies(encoded: DataFrame) -> DataFrame:
    """`(item_idx, count)`: how often each item is a candidate in the training set (for logQ)."""
    return encoded.groupBy("item_idx").agg(F.count(F.lit(1)).alias("count"))


# -- rank side ----------------------------------------------------------------------------------------
def read_table(url: str, columns: list[str] | None = None):
    """A small Parquet folder (vocabulary- or catalogue-sized) as a PyArrow table."""
    import pyarrow.parquet as pq

    from recsys_spark.lake.commit import filesystem

    fs, path = filesystem(url)
    return pq.read_table(path, filesystem=fs, columns=columns)


def iterate_shard(
    url: str,
    rank: int,
    size: int,
    batch_size: int,
    epoch: int,
    seed: int,
    buffer_rows: int = 50_000,
    group_by: str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This rank's rows of one epoch as shuffled mini-batches (dicts of NumPy arrays).

    Row groups go round-robin to ranks (Petastorm's sharding), in a seeded random order per epoch;
    rows are shuffled within a buffer of about `buffer_rows`. With `group_by` the buffer shuffles
    groups (a random order of its distinct values, rows shuffled within each), so a group's rows
    stay adjacent and fill the same batch unless it straddles a batch or row-group boundary. The
    last batch may be short.
    """
    from petastorm import make_batch_reader

    rng = np.random.default_rng([seed, rank, epoch])
    pending: list[dict[str, np.ndarray]] = []
    held = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with make_batch_reader(
            url,
            cur_shard=rank,
            shard_count=size,
            num_epochs=1,
            shuffle_row_groups=True,
            seed=seed + epoch,
            workers_count=1,
        ) as reader:
            for group in reader:
                pending.append({k: np.asarray(v) for k, v in group._asdict().items()})
                held += len(pending[-1]["row_id"])
                if held >= buffer_rows:
                    yield from _drain(pending, batch_size, rng, keep_tail=True, group_by=group_by)
                    held = sum(len(p["row_id"]) for p in pending)
    yield from _drain(pending, batch_size, rng, keep_tail=False, group_by=group_by)


def _drain(
    pending: list[dict[str, np.ndarray]],
    batch_size: int,
    rng: np.random.Generator,
    keep_tail: bool,
    group_by: str | None = None,
):
    if not pending:
        return
    merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
    pending.clear()
    order = rng.permutation(len(merged["row_id"]))
    if group_by is not None:  # groups in random order, each group's rows together (shuffled inside)
        _, group = np.unique(merged[group_by], return_inverse=True)
        group_rank = rng.permutation(group.max() + 1)[group]
        order = order[np.argsort(group_rank[order], kind="stable")]
    full = len(order) // batch_size * batch_size if keep_tail else len(order)
    for start in range(0, full, batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in merged.items()}
    if keep_tail and full < len(order):
        pending.append({k: v[order[full:]] for k, v in merged.items()})
