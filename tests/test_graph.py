"""Item graph and random walks against small, obviously-correct references."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict

import numpy as np
import pytest
from pyspark.sql import functions as F

from recsys_spark import catalog
from recsys_spark.graph.item_graph import item_graph
from recsys_spark.graph.walks import CsrGraph, WalkParams, random_walks, walk_batch

WEIGHTS = {"click": 1, "like": 2, "comment": 2, "share": 3, "follow": 3, "purchase": 4, "impression": 0}
DAY = dt.date(2026, 11, 10)


# -- item graph ---------------------------------------------------------------------------------
def reference_item_graph(rows, date, window_days=0, gap_minutes=30.0, max_user_events=0):
    first = date - dt.timedelta(days=window_days - 1) if window_days else dt.date.min
    positive = [r for r in rows if WEIGHTS[r[2]] > 0 and first <= r[3].date() <= date]
    by_user = defaultdict(list)
    for r in positive:
        by_user[r[0]].append(r)
    edges = Counter()
    for events in by_user.values():
        if max_user_events:
            events = sorted(events, key=lambda r: (r[3], r[1], r[2]), reverse=True)[:max_user_events]
        sessions = defaultdict(list)
        no_session = sorted((r for r in events if r[4] is None), key=lambda r: (r[3], r[1], r[2]))
        number, last = 0, None
        for r in no_session:
            if last is None or (r[3] - last).total_seconds() > gap_minutes * 60:
                number += 1
            last = r[3]
            sessions[("gap", number)].append(r)
        for r in events:
            if r[4] is not None:
                sessions[("id", r[4])].append(r)
        for seq in sessions.values():
            seq = sorted(seq, key=lambda r: (r[3], r[1], r[2]))
            for a, b in zip(seq, seq[1:]):
                if a[1] != b[1]:
                    edges[(a[1], b[1])] += 1
    return {k: float(v) for k, v in edges.items()}


def random_events(seed, users=12, items=9, n=400):
    rng = random.Random(seed)
    start = dt.datetime(2026, 11, 6)
    rows = []
    for _ in range(n):
        ts = start + dt.timedelta(minutes=rng.randrange(0, 6 * 24 * 60 // 7) * 7)  # coarse: ties happen
        session = rng.choice([None, None, f"s{rng.randrange(4)}"])
        rows.append(
            (f"u{rng.randrange(users)}", f"i{rng.randrange(items)}", rng.choice(list(WEIGHTS)), ts, session)
        )
    return rows


def events_df(spark, rows):
    return spark.createDataFrame(
        rows, "user_id string, item_id string, event string, ts timestamp, session_id string"
    ).withColumn("dt", F.to_date("ts"))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("window_days", "gap", "cap"), [(0, 30.0, 0), (2, 30.0, 0), (0, 120.0, 25)])
def test_item_graph_matches_reference(spark, seed, window_days, gap, cap):
    rows = random_events(seed)
    got = item_graph(events_df(spark, rows), DAY - dt.timedelta(days=1), window_days, gap, cap).collect()
    expected = reference_item_graph(rows, DAY - dt.timedelta(days=1), window_days, gap, cap)
    assert {(r.src_item, r.dst_item): r.weight for r in got} == expected
    assert expected  # the random data does make edges


def test_item_graph_sessions_and_self_loops(spark):
    t = dt.datetime(2026, 11, 9, 10)
    rows = [
        ("u", "a", "click", t, None),
        ("u", "a", "like", t + dt.timedelta(minutes=1), None),  # same item again: no self-loop
        ("u", "b", "impression", t + dt.timedelta(minutes=2), None),  # exposure only: skipped
        ("u", "c", "click", t + dt.timedelta(minutes=3), None),
        ("u", "d", "click", t + dt.timedelta(minutes=40), None),  # > 30 min gap: new session
        ("u", "x", "click", t + dt.timedelta(minutes=4), "s1"),  # its own session
        ("u", "y", "click", t + dt.timedelta(minutes=5), "s1"),
    ]
    got = {(r.src_item, r.dst_item): r.weight for r in item_graph(events_df(spark, rows), t.date()).collect()}
    assert got == {("a", "c"): 1.0, ("x", "y"): 1.0}


# -- walks: exact transition probabilities ----------------------------------------------------------
EDGES = {
    "a": {"b": 1.0, "c": 3.0, "d": 2.0},
    "b": {"a": 2.0, "c": 2.0, "e": 1.0},
    "c": {"a": 1.0, "b": 1.0, "d": 4.0},
    "d": {"c": 1.0, "e": 2.0},
    "e": {},  # dead end
    "f": {"a": 1.0},  # reached by nobody
}


def csr(edges=EDGES):
    pairs = [(s, d, w) for s, out in edges.items() for d, w in out.items()]
    return CsrGraph.from_edges(
        np.array([p[0] for p in pairs], dtype=object),
        np.array([p[1] for p in pairs], dtype=object),
        np.array([p[2] for p in pairs]),
    )


def first_order(b, c, edges=EDGES):
    return edges[b][c] / sum(edges[b].values())


def second_order(a, b, c, p, q, edges=EDGES):
    def alpha(x):
        return 1 / p if x == a else 1.0 if x in edges[a] else 1 / q

    return edges[b][c] * alpha(c) / sum(w * alpha(x) for x, w in edges[b].items())


def _walks(params, graph=None, per_node=None):
    graph = graph or csr()
    ids = np.arange(graph.num_nodes * params.num_walks)
    return [graph.names[w].tolist() for w in walk_batch(graph, ids, params)]


def _check(counts, exact, label):
    """Every observed conditional frequency within 4.5 standard errors (+0.005) of the exact one."""
    for context, observed in counts.items():
        n = sum(observed.values())
        assert n > 500, (label, context, n)
        for c, prob in exact(context).items():
            freq = observed.get(c, 0) / n
            tol = 4.5 * np.sqrt(prob * (1 - prob) / n) + 0.005
            assert abs(freq - prob) <= tol, (label, context, c, freq, prob)
        assert set(observed) <= set(exact(context)), (label, context, observed)


def test_deepwalk_transitions_follow_edge_weights():
    walks = _walks(WalkParams("deepwalk", num_walks=3000, walk_length=5, seed=7))
    counts = defaultdict(Counter)
    for w in walks:
        for b, c in zip(w, w[1:]):
            counts[b][c] += 1
    _check(counts, lambda b: {c: first_order(b, c) for c in EDGES[b]}, "deepwalk")
    assert set(counts) == {"a", "b", "c", "d", "f"}


@pytest.mark.parametrize(("p", "q"), [(0.5, 2.0), (2.0, 0.5), (0.25, 4.0), (4.0, 0.25)])
def test_node2vec_second_order_transitions_are_exact(p, q):
    walks = _walks(WalkParams("node2vec", num_walks=4000, walk_length=5, p=p, q=q, seed=11))
    counts = defaultdict(Counter)
    for w in walks:
        for a, b, c in zip(w, w[1:], w[2:]):
            counts[(a, b)][c] += 1
    enough = {k: v for k, v in counts.items() if sum(v.values()) > 500}
    assert len(enough) >= 6
    _check(
        enough, lambda ab: {c: second_order(ab[0], ab[1], c, p, q) for c in EDGES[ab[1]]}, f"node2vec {p},{q}"
    )


def test_walks_stop_at_dead_ends_and_nodes_without_out_edges_walk_alone():
    for method in catalog.WALK_METHODS:
        walks = _walks(WalkParams(method, num_walks=50, walk_length=8, p=0.5, q=2.0))
        for w in walks:
            assert len(w) == 8 or w[-1] == "e", w
            assert all(b in EDGES[a] for a, b in zip(w, w[1:])), w
        assert [w for w in walks if w[0] == "e"] == [["e"]] * 50


def test_same_seed_same_walks_other_seed_other_walks():
    one = _walks(WalkParams("node2vec", num_walks=20, walk_length=10, p=0.5, q=2.0, seed=3))
    assert one == _walks(WalkParams("node2vec", num_walks=20, walk_length=10, p=0.5, q=2.0, seed=3))
    assert one != _walks(WalkParams("node2vec", num_walks=20, walk_length=10, p=0.5, q=2.0, seed=4))


# -- walks on Spark ---------------------------------------------------------------------------------
def _graph_df(spark):
    rows = [(s, d, w) for s, out in EDGES.items() for d, w in out.items()]
    return spark.createDataFrame(rows, "src_item string, dst_item string, weight double")


@pytest.mark.parametrize("method", ["deepwalk", "node2vec"])
def test_spark_walks_are_the_same_for_any_partitioning(spark, tmp_path, method):
    params = WalkParams(method, num_walks=7, walk_length=6, p=0.5, q=2.0, seed=5)
    runs = []
    for parts in (1, 3):
        df = random_walks(_graph_df(spark), params, f"file://{tmp_path}/scratch{parts}", partitions=parts)
        runs.append({r.walk_id: r.items for r in df.collect()})
    assert runs[0] == runs[1]
    assert len(runs[0]) == 6 * 7  # every node starts num_walks walks, "e" and "f" included
    direct = _walks(params)
    assert [runs[0][i] for i in range(len(direct))] == direct
    assert {r.method for r in random_walks(_graph_df(spark), params, f"file://{tmp_path}/s").collect()} == {
        method
    }
