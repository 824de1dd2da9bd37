"""The two-tower on the serving side: which version serves a day, its user vectors and its item vectors.

Lists for day D are served on D + 1, so a user's tower input is the sample of day D + 1 as training
would build it: statistics of D (`user_stats`), the last clicks up to and including D, the profile.
The version is the newest full version trained on a day up to D (`Registry.full_before(D + 1)`).

User vectors are computed on the executors (`mapInPandas`): each Python worker loads the checkpoint
once (`_MODELS`, kept while Spark reuses the worker) and runs the user tower on Arrow batches, so the
driver never holds user features or vectors.

References
----------
Yi, X. et al. (2019). Sampling-bias-corrected neural modeling for large corpus item recommendations.
RecSys '19 (the two-tower retrieval model served by inner product).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_spark.samples.features import last_n_clicks, user_features
from recsys_spark.samples.job import stats_of
from recsys_spark.train.data import encode_samples
from recsys_spark.train.features import USER_KEYS
from recsys_spark.train.registry import FULL, Registry
from recsys_spark.train.vocab import read_vocabs

# Per Python worker: checkpoint URL -> model in eval mode.
_MODELS: dict[str, object] = {}
VECTOR_SCHEMA = T.StructType(
    [T.StructField("user_id", T.StringType()), T.StructField("vector", T.ArrayType(T.FloatType()))]
)


def serving_version(lake, day: dt.date) -> str | None:
    """The full two-tower version serving the lists of `day`: trained on a day up to and including it.

    Parameters
    ----------
    lake : Lake
        The lake holding `_models/two_tower`.
    day : datetime.date
        The lists' day D.

    Returns
    -------
    str or None
        `full-YYYY-MM-DD`, None when no full version was trained by the end of D.
    """
    return Registry.for_model(lake, "two_tower").full_before(day + dt.timedelta(days=1))


def _load_model(url: str):
    if url not in _MODELS:
        from recsys_spark.lake.commit import read_bytes
        from recsys_spark.train.checkpoint import load_checkpoint

        _MODELS[url] = load_checkpoint(read_bytes(url)).eval()
    return _MODELS[url]


def user_tower_frame(checkpoint_url: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The user tower on one pandas batch of encoded rows (what each executor task runs).

    Parameters
    ----------
    checkpoint_url : str
        The version's `checkpoint.pt`.
    frame : pandas.DataFrame
        `(user_id, *USER_KEYS)` encoded rows, `(batch,)`.

    Returns
    -------
    pandas.DataFrame
        `(user_id, vector)`, one `(out_dim,)` float32 vector per row.
    """
    import torch

    model = _load_model(checkpoint_url)
    batch = {}
    for key in USER_KEYS:
        values = frame[key].to_numpy()
        if values.dtype == object:
            values = np.stack(values)
        batch[key] = torch.from_numpy(np.ascontiguousarray(values))
    with torch.no_grad():
        vectors = model.user_vectors(batch).float().numpy()
    return pd.DataFrame({"user_id": frame["user_id"].to_numpy(), "vector": list(vectors)})


def two_tower_user_vectors(spark, lake, day: dt.date, users: DataFrame, version: str | None = None):
    """`(user_id, vector array<float>)` of `users` from the two-tower serving day `day`'s lists.

    Parameters
    ----------
    spark : SparkSession
        The session.
    lake : Lake
        The lake (events, users, user_stats, the model registry).
    day : datetime.date
        The lists' day D: features as of the end of D (see the module docstring).
    users : DataFrame
        `(user_id)`, the users to encode.
    version : str, optional
        The model version; default `serving_version(lake, day)`.

    Returns
    -------
    DataFrame or None
        `(user_id, vector)`, shape (users, 2); None when there is no version.
    """
    from recsys_spark.lake.commit import read_bytes
    from recsys_spark.train.checkpoint import load_checkpoint

    version = version or serving_version(lake, day)
    if version is None:
        return None
    url = Registry.for_model(lake, "two_tower").version_url(FULL, version)
    sample_day = day + dt.timedelta(days=1)
    hist_len = load_checkpoint(read_bytes(f"{url}/checkpoint.pt")).sizes.hist_len
    profile = user_features(lake.read("users"), stats_of(lake, "user_stats", day), sample_day)
    hist = last_n_clicks(lake.read("events"), sample_day, hist_len, 30)
    rows = (
        users.select("user_id")
        .distinct()
        .join(profile, "user_id", "left")
        .join(hist, "user_id", "left")
        .withColumn("hist", F.coalesce("hist", F.array().cast("array<string>")))
        .withColumn("item_id", F.lit(None).cast("string"))
        .withColumn("label", F.lit(0))
        .withColumn("weight", F.lit(1.0))
        .withColumn("sample_type", F.lit("serving"))  # part of encode_samples' row key
    )
    from recsys_spark.samples.features import USER_DENSE, new_id_dense

    rows = rows.withColumn("user_dense", F.coalesce("user_dense", new_id_dense(USER_DENSE)))
    encoded = encode_samples(rows, read_vocabs(spark, f"{url}/vocab"), "two_tower", hist_len, ("user_id",))
    checkpoint = f"{url}/checkpoint.pt"

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        torch.set_num_threads(1)  # one task per core already
        for batch in batches:
            if len(batch):
                yield user_tower_frame(checkpoint, batch)

    return encoded.select("user_id", *USER_KEYS).mapInPandas(run, VECTOR_SCHEMA)


def two_tower_item_vectors(lake, version: str) -> DataFrame:
    """`(item_id, vector array<float>)` of one version, from the `item_vectors` table.

    Parameters
    ----------
    lake : Lake
        The lake.
    version : str
        The model version.

    Returns
    -------
    DataFrame
        `(item_id, vector)`, shape (items, 2), L2-normalised vectors.
    """
    return (
        lake.read("item_vectors", partition_filters=[("model_version", "=", version)])
        .filter(F.col("model_version") == F.lit(version))
        .select("item_id", "vector")
    )
