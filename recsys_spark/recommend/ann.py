"""Approximate nearest-neighbour search for the vector channels (two-tower, graph embeddings) with Faiss.

One index per source and version (`two_tower/full-2026-11-05`, `deepwalk/v12`, ...), built once on the
driver from the catalogue's item vectors (catalogue-sized, as the exact evaluation already holds it)
and saved under `<lake>/_models/ann/<source>/<version>/`:

- `ids.json`: `{"ids": [item_id, ...] (row order of the index), "params": {...}, "dim": d}`;
- `index.faiss`: the serialised index, written *last* (each file by temporary file + rename), so a
  present `index.faiss` whose row count and parameters match `ids.json` is complete and is reused.

Inner product on L2-normalised vectors is cosine. `hnsw` (default: graph search, no training, best
recall per query time at catalogue sizes up to a few million), `ivf` (k-means lists, `nprobe` of
`nlist` scanned) or `flat` (exact; for checks).

Search runs on the executors: `search` is a `mapInPandas` over the users' vectors; each Python worker
reads the index file once and keeps it (`_INDEXES`, reused across tasks while Spark reuses the
worker), so the driver never holds user vectors and memory per worker is one index plus one Arrow
batch (`spark.sql.execution.arrow.maxRecordsPerBatch` users). Seen items are filtered after the
search: each batch asks for k + min(most seen items of a user in the batch, `ann_seen_cap`) hits.

References
----------
Johnson, J., Douze, M., Jégou, H. (2017). Billion-scale similarity search with GPUs. arXiv:1702.08734.
Malkov, Y. A., Yashunin, D. A. (2018). Efficient and robust approximate nearest neighbor search using
Hierarchical Navigable Small World graphs. IEEE TPAMI.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_spark.candidates.lists import vector_candidates
from recsys_spark.catalog import ANN_INDEX_DIR
from recsys_spark.config import option
from recsys_spark.lake.commit import filesystem, read_bytes, write_atomically

log = logging.getLogger(__name__)

ANN_KINDS = ("hnsw", "ivf", "flat")
INDEX_FILE, IDS_FILE = "index.faiss", "ids.json"
SEARCH_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("score", T.DoubleType()),
        T.StructField("rank", T.IntegerType()),
    ]
)

# Per Python worker: index URL -> (index, ids). A worker serves many tasks; the file is read once.
_INDEXES: dict[str, tuple[object, np.ndarray]] = {}


@dataclass
class AnnParams:
    """Faiss index parameters (build and search) of the vector channels.

    Parameters
    ----------
    ann_index : {"hnsw", "ivf", "flat"}
        Index kind.
    ann_m, ann_ef_construction, ann_ef_search : int
        HNSW graph degree, build and search beam widths.
    ann_nlist, ann_nprobe : int
        IVF lists (0: about 4·sqrt(items)) and lists scanned per query.
    ann_seen_cap : int
        At most this many extra hits per user to make up for filtered seen items.
    """

    ann_index: str = option(
        "hnsw", "ANN index kind: hnsw, ivf (IVF-Flat) or flat (exact).", choices=list(ANN_KINDS)
    )
    ann_m: int = option(32, "HNSW: neighbours per node (M).", minimum=4)
    ann_ef_construction: int = option(200, "HNSW: candidate list size while building.", minimum=8)
    ann_ef_search: int = option(
        256, "HNSW: candidate list size while searching (at least k + seen).", minimum=8
    )
    ann_nlist: int = option(0, "IVF: number of lists; 0 = about 4·sqrt(items).", minimum=0)
    ann_nprobe: int = option(32, "IVF: lists scanned per query.", minimum=1)
    ann_seen_cap: int = option(
        500, "Extra hits searched per user to replace their seen items, at most.", minimum=0
    )


def index_folder(lake, source: str, version: str) -> str:
    """`<lake>/_models/ann/<source>/<version>`: where the index of one vector version lives.

    Parameters
    ----------
    lake : Lake
        The lake.
    source : str
        The channel (`two_tower`, `deepwalk`, `node2vec`).
    version : str
        The model or embedding version.

    Returns
    -------
    str
        The folder's URI (local path on a local lake).
    """
    return lake.path(*ANN_INDEX_DIR, source, version)


def _build_params(params: AnnParams) -> dict:
    keys = {"hnsw": ("ann_m", "ann_ef_construction"), "ivf": ("ann_nlist",), "flat": ()}[params.ann_index]
    return {"ann_index": params.ann_index, **{k: getattr(params, k) for k in keys}}


def normalised(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32 for Faiss.

    Parameters
    ----------
    matrix : ndarray
        `(n, d)` vectors.

    Returns
    -------
    ndarray
        `(n, d)` float32, unit rows.
    """
    m = np.asarray(matrix, dtype=np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12).astype(np.float32)


def build_index(matrix: np.ndarray, params: AnnParams):
    """A Faiss inner-product index over the rows of `matrix` (already normalised by the caller).

    Parameters
    ----------
    matrix : ndarray
        `(items, d)` float32 item vectors; row r is id r.
    params : AnnParams
        Index kind and build parameters.

    Returns
    -------
    faiss.Index
        Trained (IVF) and filled with every row.
    """
    import faiss

    x = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = x.shape
    if params.ann_index == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.ann_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ann_ef_construction
    elif params.ann_index == "ivf":
        nlist = params.ann_nlist or max(1, int(4 * np.sqrt(n)))
        nlist = min(nlist, max(1, n // 39))  # k-means wants ~39 points per centroid
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    else:
        index = faiss.IndexFlatIP(d)
    index.add(x)
    return index


def ensure_index(lake, source: str, version: str, items: DataFrame, params: AnnParams) -> str:
    """The folder of the index of `items` for (source, version): reused when complete, else built.

    Parameters
    ----------
    lake : Lake
        The lake (the index goes under its `_models/ann/`).
    source, version : str
        Channel and vector version, the index's identity.
    items : DataFrame
        `(item_id, vector array<float>)`, the catalogue's vectors (collected: catalogue-sized).
    params : AnnParams
        Build parameters; an index built with other ones is rebuilt.

    Returns
    -------
    str
        The folder URI holding `index.faiss` and `ids.json`.
    """
    import faiss

    folder = index_folder(lake, source, version)
    wanted = _build_params(params)
    fs, path = filesystem(posixpath.join(folder, INDEX_FILE))
    if fs.get_file_info(path).type.name != "NotFound":
        meta = json.loads(read_bytes(posixpath.join(folder, IDS_FILE)).read())
        if meta.get("params") == wanted:
            log.info("ann %s/%s: reusing %s (%d items)", source, version, folder, len(meta["ids"]))
            return folder
    frame = items.select("item_id", "vector").toPandas().sort_values("item_id", kind="stable")
    if frame.empty:
        raise ValueError(f"ann {source}/{version}: no item vectors")
    matrix = normalised(np.stack(frame["vector"].to_numpy()))
    index = build_index(matrix, params)
    meta = {"ids": list(frame["item_id"]), "params": wanted, "dim": int(matrix.shape[1])}
    write_atomically(posixpath.join(folder, IDS_FILE), json.dumps(meta).encode())
    write_atomically(posixpath.join(folder, INDEX_FILE), faiss.serialize_index(index).tobytes())
    log.info(
        "ann %s/%s: built %s index over %d items in %s", source, version, params.ann_index, len(frame), folder
    )
    return folder


def load_index(folder: str):
    """`(index, ids)` of a saved index, read once per Python worker and kept.

    Parameters
    ----------
    folder : str
        Folder from `ensure_index`.

    Returns
    -------
    tuple
        `(faiss.Index, ndarray of item ids (object), length index.ntotal)`.
    """
    import faiss

    if folder not in _INDEXES:
        meta = json.loads(read_bytes(posixpath.join(folder, IDS_FILE)).read())
        raw = np.frombuffer(read_bytes(posixpath.join(folder, INDEX_FILE)).getvalue(), dtype=np.uint8)
        index = faiss.deserialize_index(raw)
        ids = np.asarray(meta["ids"], dtype=object)
        if index.ntotal != len(ids):
            raise ValueError(f"{folder}: index holds {index.ntotal} rows, ids.json {len(ids)}")
        _INDEXES[folder] = (index, ids)
    return _INDEXES[folder]


def search_frame(
    folder: str, users: pd.DataFrame, k: int, params: AnnParams, normalise_users: bool
) -> pd.DataFrame:
    """Top-k unseen items of each user of one pandas batch (what each executor task runs).

    Parameters
    ----------
    folder : str
        The index folder.
    users : pandas.DataFrame
        `(user_id, vector, seen)`: `(batch,)` rows, `vector` of length d, `seen` a list of item ids
        (or None).
    k : int
        Items per user.
    params : AnnParams
        Search parameters (`ann_ef_search`, `ann_nprobe`, `ann_seen_cap`).
    normalise_users : bool
        Scale user vectors to unit norm first (cosine scores); otherwise raw inner products.

    Returns
    -------
    pandas.DataFrame
        `(user_id, item_id, score float64, rank int32)`, at most k rows per user, score descending,
        ties by item_id ascending; never an item of the user's `seen`.
    """
    import faiss

    index, ids = load_index(folder)
    if users.empty:
        return pd.DataFrame({c.name: pd.Series(dtype=object) for c in SEARCH_SCHEMA})
    x = np.stack(users["vector"].to_numpy()).astype(np.float32)
    if normalise_users:
        x = normalised(x)
    seen = [set(s) if s is not None else set() for s in users["seen"]]
    extra = min(max((len(s) for s in seen), default=0), params.ann_seen_cap)
    width = min(k + extra, index.ntotal)
    if params.ann_index == "hnsw":
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", max(params.ann_ef_search, width))
    elif params.ann_index == "ivf":
        index.nprobe = params.ann_nprobe
    scores, rows = index.search(np.ascontiguousarray(x), width)
    out_u, out_i, out_s, out_r = [], [], [], []
    for user, found, score, exclude in zip(users["user_id"], rows, scores, seen):
        keep = found >= 0
        items, vals = ids[found[keep]], score[keep].astype(np.float64)
        allowed = np.fromiter((i not in exclude for i in items), dtype=bool, count=len(items))
        items, vals = items[allowed], vals[allowed]
        order = np.lexsort((items.astype(str), -vals))[:k]
        out_u.extend([user] * len(order))
        out_i.extend(items[order])
        out_s.extend(vals[order])
        out_r.extend(range(1, len(order) + 1))
    return pd.DataFrame(
        {
            "user_id": pd.Series(out_u, dtype=object),
            "item_id": pd.Series(out_i, dtype=object),
            "score": pd.Series(out_s, dtype=np.float64),
            "rank": pd.Series(out_r, dtype=np.int32),
        }
    )


def search(
    user_vectors: DataFrame, folder: str, k: int, params: AnnParams, normalise_users: bool = True
) -> DataFrame:
    """Top-k items per user by ANN search on the executors (`mapInPandas`).

    Parameters
    ----------
    user_vectors : DataFrame
        `(user_id, vector array<float|double>, seen array<string>)` (`seen` may be null), one row
        per user, shape (users, 3).
    folder : str
        The index folder from `ensure_index`.
    k : int
        Items per user.
    params : AnnParams
        Search parameters.
    normalise_users : bool, default True
        Cosine (True) or raw inner product (False: the two-tower's dot product).

    Returns
    -------
    DataFrame
        `(user_id, item_id, score double, rank int)`, shape (≤ users · k, 4).
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import faiss

        faiss.omp_set_num_threads(1)  # Spark already runs one task per core
        for batch in batches:
            yield search_frame(folder, batch, k, params, normalise_users)

    cols = user_vectors.select("user_id", F.col("vector").cast("array<double>"), "seen")
    return cols.mapInPandas(run, SEARCH_SCHEMA)


def recall_against_exact(
    sample: pd.DataFrame,
    items: pd.DataFrame,
    approximate: Mapping[str, Sequence[str]],
    k: int,
    normalise_users: bool = True,
) -> float:
    """Mean over the sampled users of |ANN top-k ∩ exact top-k| / |exact top-k| (recall@k of the index).

    Parameters
    ----------
    sample : pandas.DataFrame
        `(user_id, vector, seen)` of the checked users, `(n,)` rows (a bounded sample).
    items : pandas.DataFrame
        `(item_id, vector)` of the catalogue.
    approximate : Mapping[str, Sequence[str]]
        The ANN's list per user.
    k : int
        The cut-off.
    normalise_users : bool
        As in `search`.

    Returns
    -------
    float
        Recall@k in [0, 1]; NaN for an empty sample. The exact lists come from
        `candidates.lists.vector_candidates` with the same seen items excluded.
    """
    if sample.empty:
        return float("nan")
    users = np.stack(sample["vector"].to_numpy()).astype(np.float64)
    if normalise_users:
        users = normalised(users).astype(np.float64)
    matrix = normalised(np.stack(items["vector"].to_numpy())).astype(np.float64)
    exclude = {u: set(s) for u, s in zip(sample["user_id"], sample["seen"]) if s is not None}
    exact = vector_candidates(
        list(sample["user_id"]), users, list(items["item_id"]), matrix, k, exclude=exclude
    )
    total, count = 0.0, 0
    for user, group in exact.groupby("user_id"):
        truth = set(group["item_id"])
        total += len(truth & set(approximate.get(user, ()))) / len(truth)
        count += 1
    return total / count if count else float("nan")


def params_dict(params: AnnParams) -> dict:
    """The parameters as a plain dict (for commit metadata).

    Parameters
    ----------
    params : AnnParams
        The parameters.

    Returns
    -------
    dict
        Field name -> value.
    """
    return asdict(params)
