"""How well item embeddings recover planted structure: precision@k of cosine neighbours, and a plot.

On synthetic data, `truth_items.cluster` is the planted cluster of each item; a good embedding puts an
item's nearest neighbours in its own cluster. The measurement uses a bounded sample of items
(`sample`, neighbours searched within the sample), so its cost does not grow with the catalogue.
"""

from __future__ import annotations

import html
import json

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def sample_vectors(vectors: DataFrame, truth_items: DataFrame, sample: int = 2000, seed: int = 0):
    """Up to `sample` (item, cluster, vector) rows, chosen by a hash of the item id (stable).

    Parameters
    ----------
    vectors : DataFrame
        `(item_id, vector: array<float>)`.
    truth_items : DataFrame
        The generator's planted clusters `(item_id, cluster, ...)`.
    sample : int
        Largest number of items kept.
    seed : int
        Seed of the hash.

    Returns
    -------
    tuple
        `(names, clusters, matrix)`: `(n,)` item ids, `(n,)` cluster ids, `(n, dim)` vectors.
    """
    joined = vectors.join(truth_items.select("item_id", "cluster"), "item_id")
    rows = joined.orderBy(F.xxhash64(F.lit(seed), "item_id")).limit(sample).collect()
    names = [r.item_id for r in rows]
    clusters = np.array([r.cluster for r in rows])
    matrix = np.array([r.vector for r in rows], dtype=np.float64).reshape(len(rows), -1)
    return names, clusters, matrix


def precision_at_k(matrix: np.ndarray, clusters: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest (cosine) neighbours that share its cluster.

    Parameters
    ----------
    matrix : numpy.ndarray
        `(n, dim)` vectors.
    clusters : numpy.ndarray
        `(n,)` cluster ids.
    k : int
        Neighbours per item.

    Returns
    -------
    float
        Precision@k in [0, 1]; NaN with too few items.
    """
    if len(matrix) <= k:
        return float("nan")
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return float((clusters[top] == clusters[:, None]).mean())


def random_precision(clusters: np.ndarray) -> float:
    """Expected precision@k of random neighbours: P(another item shares my cluster).

    Parameters
    ----------
    clusters : numpy.ndarray
        `(n,)` cluster ids.

    Returns
    -------
    float
        Σ_c n_c (n_c − 1) / (n (n − 1)); NaN for fewer than 2 items.
    """
    n = len(clusters)
    _, sizes = np.unique(clusters, return_counts=True)
    return float(((sizes * (sizes - 1)).sum()) / (n * (n - 1))) if n > 1 else float("nan")


def projection_svg(matrix: np.ndarray, clusters: np.ndarray, title: str, size: int = 420) -> str:
    """A 2-D PCA projection of the vectors as an SVG scatter, coloured by planted cluster.

    Parameters
    ----------
    matrix : numpy.ndarray
        `(n, dim)` vectors.
    clusters : numpy.ndarray
        `(n,)` cluster ids (colours).
    title : str
        Caption.
    size : int
        Width and height of the plot in pixels.

    Returns
    -------
    str
        An SVG document.
    """
    centred = matrix - matrix.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pos = 20 + (xy - lo) / np.maximum(hi - lo, 1e-12) * (size - 40)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{PALETTE[int(c) % len(PALETTE)]}" fill-opacity="0.7"/>'
        for (x, y), c in zip(pos, clusters)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size + 24}">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="8" y="16" font-family="sans-serif" font-size="12">{html.escape(title)}</text>'
        f'<g transform="translate(0,24)">{dots}</g></svg>'
    )


def embedding_report(
    vectors: DataFrame, truth_items: DataFrame, label: str, k: int = 10, sample: int = 2000
) -> dict:
    """Precision@k of the vectors against the planted clusters, its random baseline, and a plot.

    Parameters
    ----------
    vectors : DataFrame
        `(item_id, vector: array<float>)`.
    truth_items : DataFrame
        The generator's planted clusters.
    label : str
        Name of the vectors in the report.
    k : int
        Neighbours per item.
    sample : int
        Items sampled (see `sample_vectors`).

    Returns
    -------
    dict
        `label`, `items`, `precision@k`, `random_precision@k` and the SVG plot.
    """
    names, clusters, matrix = sample_vectors(vectors, truth_items, sample)
    return {
        "label": label,
        "items": len(names),
        f"precision@{k}": precision_at_k(matrix, clusters, k),
        f"random_precision@{k}": random_precision(clusters),
        "svg": projection_svg(matrix, clusters, f"{label}: 2-D PCA, colour = planted cluster")
        if len(names) > 2
        else "",
    }


def write_report(lake, name: str, report: dict) -> str:
    """`_reports/embeddings/<name>-<label>.json` (metrics) and `.svg` (plot); returns the json path.

    Parameters
    ----------
    lake : Lake
        The lake.
    name : str
        Report name (e.g. the walk method).
    report : dict
        From `embedding_report`.

    Returns
    -------
    str
        Path of the JSON file.
    """
    from recsys_spark.lake.commit import filesystem

    fs, folder = filesystem(lake.path("_reports", "embeddings"))
    fs.create_dir(folder, recursive=True)
    stem = f"{folder}/{name}-{report['label']}"
    if report.get("svg"):
        with fs.open_output_stream(f"{stem}.svg") as out:
            out.write(report["svg"].encode())
    with fs.open_output_stream(f"{stem}.json") as out:
        out.write(json.dumps({k: v for k, v in report.items() if k != "svg"}, indent=2).encode())
    return f"{stem}.json"
