"""DeepWalk and Node2vec random walks over `item_graph`, distributed on Spark.

Walk starts are spread over Spark tasks (`num_walks` walks per node, walk ids
`node_index * num_walks + r`); each task walks its starts with vectorised NumPy over the whole graph,
which every Python worker loads once from Parquet under the lake, in compressed-sparse-row form:
memory O(edges) per worker, and nothing collected on the driver.

- DeepWalk: the next node is drawn with probability proportional to the edge weight, by a binary
  search of a uniform draw in the cumulative weights of the current node's out-edges.
- Node2vec: from `b` reached from `a`, the next node `c` gets weight `w(b->c)` times `1/p` if `c = a`,
  `1` if the edge `a -> c` exists, `1/q` otherwise. No table per (previous, current) pair is built:
  a candidate is drawn from the first-order distribution and accepted with probability
  `alpha(a, c) / max(1/p, 1, 1/q)` (rejection sampling, as KnightKing does); `a -> c` is looked up by
  binary search in the sorted edge keys. The first step, with no previous node, is first-order.
- Walks stop early at a node with no out-edges; a node with none starts a one-item walk.

Every random number is a hash of (seed, walk id, step, round, lane), so the same seed gives the same
walks however Spark partitions the work.

References
----------
B. Perozzi, R. Al-Rfou, S. Skiena. "DeepWalk: Online Learning of Social Representations." KDD 2014.
A. Grover, J. Leskovec. "node2vec: Scalable Feature Learning for Networks." KDD 2016.
K. Yang, M. Zhang, K. Chen, X. Ma, Y. Bai, Y. Jiang. "KnightKing: A Fast Distributed Graph Random
Walk Engine." SOSP 2019 (rejection sampling of second-order steps).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_spark.catalog import WALK_METHODS
from recsys_spark.config import option

WALK_SCHEMA = "walk_id long, method string, items array<string>"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class WalkParams:
    """Parameters of `random_walks`.

    Parameters
    ----------
    method : str
        "deepwalk" (first order) or "node2vec" (second order; equals DeepWalk at p = q = 1).
    num_walks : int
        Walks started from every node.
    walk_length : int
        Nodes per walk, the start included (shorter at a node without out-edges).
    p, q : float
        node2vec's return and in-out parameters (> 0).
    seed : int
        Seed of the counter-based random numbers.
    max_rounds : int
        Rejection-sampling rounds per step; a walker still unplaced after them is an error.
    """

    method: str = option(
        "deepwalk",
        "deepwalk (first-order) or node2vec (second-order, p and q).",
        choices=list(WALK_METHODS),
    )
    num_walks: int = option(10, "Walks started from every node.", minimum=1)
    walk_length: int = option(
        40, "Nodes per walk at most (walks stop early at nodes without out-edges).", minimum=1
    )
    p: float = option(
        1.0,
        "Node2vec return parameter: weight 1/p for stepping back to the previous node.",
        exclusive_minimum=0,
    )
    # One default for every entry point (walks, run-daily, the DAG): 0.5, i.e. outward, DFS-like walks
    # that reach an item's wider neighbourhood. With p = q = 1 node2vec equals DeepWalk, so a default
    # of 1 would make `--method node2vec` silently a second, slower DeepWalk.
    q: float = option(
        0.5,
        "Node2vec in-out parameter: weight 1/q for moving away from the previous node (< 1: outward, "
        "DFS-like; the default 0.5 because q = p = 1 is plain DeepWalk).",
        exclusive_minimum=0,
    )
    seed: int = option(42, "Random seed; the same seed gives the same walks on any number of partitions.")
    max_rounds: int = option(
        1000, "Node2vec rejection-sampling rounds per step before a walk gives up (an error).", minimum=1
    )


# -- counter-based random numbers ------------------------------------------------------------------
def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seed: int, walk_ids: np.ndarray, step: int, round_: int, lane: int) -> np.ndarray:
    """Uniform [0, 1) numbers, a pure function of their arguments (no generator state).

    Parameters
    ----------
    seed : int
        Walk seed.
    walk_ids : numpy.ndarray
        `(n,)` int64 walk ids.
    step, round_, lane : int
        Step of the walk, rejection round, and draw within the round.

    Returns
    -------
    numpy.ndarray
        `(n,)` float64 in [0, 1), 53 random bits each.
    """
    h = _splitmix(np.full(walk_ids.shape, seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    for part in (walk_ids.astype(np.uint64), np.uint64(step), np.uint64(round_), np.uint64(lane)):
        h = _splitmix(h ^ part)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


# -- the graph in compressed sparse row form -------------------------------------------------------
@dataclass
class CsrGraph:
    """A weighted directed graph in compressed-sparse-row form, nodes numbered by sorted name.

    Parameters
    ----------
    names : numpy.ndarray
        `(num_nodes,)` node names, sorted; index -> item id.
    (other fields)
        Row offsets, targets and cumulative weights, built by `CsrGraph.from_edges`.
    """

    names: np.ndarray  # node names, sorted: index -> item id
    offsets: np.ndarray  # out-edges of node n are edges offsets[n]:offsets[n+1]
    dst: np.ndarray  # destination index per edge, sorted within a node
    cumw: np.ndarray  # running sum of edge weights within each node's range
    weight: np.ndarray  # weight per edge
    keys: np.ndarray  # src * n + dst per edge, sorted: edge lookup by binary search

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @classmethod
    def from_edges(cls, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> CsrGraph:
        weight = np.asarray(weight, dtype=np.float64)
        if np.any(weight <= 0) or not np.all(np.isfinite(weight)):
            raise ValueError("item_graph weights must be finite and > 0")
        codes, uniques = pd.factorize(np.concatenate([src, dst]).astype(object))
        names = np.asarray(uniques, dtype=object)
        order = np.argsort(names.astype(str), kind="stable")
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))
        names = names[order]
        s, d = rank[codes[: len(src)]], rank[codes[len(src) :]]
        n = len(names)
        keys = s * n + d
        order = np.argsort(keys, kind="stable")
        keys, s, d, w = keys[order], s[order], d[order], weight[order]
        if len(keys) > 1 and np.any(keys[1:] == keys[:-1]):
            raise ValueError("item_graph has duplicate (src_item, dst_item) edges")
        offsets = np.concatenate([[0], np.cumsum(np.bincount(s, minlength=n))]).astype(np.int64)
        cumw = np.cumsum(w)
        base = np.concatenate([[0.0], cumw])[np.repeat(offsets[:-1], np.diff(offsets))]
        return cls(names=names, offsets=offsets, dst=d, cumw=cumw - base, weight=w, keys=keys)

    def degree(self, nodes: np.ndarray) -> np.ndarray:
        return self.offsets[nodes + 1] - self.offsets[nodes]

    def sample_next(self, nodes: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Out-neighbour of each node, drawn proportionally to edge weight (nodes must have out-edges)."""
        lo, hi = self.offsets[nodes], self.offsets[nodes + 1]
        total = self.cumw[hi - 1]
        # cumw restarts in every node's range, so search each range on its own: vectorised bisection.
        target = u * total
        left, right = lo.copy(), hi - 1
        while True:
            open_ = left < right
            if not open_.any():
                break
            mid = (left + right) // 2
            go_right = open_ & (self.cumw[mid] <= target)
            left = np.where(go_right, mid + 1, left)
            right = np.where(open_ & ~go_right, mid, right)
        return self.dst[left]

    def edge_weight(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """w(src -> dst), 0 where there is no such edge (binary search in the sorted edge keys)."""
        if len(self.keys) == 0:
            return np.zeros(len(src))
        wanted = src.astype(np.int64) * self.num_nodes + dst
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        return np.where(self.keys[pos] == wanted, self.weight[pos], 0.0)


def _node2vec_step(graph: CsrGraph, walk_ids, cur, prev, step: int, params: WalkParams) -> np.ndarray:
    """Second-order step by rejection sampling with the return edge folded out (exact).

    Target mass of candidate c: w(b->c)·alpha(c), alpha = 1/p for c = a, 1 if a->c exists, else 1/q.
    Envelope: m·w(b->c) for every c with m = max(1, 1/q), plus an extra mass
    E = w(b->a)·max(0, 1/p - m) on a alone. With probability E / (m·W + E) the walk returns to a
    outright; otherwise a first-order candidate is accepted with probability min(alpha(c), m) / m.
    Folding the return edge out keeps acceptance high when 1/p is large (BFS-like walks).
    """
    inv_p, inv_q = 1.0 / params.p, 1.0 / params.q
    m = max(1.0, inv_q)
    total = graph.cumw[graph.offsets[cur + 1] - 1]
    extra = graph.edge_weight(cur, prev) * max(0.0, inv_p - m)
    chosen = np.empty(len(cur), dtype=np.int64)
    pending = np.arange(len(cur))
    for round_ in range(params.max_rounds):
        ids, b, a = walk_ids[pending], cur[pending], prev[pending]
        go_back = (
            uniform(params.seed, ids, step, round_, 2) * (m * total[pending] + extra[pending])
            < extra[pending]
        )
        cand = np.where(go_back, a, graph.sample_next(b, uniform(params.seed, ids, step, round_, 0)))
        alpha = np.where(cand == a, inv_p, np.where(graph.edge_weight(a, cand) > 0, 1.0, inv_q))
        accept = go_back | (uniform(params.seed, ids, step, round_, 1) * m < np.minimum(alpha, m))
        chosen[pending[accept]] = cand[accept]
        pending = pending[~accept]
        if len(pending) == 0:
            return chosen
    raise RuntimeError(f"node2vec: {len(pending)} walkers not placed after {params.max_rounds} rounds")


def walk_batch(graph: CsrGraph, walk_ids: np.ndarray, params: WalkParams) -> list[np.ndarray]:
    """Walks for the given walk ids (start node = walk_id // num_walks), as arrays of node indices.

    Parameters
    ----------
    graph : CsrGraph
        The whole graph.
    walk_ids : numpy.ndarray
        `(n,)` int64 walk ids.
    params : WalkParams
        Method, length, p, q and seed.

    Returns
    -------
    list of numpy.ndarray
        `n` int64 arrays of node indices, each of length 1..walk_length.
    """
    n = len(walk_ids)
    length = max(1, params.walk_length)
    paths = np.full((n, length), -1, dtype=np.int64)
    cur = walk_ids // params.num_walks
    paths[:, 0] = cur
    prev = np.full(n, -1, dtype=np.int64)
    active = graph.degree(cur) > 0
    second_order = params.method == "node2vec" and not (params.p == 1.0 and params.q == 1.0)
    for step in range(1, length):
        todo = np.flatnonzero(active)
        if len(todo) == 0:
            break
        if second_order and step > 1:
            chosen = _node2vec_step(graph, walk_ids[todo], cur[todo], prev[todo], step, params)
        else:
            chosen = graph.sample_next(cur[todo], uniform(params.seed, walk_ids[todo], step, 0, 0))
        paths[todo, step] = chosen
        prev[todo] = cur[todo]
        cur[todo] = chosen
        active[todo] = graph.degree(chosen) > 0
    return [row[row >= 0] for row in paths]


# -- Spark --------------------------------------------------------------------------------------
_GRAPH_CACHE: dict[str, CsrGraph] = {}


def _load_graph(path: str) -> CsrGraph:
    """The graph stored at `path`, loaded once per Python worker process."""
    if path not in _GRAPH_CACHE:
        import pyarrow.parquet as pq

        from recsys_spark.lake.commit import filesystem

        fs, local = filesystem(path)
        table = pq.read_table(local, filesystem=fs, columns=["src_item", "dst_item", "weight"])
        _GRAPH_CACHE.clear()  # one graph per worker at a time: bounded memory
        _GRAPH_CACHE[path] = CsrGraph.from_edges(
            table.column("src_item").to_numpy(zero_copy_only=False),
            table.column("dst_item").to_numpy(zero_copy_only=False),
            table.column("weight").to_numpy(zero_copy_only=False),
        )
    return _GRAPH_CACHE[path]


def random_walks(graph, params: WalkParams, scratch_uri: str, partitions: int | None = None):
    """Walks over the `(src_item, dst_item, weight)` DataFrame `graph` as a `walks` DataFrame.

    The edges are first written once under `scratch_uri` (a folder on storage every executor reads,
    e.g. under the lake), then each task loads them from there. Returns a DataFrame that is computed
    lazily; the caller deletes `scratch_uri` after writing the walks.

    Parameters
    ----------
    graph : DataFrame
        `item_graph` edges `(src_item, dst_item, weight)`.
    params : WalkParams
        Walk method and sizes.
    scratch_uri : str
        Folder (URI) every executor can read, e.g. from `scratch_dir`.
    partitions : int, optional
        Spark tasks walking; default from the parallelism and the number of walks.

    Returns
    -------
    DataFrame
        `(walk_id: long, method: string, items: array<string>)`, `num_walks` walks per node.

    Raises
    ------
    ValueError
        On an unknown method, `num_walks` or `walk_length` < 1, or `p`, `q` <= 0.
    """
    from pyspark.sql import functions as F

    if params.method not in WALK_METHODS:
        raise ValueError(f"unknown walk method {params.method!r}")
    if params.num_walks < 1 or params.walk_length < 1 or params.p <= 0 or params.q <= 0:
        raise ValueError("num_walks and walk_length must be >= 1, p and q > 0")
    spark = graph.sparkSession
    edges_uri = f"{scratch_uri.rstrip('/')}/graph-{uuid.uuid4().hex}"
    graph.select("src_item", "dst_item", F.col("weight").cast("double")).coalesce(1).write.parquet(edges_uri)
    nodes = graph.select(F.col("src_item").alias("n")).union(graph.select("dst_item")).distinct().count()
    total = nodes * params.num_walks
    partitions = partitions or max(1, min(spark.sparkContext.defaultParallelism * 4, total // 2000 + 1))

    def walk_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        csr = _load_graph(edges_uri)
        for batch in batches:
            ids = batch["walk_id"].to_numpy(dtype=np.int64)
            walks = walk_batch(csr, ids, params)
            yield pd.DataFrame(
                {"walk_id": ids, "method": params.method, "items": [csr.names[w].tolist() for w in walks]}
            )

    if total == 0:
        return spark.createDataFrame([], WALK_SCHEMA)
    return (
        spark.range(0, total, numPartitions=partitions)
        .withColumnRenamed("id", "walk_id")
        .mapInPandas(walk_partition, WALK_SCHEMA)
    )
