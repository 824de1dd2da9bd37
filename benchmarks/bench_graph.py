"""Walks and embeddings side by side with single-machine peers, on one generated item graph.

- Random walks: our Spark walks (local[2]) against pecanpy (2 workers, its PreComp and SparseOTF
  modes), DeepWalk (p = q = 1) and Node2vec (BFS-like p=1, q=2; DFS-like p=1, q=0.5): steps/s.
- Skip-gram: our SGNS (PyTorch, one process and two Horovod ranks) against gensim Word2Vec (sg=1,
  2 workers) with the same hyper-parameters on the same walks: training words/s and precision@10 of
  the vectors against the planted item clusters (and MLlib Word2Vec as the Spark baseline).

Usage: .venv/bin/python benchmarks/bench_graph.py [--users 20000 --items 5000 --days 7]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from common import PeakMemory, Timer, bench_session, print_table, save


def build(spark, lake, args):
    from recsys_spark.generate import GenerateConfig, generate_tables
    from recsys_spark.graph.item_graph import item_graph

    cfg = GenerateConfig(users=args.users, items=args.items, days=args.days, seed=7)
    for name, df in generate_tables(spark, cfg).items():
        lake.overwrite(name, df)
    events = lake.read("events")
    last_day = lake.latest_date()
    lake.overwrite("item_graph", item_graph(events, last_day))
    return lake.read("item_graph"), events.count()


def bench_walks(spark, lake, graph, args, workdir):
    from pecanpy import pecanpy as pp

    from recsys_spark.graph.walks import WalkParams, random_walks

    edg = os.path.join(workdir, "graph.edg")
    graph.toPandas()[["src_item", "dst_item", "weight"]].to_csv(edg, sep="\t", header=False, index=False)
    rows = []
    for label, method, p, q in [
        ("deepwalk", "deepwalk", 1.0, 1.0),
        ("node2vec BFS p=1 q=2", "node2vec", 1.0, 2.0),
        ("node2vec DFS p=1 q=0.5", "node2vec", 1.0, 0.5),
    ]:
        params = WalkParams(method, args.num_walks, args.walk_length, p, q, seed=1)
        scratch = f"file://{workdir}/scratch-{method}-{q}"
        with Timer() as ours:
            walks = random_walks(graph, params, scratch)
            walks.write.mode("overwrite").parquet(f"file://{workdir}/walks-{method}-{q}")
        steps = (
            spark.read.parquet(f"file://{workdir}/walks-{method}-{q}")
            .selectExpr("sum(size(items))")
            .first()[0]
        )
        row = {"walks": label, "ours s": ours.seconds, "ours steps/s": steps / ours.seconds}
        for mode in ("PreComp", "SparseOTF"):
            g = getattr(pp, mode)(p=p, q=q, workers=2, verbose=False, extend=False)
            with Timer() as peer:
                g.read_edg(edg, weighted=True, directed=True)
                if mode == "PreComp":
                    g.preprocess_transition_probs()
                peer_walks = g.simulate_walks(num_walks=args.num_walks, walk_length=args.walk_length)
            peer_steps = sum(len(w) for w in peer_walks)
            row[f"pecanpy {mode} steps/s"] = peer_steps / peer.seconds
        best = max(row["pecanpy PreComp steps/s"], row["pecanpy SparseOTF steps/s"])
        row["ours / best peer"] = row["ours steps/s"] / best
        rows.append(row)
    return rows


def bench_sgns(spark, lake, args, workdir):
    from gensim.models import Word2Vec

    from recsys_spark.graph.embed import EmbedConfig, mllib_word2vec, sgns_embeddings
    from recsys_spark.graph.quality import precision_at_k, random_precision
    from recsys_spark.graph.walks import WalkParams, random_walks

    walks = random_walks(
        lake.read("item_graph"),
        WalkParams("deepwalk", args.num_walks, args.walk_length, seed=1),
        f"file://{workdir}/s",
    )
    walks.write.parquet(f"file://{workdir}/sgns-walks")
    walks = spark.read.parquet(f"file://{workdir}/sgns-walks").cache()
    sentences = [list(r.items) for r in walks.select("items").toLocalIterator()]
    tokens = sum(len(s) for s in sentences)
    truth = {r.item_id: r.cluster for r in lake.read("truth_items").collect()}
    rng = np.random.default_rng(0)
    sample = rng.choice(
        sorted({w for s in sentences for w in s}),
        size=min(2000, len({w for s in sentences for w in s})),
        replace=False,
    )
    clusters = np.array([truth[i] for i in sample])

    def precision(lookup) -> float:
        return precision_at_k(np.stack([lookup(i) for i in sample]), clusters, 10)

    shared = dict(
        dim=args.dim,
        window=5,
        negative=5,
        epochs=args.epochs,
        subsample=1e-3,
        learning_rate=0.025,
        min_count=1,
    )
    rows = []
    with Timer() as t:
        model = Word2Vec(
            sentences,
            vector_size=args.dim,
            window=5,
            negative=5,
            sample=1e-3,
            alpha=0.025,
            min_alpha=0.0001,
            epochs=args.epochs,
            min_count=1,
            sg=1,
            workers=2,
            seed=1,
        )
    rows.append(
        {
            "trainer": "gensim Word2Vec sg=1, 2 workers",
            "train s": t.seconds,
            "words/s": tokens * args.epochs / t.seconds,
            "precision@10": precision(lambda i: model.wv[i]),
        }
    )
    for label, launcher, nproc in [
        ("ours SGNS, 1 process", "local", 1),
        ("ours SGNS, 2 Horovod ranks", "horovod", 2),
    ]:
        cfg = EmbedConfig(launcher=launcher, np=nproc, batch_size=1024, seed=1, **shared)
        with Timer() as t:
            vectors, results = sgns_embeddings(spark, walks, cfg, f"file://{workdir}/emb-{launcher}")
            got = {r.item_id: np.array(r.vector) for r in vectors.collect()}
        train = max(r["seconds"] for r in results)
        rows.append(
            {
                "trainer": label,
                "total s": t.seconds,
                "train s": train,
                "words/s": tokens * args.epochs / train,
                "precision@10": precision(got.__getitem__),
            }
        )
    with Timer() as t:
        mllib = {
            r.item_id: np.array(r.vector)
            for r in mllib_word2vec(walks, EmbedConfig(**shared, seed=1)).collect()
        }
    rows.append(
        {
            "trainer": "Spark MLlib Word2Vec",
            "train s": t.seconds,
            "words/s": tokens * args.epochs / t.seconds,
            "precision@10": precision(mllib.__getitem__),
        }
    )
    rows.append({"trainer": "random neighbours", "precision@10": random_precision(clusters)})
    gensim_speed = rows[0]["words/s"]
    for r in rows:
        if "words/s" in r:
            r["speed vs gensim"] = r["words/s"] / gensim_speed
    return rows, tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--num-walks", type=int, default=10)
    parser.add_argument("--walk-length", type=int, default=40)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    spark = bench_session(cores=2)
    from recsys_spark.lake import Lake

    with tempfile.TemporaryDirectory() as workdir:
        lake = Lake(spark, os.path.join(workdir, "lake"))
        with Timer() as t:
            graph, events = build(spark, lake, args)
        nodes = graph.selectExpr("src_item AS n").union(graph.selectExpr("dst_item")).distinct().count()
        edges = graph.count()
        print(f"graph from {events:,} generated events: {nodes:,} items, {edges:,} edges ({t.seconds:.0f}s)")
        with PeakMemory() as mem:
            walk_rows = bench_walks(spark, lake, graph, args, workdir)
        print_table(
            f"Random walks: {args.num_walks} per node, length {args.walk_length}",
            walk_rows,
            list(walk_rows[0]),
        )
        sgns_rows, tokens = bench_sgns(spark, lake, args, workdir)
        cols = ["trainer", "total s", "train s", "words/s", "speed vs gensim", "precision@10"]
        print_table(
            f"Skip-gram on {tokens:,} walk tokens, dim {args.dim}, {args.epochs} epochs", sgns_rows, cols
        )
        save(
            "graph",
            {
                "args": vars(args),
                "nodes": nodes,
                "edges": edges,
                "walks": walk_rows,
                "sgns": sgns_rows,
                "peak_mb": mem.total_mb,
            },
        )


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"\nbenchmark finished in {time.time() - start:.0f}s")
