"""Time our Spark Swing and ItemCF against single-machine peers on synthetic power-law events.

    RECSYS_DRIVER_MEMORY=4g .venv/bin/python benchmarks/bench_similarity.py --events 200000 1000000

Peers are used when installed (they are not project dependencies): `implicit` (item-item
CosineRecommender) and `recfarm` (LibRecommender's Rust Swing and ItemCF). Top-K overlap is the mean,
over items, of |ours ∩ peer| / |ours| for the first `--top-k` neighbours; recfarm keeps its neighbour
lists inside Rust, so only its times are shown. Peers see the same interest weights, without our
caps, and recfarm's Swing has no user weights, so overlaps measure agreement, not correctness.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EVENT_TYPES = np.array(["impression", "click", "like", "comment", "share", "follow", "purchase"])
EVENT_P = np.array([0.45, 0.35, 0.07, 0.04, 0.03, 0.02, 0.04])


def synthetic_events(n_events: int, seed: int = 0) -> pd.DataFrame:
    """Users and items drawn from Zipf-like laws (rank^-0.9, rank^-1.1): a few very hot items, heavy users."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(100, n_events // 20), max(50, n_events // 50)

    def power_law(n: int, exponent: float) -> np.ndarray:
        p = np.arange(1, n + 1, dtype=float) ** -exponent
        return rng.choice(n, size=n_events, p=p / p.sum())

    start = np.datetime64("2026-03-01T00:00:00")
    return pd.DataFrame(
        {
            "user_id": pd.Series(power_law(n_users, 0.9)).map("u{:07d}".format),
            "item_id": pd.Series(power_law(n_items, 1.1)).map("i{:06d}".format),
            "event": EVENT_TYPES[rng.choice(len(EVENT_TYPES), size=n_events, p=EVENT_P)],
            "ts": start + rng.integers(0, 30 * 86400, size=n_events).astype("timedelta64[s]"),
        }
    )


def generated_events(spark, n_events: int, path: str) -> pd.DataFrame:
    """Events from our own generator (`recsys_spark.generate`, seed 1), written as Parquet at `path`."""
    from recsys_spark.generate import config_for_events, generate_tables

    events = generate_tables(spark, config_for_events(n_events, seed=1))["events"]
    events.select("user_id", "item_id", "event", "ts").write.parquet(path)
    return pd.read_parquet(path)


def run_ours(
    spark, path: str, algo: str, k: int, options, day: dt.date
) -> tuple[float, dict[str, list[str]]]:
    from pyspark.sql import functions as F

    from recsys_spark.similarity import (
        both_directions,
        interest_weights,
        itemcf_similarity,
        swing_similarity,
        top_k,
    )

    compute = {"swing": swing_similarity, "itemcf": itemcf_similarity}[algo]
    started = time.time()
    events = spark.read.parquet(path).withColumn("dt", F.to_date("ts"))
    inter = interest_weights(events, day, 0)
    ranked = top_k(
        both_directions(compute(inter, options), "item_id", "sim_item_id", "item_id", "sim_item_id"),
        "item_id",
        "sim_item_id",
        k,
    )
    rows = ranked.select("item_id", "sim_item_id", "rank").toPandas()
    seconds = time.time() - started
    lists = rows.sort_values(["item_id", "rank"]).groupby("item_id")["sim_item_id"].apply(list).to_dict()
    return seconds, lists


def interest_matrix(events: pd.DataFrame):
    import scipy.sparse as sp

    from recsys_spark.similarity import DEFAULT_WEIGHTS

    weighted = (
        events.assign(r=events["event"].map(DEFAULT_WEIGHTS)).groupby(["user_id", "item_id"])["r"].sum()
    )
    weighted = weighted[weighted > 0].reset_index()
    users, items = weighted["user_id"].astype("category"), weighted["item_id"].astype("category")
    matrix = sp.csr_matrix(
        (weighted["r"].to_numpy(np.float32), (users.cat.codes, items.cat.codes)),
        shape=(len(users.cat.categories), len(items.cat.categories)),
    )
    return matrix, list(items.cat.categories)


def run_implicit(matrix, names, k: int) -> tuple[float, dict[str, list[str]]] | None:
    try:
        from implicit.nearest_neighbours import CosineRecommender
    except ImportError:
        return None
    started = time.time()
    model = CosineRecommender(K=k + 1)
    model.fit(matrix, show_progress=False)
    ids, scores = model.similar_items(np.arange(matrix.shape[1]), N=k + 1)
    seconds = time.time() - started
    lists = {}
    for row, (neigh, sc) in enumerate(zip(ids, scores, strict=True)):
        lists[names[row]] = [names[j] for j, s in zip(neigh, sc, strict=True) if j != row and s > 0][:k]
    return seconds, lists


def run_recfarm(matrix, algo: str, k: int) -> float | None:
    try:
        import recfarm
    except ImportError:
        return None

    @dataclass
    class Sparse:  # the shape LibRecommender hands to recfarm
        sparse_indices: list
        sparse_indptr: list
        sparse_data: list

    def sparse(m):
        return Sparse(m.indices.tolist(), m.indptr.tolist(), m.data.tolist())

    started = time.time()
    binary = matrix.copy()
    binary.data[:] = 1.0
    by_user, by_item = sparse(binary), sparse(binary.T.tocsr())
    consumed = {
        u: binary.indices[binary.indptr[u] : binary.indptr[u + 1]].tolist() for u in range(binary.shape[0])
    }
    n_users, n_items = binary.shape
    if algo == "swing":
        model = recfarm.Swing(k, 1.0, 100_000_000, n_users, n_items, by_user, by_item, consumed, 0.0)
        model.compute_swing(2)
    else:
        model = recfarm.ItemCF("ranking", k, n_users, n_items, 1, by_user, by_item, consumed, 0.0)
        model.compute_similarities(True, 2)
    return time.time() - started


def overlap(ours: dict[str, list[str]], peer: dict[str, list[str]]) -> float:
    shares = [len(set(lst) & set(peer.get(item, []))) / len(lst) for item, lst in ours.items() if lst]
    return float(np.mean(shares)) if shares else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000], help="Event counts to time.")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument(
        "--source",
        default="generated",
        choices=["generated", "zipf"],
        help="generated: recsys-spark's synthetic generator; zipf: independent power-law draws (no structure).",
    )
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--peers",
        nargs="*",
        default=["implicit", "recfarm-itemcf", "recfarm-swing"],
        choices=["implicit", "recfarm-itemcf", "recfarm-swing"],
        help="Peers to time (recfarm's Swing grows fastest with size: leave it out at 20M).",
    )
    parser.add_argument("--algos", nargs="+", default=["itemcf", "swing"], choices=["itemcf", "swing"])
    parser.add_argument(
        "--uncapped",
        action="store_true",
        help="Lift our user/item caps, to compare like with like (slow on hot items).",
    )
    args = parser.parse_args(argv)

    from recsys_spark.session import spark_session

    spark = spark_session("bench-similarity", master=args.master)
    from recsys_spark.similarity.job import SimilarityConfig

    # The job's own defaults, so the benchmark measures exactly what `recsys-spark similarity` runs.
    options = SimilarityConfig()
    if args.uncapped:
        options = dataclasses.replace(options, max_users_per_item=10**9, max_user_items=10**9)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.events:
            path = os.path.join(tmp, f"events_{n}.parquet")
            if args.source == "generated":
                events = generated_events(spark, n, path)
            else:
                events = synthetic_events(n)
                events.to_parquet(path, index=False)
            day = pd.Timestamp(events["ts"].max()).date()
            matrix, names = interest_matrix(events)
            for algo in args.algos:
                ours_s, ours = run_ours(spark, path, algo, args.top_k, options, day)
                rows.append(
                    dict(
                        events=len(events),
                        algo=algo,
                        impl="recsys-spark",
                        seconds=ours_s,
                        ratio=float("nan"),
                        overlap=float("nan"),
                    )
                )
                peers = []
                if (
                    algo == "itemcf"
                    and "implicit" in args.peers
                    and (got := run_implicit(matrix, names, args.top_k))
                ):
                    peers.append(("implicit", got[0], overlap(ours, got[1])))
                if f"recfarm-{algo}" in args.peers:
                    try:
                        if (secs := run_recfarm(matrix, algo, args.top_k)) is not None:
                            peers.append(("recfarm", secs, float("nan")))
                    except (
                        ValueError,
                        OverflowError,
                    ) as exc:  # seen at 20M: an integer overflow inside recfarm
                        print(f"recfarm {algo} failed at {len(events)} events: {exc}", flush=True)
                for name, secs, share in peers:
                    rows.append(
                        dict(
                            events=len(events),
                            algo=algo,
                            impl=name,
                            seconds=secs,
                            ratio=ours_s / secs,
                            overlap=share,
                        )
                    )
                print(f"done: {len(events)} events, {algo}: ours {ours_s:.1f}s", file=sys.stderr, flush=True)
                for row in rows[-1 - len(peers) :]:
                    print("row:", row, flush=True)  # partial results survive a later failure
    table = pd.DataFrame(rows)
    table["events/s"] = (table["events"] / table["seconds"]).round(0)
    table = table.rename(columns={"ratio": "ours/peer", "overlap": f"top{args.top_k} overlap"})
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    table.to_json(os.path.join(out, "similarity.json"), orient="records", indent=2)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
