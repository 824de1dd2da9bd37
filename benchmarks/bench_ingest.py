"""Generator and ingest throughput on local[2], with the driver's peak memory.

For each size (default 1M and 10M events):
- generate: `recsys-spark generate` into a fresh lake (events/s; peak RSS of the driver JVM + Python);
- ingest: `recsys-spark ingest --format canonical` of the same events as one CSV file into a fresh lake;
- peer: single-process pandas (pyarrow CSV engine) validating the same checks and writing the same
  Delta table with `deltalake.write_deltalake` — what a hand-rolled script would do.

Usage: .venv/bin/python benchmarks/bench_ingest.py [--sizes 1000000 10000000]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time

from common import PeakMemory, Timer, bench_session, print_table, save

EVENTS = ["impression", "click", "like", "share", "comment", "follow", "purchase"]


def peer_ingest(csv_path: str, table_path: str) -> int:
    import deltalake
    import pandas as pd

    df = pd.read_csv(csv_path, engine="pyarrow", dtype=str)
    df = df.dropna(subset=["user_id", "item_id"])
    df = df[df["event"].isin(EVENTS)]
    # format="ISO8601": without it pandas infers one format from the first row and silently turns
    # timestamps without fractional seconds into NaT (0.1% of these events, seen in this benchmark).
    df["ts"] = pd.to_datetime(df["ts"], utc=True, errors="coerce", format="ISO8601")
    df = df.dropna(subset=["ts"])
    df["dwell_ms"] = pd.to_numeric(df["dwell_ms"], errors="coerce").astype("Int64")
    df = df[~(df["dwell_ms"] < 0).fillna(False)]
    df = df.drop_duplicates(subset=["user_id", "item_id", "event", "ts", "session_id"])
    df["dt"] = df["ts"].dt.date
    deltalake.write_deltalake(table_path, df, partition_by=["dt"], mode="overwrite")
    return len(df)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", default=None, help="Scratch folder (default: a temporary one).")
    args = parser.parse_args()

    from recsys_spark.generate import config_for_events, generate_tables
    from recsys_spark.ingest.job import IngestConfig, ingest
    from recsys_spark.lake import Lake

    spark = bench_session(cores=2)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-ingest-")
    rows = []
    try:
        for size in args.sizes:
            cfg = config_for_events(size, seed=1)
            gen_lake = Lake(spark, os.path.join(workdir, f"gen-{size}"))
            with PeakMemory() as gen_mem, Timer() as gen_t:
                for name, df in generate_tables(spark, cfg).items():
                    gen_lake.overwrite(name, df)
            events = gen_lake.read("events")
            n_events = events.count()

            csv_dir = os.path.join(workdir, f"events-{size}.csvdir")
            events.drop("dt").coalesce(1).write.option("header", True).csv(f"file://{csv_dir}")
            csv_path = os.path.join(workdir, f"events-{size}.csv")
            shutil.move(glob.glob(os.path.join(csv_dir, "part-*.csv"))[0], csv_path)
            shutil.rmtree(csv_dir)

            ing_lake = Lake(spark, os.path.join(workdir, f"ingest-{size}"))
            with PeakMemory() as ing_mem, Timer() as ing_t:
                summary = ingest(
                    IngestConfig(events=csv_path, format="canonical", run_id="bench"), spark, ing_lake
                )
            with PeakMemory() as peer_mem, Timer() as peer_t:
                peer_rows = peer_ingest(csv_path, os.path.join(workdir, f"peer-{size}"))
            rows.append(
                {
                    "events": n_events,
                    "generate s": gen_t.seconds,
                    "generate events/s": n_events / gen_t.seconds,
                    "generate peak MB": gen_mem.total_mb,
                    "ingest s": ing_t.seconds,
                    "ingest events/s": summary.rows_read / ing_t.seconds,
                    "ingest peak MB": ing_mem.total_mb,
                    "peer (pandas+delta-rs) events/s": peer_rows / peer_t.seconds,
                    "peer peak MB": peer_mem.python_peak / 2**20,
                    "ingest speed / peer": (summary.rows_read / ing_t.seconds) / (peer_rows / peer_t.seconds),
                    "written": summary.events_written,
                    "peer written": peer_rows,
                }
            )
            for path in (gen_lake.root, ing_lake.root, csv_path, os.path.join(workdir, f"peer-{size}")):
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table("Generator and ingest throughput, local[2]", rows, list(rows[0]))
    save("ingest", {"rows": rows})


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"\nbenchmark finished in {time.time() - start:.0f}s")
