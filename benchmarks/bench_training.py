"""Training throughput: Petastorm loader vs what the model consumes, 1 vs 2 Horovod ranks, peak memory.

On one generated lake: `samples` for a day, then the prepared training store is read and trained on
in these ways, all on the same rows:

- loader only: Petastorm `make_batch_reader` through our shuffle buffer (`iterate_shard`), 1 rank,
  no model: the rows/s the input pipeline can deliver;
- peer: plain single-process PyTorch with the whole store in memory (a shuffled index over tensors),
  the same model, batch size and optimizer: what the model alone consumes, no loader, no collectives;
- ours: `train_model` with 1 Horovod rank and with 2 Horovod ranks (Gloo, gradients averaged each
  step): rows/s over the epoch, and each rank's peak RSS.

Usage: .venv/bin/python benchmarks/bench_training.py [--users 20000 --items 5000 --model ranker]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import tempfile
import time

import numpy as np
from common import Timer, bench_session, print_table, save

from recsys_spark import catalog


def prepare(spark, lake, args, workdir):
    """Generated lake -> samples of the last day -> the encoded store the ranks read."""
    from recsys_spark import cli
    from recsys_spark.train.job import TrainConfig
    from recsys_spark.train.registry import Registry

    root = lake.root
    gen = ["generate", "--lake", root, "--users", str(args.users), "--items", str(args.items)]
    assert cli.main([*gen, "--days", str(args.days), "--seed", "7"], spark=spark) == 0
    day = lake.latest_date()
    assert cli.main(["stats", "--lake", root, "--date", str(day - dt.timedelta(days=1))], spark=spark) == 0
    samples = ["samples", "--lake", root, "--date", str(day), "--hard-negative-channel", "none"]
    assert cli.main(samples, spark=spark) == 0
    table = "recall_samples" if args.model == "two_tower" else "rank_samples"
    rows = lake.read(table).filter(f"dt = '{day}'")
    cfg = TrainConfig(lake=root, date=day, model=args.model, np=2)
    staging = Registry.for_model(lake, args.model).staging_url()
    return cfg, rows, day, staging


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--model", choices=list(catalog.MODELS), default="ranker")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    from recsys_spark.distributed import launch
    from recsys_spark.lake.delta import Lake
    from recsys_spark.train import job as train_job
    from recsys_spark.train.data import iterate_shard
    from recsys_spark.train.loop import train_model

    spark = bench_session(cores=2, driver_memory="6g")
    with tempfile.TemporaryDirectory() as workdir:
        lake = Lake(spark, os.path.join(workdir, "lake"))
        with Timer() as t:
            cfg, samples, day, staging = prepare(spark, lake, args, workdir)
        print(f"lake and samples: {samples.count():,} {args.model} rows ({t.seconds:.0f}s)")

        cfg.batch_size = args.batch_size
        spec = train_job.prepare_training(
            cfg, spark, lake, samples, day, None, staging, f"file://{workdir}/scratch"
        )
        spec.update(epochs=1, out_dir=f"file://{workdir}/out")
        n_rows = spark.read.parquet(spec["store_url"]).count()

        results = []
        with Timer() as t:
            loaded = sum(
                len(b["row_id"]) for b in iterate_shard(spec["store_url"], 0, 1, args.batch_size, 0, 1)
            )
        loader_rps = loaded / t.seconds
        results.append(
            {"run": "Petastorm loader only (1 reader)", "rows/s": loader_rps, "peak RSS MB/worker": None}
        )

        peer_rps, peer_rss = in_memory_peer(spec, args.batch_size)
        results.append(
            {"run": "peer: in-memory PyTorch, 1 process", "rows/s": peer_rps, "peak RSS MB/worker": peer_rss}
        )
        for np_ in (1, 2):
            out = launch(train_model, {"spec": spec}, num_proc=np_, launcher="horovod")
            seconds = max(r["seconds"] for r in out)
            rows = sum(r["rows"] for r in out)
            assert rows == n_rows, (rows, n_rows)
            results.append(
                {
                    "run": f"ours: {np_} Horovod rank(s), Petastorm",
                    "rows/s": rows / seconds,
                    "peak RSS MB/worker": max(r["peak_rss_mb"] for r in out),
                }
            )
        for row in results:
            row["vs peer"] = row["rows/s"] / peer_rps
        print_table(
            f"{args.model}: one epoch over {n_rows:,} rows, batch {args.batch_size} per rank, local[2]",
            results,
            ["run", "rows/s", "vs peer", "peak RSS MB/worker"],
        )
        save("training", {"args": vars(args), "rows": n_rows, "results": results})


def in_memory_peer(spec: dict, batch_size: int) -> tuple[float, float]:
    """The same model and optimizer on tensors already in memory: no loader, no collectives."""
    import torch

    from recsys_spark.train.data import iterate_shard
    from recsys_spark.train.loop import _tensors, build_model, log_q, set_item_features

    torch.set_num_threads(os.cpu_count() or 1)
    batches = list(iterate_shard(spec["store_url"], 0, 1, 10**9, 0, 1))  # one batch = everything
    data = _tensors(batches[0])
    model = build_model(spec)
    set_item_features(model, spec["items_url"])
    q = log_q(spec["freq_url"], model.sizes.n_items) if spec["kind"] == "two_tower" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["learning_rate"])
    n = len(data["row_id"])
    order = torch.randperm(n)
    start = time.time()
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        batch = {k: v[idx] for k, v in data.items()}
        optimizer.zero_grad()
        loss = model.loss(batch, q) if q is not None else model.loss(batch)
        loss.backward()
        optimizer.step()
    return n / (time.time() - start), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


if __name__ == "__main__":
    start = time.time()
    np.random.seed(0)
    main()
    print(f"\nbenchmark finished in {time.time() - start:.0f}s")
