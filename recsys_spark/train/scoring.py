"""Batch scoring with a ranker checkpoint on the executors: `mapInPandas`, bounded batches, no collect.

The driver loads the version's checkpoint once, refreshes its per-item buffers (category, author,
dense statistics) to the serving day's item features, and broadcasts the re-saved checkpoint bytes;
each task rebuilds the model from those bytes once and scores its partition's Arrow batches (at most
`spark.sql.execution.arrow.maxRecordsPerBatch` rows each) in slices of `batch_size` rows. A task
holds one model and one slice of tensors at a time, so executor memory is bounded by the model size
plus `batch_size` rows whatever the number of candidates.

Rows are encoded with the version's own vocabularies (`train/data.encode_samples`), exactly as the
training store was, so a served pair gets the tensors a training sample of the same features gets.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.train.data import RANK_TASKS, encode_samples
from recsys_spark.train.features import PAIR_KEY, USER_KEYS

SCORE_PREFIX = "p_"  # column of task t's probability in the output of `score_rows`


def encode_for_scoring(rows: DataFrame, vocabs: dict[str, DataFrame], hist_len: int) -> DataFrame:
    """The model's tensors of unlabelled (user, item) rows, keeping `user_id` and `item_id`.

    Parameters
    ----------
    rows : DataFrame
        `(user_id, item_id, gender, age_bucket, region, user_dense, hist, pair_dense)` (e.g.
        candidates joined with `samples.job.day_features` and `samples.job.pair_features`).
    vocabs : dict of str to DataFrame
        The model version's vocabularies (`train.vocab.read_vocabs`).
    hist_len : int
        The model's history length (`model.sizes.hist_len`).

    Returns
    -------
    DataFrame
        `encode_samples` columns (labels all 0: candidates have none) plus `user_id`, `item_id`.
    """
    unlabelled = rows.select("*", *[F.lit(0).alias(f"label_{t}") for t in RANK_TASKS])
    return encode_samples(unlabelled, vocabs, "ranker", hist_len, keep=("user_id", "item_id"))


def with_item_features(checkpoint: bytes, items_url: str) -> bytes:
    """The checkpoint with its per-item buffers replaced by the item table at `items_url`.

    Parameters
    ----------
    checkpoint : bytes
        A ranker checkpoint (`train.checkpoint.save_checkpoint`).
    items_url : str
        Parquet `(item_idx, category_idx, author_idx, item_dense)` from `train.data.item_table`.

    Returns
    -------
    bytes
        The same model with `item_category`, `item_author`, `item_dense` of that table (items absent
        from it get the unknown features, as in training).
    """
    from recsys_spark.train.checkpoint import load_checkpoint, save_checkpoint
    from recsys_spark.train.loop import set_item_features

    model = load_checkpoint(io.BytesIO(checkpoint))
    set_item_features(model, items_url)
    out = io.BytesIO()
    save_checkpoint(model, out)
    return out.getvalue()


def checkpoint_tasks(checkpoint: bytes) -> tuple[str, ...]:
    """The task names of a ranker checkpoint, in output order.

    Parameters
    ----------
    checkpoint : bytes
        A ranker checkpoint.

    Returns
    -------
    tuple of str
        E.g. `("click", "like")`.
    """
    from recsys_spark.train.checkpoint import load_checkpoint

    return tuple(load_checkpoint(io.BytesIO(checkpoint)).tasks)


def score_batch(model, frame) -> dict[str, np.ndarray]:
    """Probabilities of one pandas batch of encoded rows.

    Parameters
    ----------
    model : Ranker
        The model, in eval mode.
    frame : pandas.DataFrame
        Encoded rows (`USER_KEYS`, `item_idx` and `pair_dense` columns; list columns as arrays).

    Returns
    -------
    dict of str to numpy.ndarray
        Task -> `(rows,)` float64 probabilities.
    """
    import torch

    batch = {}
    # A model saved before pair_dense existed has width 0 and never reads it.
    pair = (PAIR_KEY,) if getattr(model, "pair_dense_dim", 0) else ()
    for key in (*USER_KEYS, "item_idx", *pair):
        values = frame[key].to_numpy()
        if values.dtype == object:
            values = np.stack(values)
        dtype = np.float32 if key in ("user_dense", PAIR_KEY) else np.int64
        batch[key] = torch.from_numpy(np.ascontiguousarray(values, dtype=dtype))
    return {t: p.double().numpy() for t, p in model.predict(batch).items()}


def score_rows(
    encoded: DataFrame, checkpoint: bytes, tasks: tuple[str, ...], batch_size: int = 4096
) -> DataFrame:
    """Every row's probability per task, computed on the executors.

    Parameters
    ----------
    encoded : DataFrame
        From `encode_for_scoring`.
    checkpoint : bytes
        The ranker checkpoint to score with (broadcast once to the executors).
    tasks : tuple of str
        The checkpoint's tasks (`checkpoint_tasks`).
    batch_size : int
        Rows per forward pass.

    Returns
    -------
    DataFrame
        `(user_id, item_id, p_<task> double ...)`, one row per input row.
    """
    spark = encoded.sparkSession
    shipped = spark.sparkContext.broadcast(checkpoint)
    columns = ["user_id", "item_id", *USER_KEYS, "item_idx", PAIR_KEY]
    schema = "user_id string, item_id string, " + ", ".join(f"{SCORE_PREFIX}{t} double" for t in tasks)

    def score(batches: Iterator) -> Iterator:
        import pandas as pd
        import torch

        from recsys_spark.train.checkpoint import load_checkpoint

        # Several tasks share an executor's cores: one intra-op thread each avoids oversubscription.
        torch.set_num_threads(1)
        model = load_checkpoint(io.BytesIO(shipped.value)).eval()
        for frame in batches:
            for start in range(0, len(frame), batch_size):
                part = frame.iloc[start : start + batch_size]
                probs = score_batch(model, part)
                out = {"user_id": part["user_id"].to_numpy(), "item_id": part["item_id"].to_numpy()}
                out.update({f"{SCORE_PREFIX}{t}": probs[t] for t in tasks})
                yield pd.DataFrame(out)

    return encoded.select(*columns).mapInPandas(score, schema)
