"""Streaming ingest latency and throughput: one `recsys-spark stream` on local[2].

Latency of a file = from its landing (the rename into `_landing/events/`) to the commit of the
`stream_counters` version of the micro-batch that read it; by then its events are queryable in
`events` (committed just before) and counted in the incremental state. Which batch read which file
comes from Spark's file-source log in the checkpoint; commit times and batch ids from the Delta logs.

1. latency: `--rate` events/s in small files (`--events-per-file`) for `--seconds`: median and p95;
2. throughput: a backlog of `--backlog-files` files processed in micro-batches of at most
   `--batch-files` files; sustained events/s = events of the backlog's batches / their wall time
   (the first batch, which includes the listing of the whole backlog, excluded). A steady rate below
   it is kept up with: each batch then finishes before the next trigger;
3. check: `--check-fraction` of that rate landed steadily for `--seconds`: the latency must stay
   bounded (p95 of the last third against the first third);
4. peer, same files, same run (after the stream stopped): `recsys-spark ingest` of each file on its
   own, in-process with a warm session (what a cron job ingesting each file as it lands would do; no
   incremental state): per-file latency and events/s.

Usage: .venv/bin/python benchmarks/bench_streaming.py [--rate 200 --seconds 60 --backlog-files 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Timer, bench_session, print_table, save

EVENTS = ["impression", "impression", "impression", "click", "click", "like", "share", "purchase"]


def make_file(index: int, n: int, day: dt.date, rng: random.Random) -> bytes:
    """`n` canonical CSV events of one day with unique keys (each file its own second range)."""
    base = dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() + (index * 3600) % 80000
    lines = ["user_id,item_id,event,ts,session_id,dwell_ms"]
    for k in range(n):
        user = f"u{rng.randrange(5000)}"
        item = f"i{int(rng.paretovariate(1.2)) % 2000}"
        ts = dt.datetime.fromtimestamp(base + k * 0.001, dt.timezone.utc)  # session_id makes keys unique
        lines.append(
            f"{user},{item},{rng.choice(EVENTS)},{ts.strftime('%Y-%m-%dT%H:%M:%S.%fZ')},s{index}-{user},"
            f"{rng.randrange(60000)}"
        )
    return ("\n".join(lines) + "\n").encode()


class Lander:
    """Lands prepared files (write under a hidden name, rename) and records each landing time."""

    def __init__(self, landing: Path):
        self.landing = landing
        self.landed: dict[str, float] = {}
        landing.mkdir(parents=True, exist_ok=True)

    def land(self, name: str, data: bytes) -> None:
        tmp = self.landing / f".{name}"
        tmp.write_bytes(data)
        os.replace(tmp, self.landing / name)
        self.landed[name] = time.time()

    def steady(self, files: list[tuple[str, bytes]], per_second: float) -> None:
        start = time.time()
        for n, (name, data) in enumerate(files):
            delay = start + n / per_second - time.time()
            if delay > 0:
                time.sleep(delay)
            self.land(name, data)


def batches_of_files(checkpoint: Path) -> dict[str, int]:
    """File name → micro-batch id, from Spark's file-source log (`sources/0/<batch>[.compact]`)."""
    out: dict[str, int] = {}
    for entry in (checkpoint / "query" / "sources" / "0").iterdir():
        if entry.name.startswith("."):
            continue
        for line in entry.read_text().splitlines()[1:]:  # line 1 is the log version ("v1")
            record = json.loads(line)
            out[record["path"].rsplit("/", 1)[-1]] = int(record["batchId"])
    return out


def commit_times(table: str) -> dict[int, float]:
    """Micro-batch id → commit time (s) of the table's stream commit for that batch."""
    from deltalake import DeltaTable

    out: dict[int, float] = {}
    for entry in DeltaTable(table).history():
        if entry.get("recsys.stream.batch_id") is not None:
            out[int(entry["recsys.stream.batch_id"])] = entry["timestamp"] / 1000.0
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_stream(lake: Path, log: Path, trigger: float, batch_files: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "recsys_spark.cli",
        "stream",
        "--lake",
        str(lake),
        "--master",
        "local[2]",
    ]
    command += ["--trigger-seconds", str(trigger), "--max-files-per-trigger", str(batch_files)]
    env = {**os.environ, "RECSYS_DRIVER_MEMORY": os.environ.get("RECSYS_DRIVER_MEMORY", "2g")}
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def wait_counted(lake: Path, names: list[str], timeout: float) -> None:
    """Until every file in `names` is in a batch whose stream_counters commit exists."""
    deadline = time.time() + timeout
    checkpoint = lake / "_checkpoints" / "stream"
    while time.time() < deadline:
        try:
            batch_of = batches_of_files(checkpoint)
            done = commit_times(str(lake / "stream_counters"))
            if all(name in batch_of and batch_of[name] in done for name in names):
                return
        except Exception:  # the checkpoint or the table may not exist yet; a log file may be half written
            pass
        time.sleep(1.0)
    raise TimeoutError(f"files not counted after {timeout}s")


def latencies(lake: Path, landed: dict[str, float], names: list[str]) -> list[float]:
    batch_of = batches_of_files(lake / "_checkpoints" / "stream")
    counted = commit_times(str(lake / "stream_counters"))
    return [counted[batch_of[n]] - landed[n] for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="Events/s of the latency phase.")
    parser.add_argument("--events-per-file", type=int, default=250)
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the latency and check phases.")
    parser.add_argument("--trigger-seconds", type=float, default=1.0)
    parser.add_argument("--backlog-files", type=int, default=200)
    parser.add_argument("--batch-files", type=int, default=40, help="maxFilesPerTrigger of the stream.")
    # Measured on 2 cores: a steady 50% of the backlog rate is kept up with, 80% is not.
    parser.add_argument("--check-fraction", type=float, default=0.5)
    parser.add_argument("--peer-files", type=int, default=30)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-streaming-"))
    lake = workdir / "lake"
    lander = Lander(lake / "_landing" / "events")
    rng = random.Random(7)
    day = dt.datetime.now(dt.timezone.utc).date()
    counter = iter(range(10**9))

    def files(n: int, tag: str) -> list[tuple[str, bytes]]:
        out = []
        for _ in range(n):
            i = next(counter)
            out.append((f"{tag}-{i:06d}.csv", make_file(i, args.events_per_file, day, rng)))
        return out

    log = workdir / "stream.log"
    stream = start_stream(lake, log, args.trigger_seconds, args.batch_files)
    results: dict = {
        "events_per_file": args.events_per_file,
        "trigger_seconds": args.trigger_seconds,
        "load_average_at_start": os.getloadavg(),  # the figures mean little on a busy machine
    }
    try:
        heartbeat = lake / "_checkpoints" / "stream" / "heartbeat.json"
        while not heartbeat.exists():
            if stream.poll() is not None:
                raise RuntimeError(f"stream exited:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        # Warm-up: the first batches compile Spark's code paths; not part of any figure.
        warm = files(4, "warm")
        lander.steady(warm, 2.0)
        wait_counted(lake, [n for n, _ in warm], 600)

        # 1. latency at a steady rate
        per_second = args.rate / args.events_per_file
        steady = files(max(1, int(per_second * args.seconds)), "steady")
        lander.steady(steady, per_second)
        wait_counted(lake, [n for n, _ in steady], 600)
        lat = latencies(lake, lander.landed, [n for n, _ in steady])
        results["latency"] = {
            "events_per_second": args.rate,
            "files": len(steady),
            "median_s": statistics.median(lat),
            "p95_s": percentile(lat, 0.95),
            "max_s": max(lat),
        }

        # 2. throughput: a backlog in bounded micro-batches
        backlog = files(args.backlog_files, "backlog")
        for name, data in backlog:
            lander.land(name, data)
        wait_counted(lake, [n for n, _ in backlog], 1800)
        batch_of = batches_of_files(lake / "_checkpoints" / "stream")
        counted = commit_times(str(lake / "stream_counters"))
        ids = sorted({batch_of[n] for n, _ in backlog})
        sizes = {b: sum(1 for n, _ in backlog if batch_of[n] == b) for b in ids}
        timed = ids[1:]  # batch ids[0] also listed the backlog; its predecessor's commit starts the clock
        events = sum(sizes[b] for b in timed) * args.events_per_file
        seconds = counted[timed[-1]] - counted[ids[0]]
        results["throughput"] = {
            "batches": len(ids),
            "files_per_batch": statistics.median(sizes.values()),
            "events_per_second": events / seconds,
            "seconds_per_batch": seconds / len(timed),
        }

        # 3. a steady rate just below the sustained one must be kept up with
        rate = args.check_fraction * results["throughput"]["events_per_second"]
        per_second = rate / args.events_per_file
        check = files(max(3, int(per_second * args.seconds)), "check")
        lander.steady(check, per_second)
        wait_counted(lake, [n for n, _ in check], 1800)
        lat = latencies(lake, lander.landed, [n for n, _ in check])
        third = max(1, len(lat) // 3)
        results["check"] = {
            "events_per_second": rate,
            "median_s": statistics.median(lat),
            "p95_s": percentile(lat, 0.95),
            "p95_first_third_s": percentile(lat[:third], 0.95),
            "p95_last_third_s": percentile(lat[-third:], 0.95),
        }
        results["check"]["kept_up"] = results["check"]["p95_last_third_s"] <= 1.5 * max(
            results["check"]["p95_first_third_s"], results["throughput"]["seconds_per_batch"]
        )
    finally:
        stream.send_signal(signal.SIGTERM)  # graceful: stops after the current micro-batch
        try:
            stream.wait(timeout=120)
        except subprocess.TimeoutExpired:
            stream.kill()
            stream.wait()

    # 4. the peer: batch ingest of each file as it lands, warm session, fresh lake, same files
    from recsys_spark.ingest.job import IngestConfig, ingest
    from recsys_spark.lake import Lake

    spark = bench_session(cores=2, driver_memory=os.environ.get("RECSYS_DRIVER_MEMORY", "2g"))
    peer_lake = Lake(spark, str(workdir / "peer-lake"))
    peer_files = [n for n, _ in steady][: args.peer_files]
    times = []
    for name in peer_files:
        with Timer() as t:
            ingest(IngestConfig(events=str(lander.landing / name), run_id="bench"), spark, peer_lake)
        times.append(t.seconds)
    warm_times = times[2:] or times  # the first calls compile Spark's code paths, as the stream's warm-up did
    results["peer"] = {
        "files": len(warm_times),
        "median_s": statistics.median(warm_times),
        "p95_s": percentile(warm_times, 0.95),
        "events_per_second": args.events_per_file * len(warm_times) / sum(warm_times),
    }
    spark.stop()

    lat, thr, chk, peer = results["latency"], results["throughput"], results["check"], results["peer"]
    rows = [
        {
            "what": f"stream, steady {lat['events_per_second']:,.0f} events/s",
            "median latency s": lat["median_s"],
            "p95 latency s": lat["p95_s"],
            "events/s": lat["events_per_second"],
        },
        {
            "what": f"stream, backlog in batches of {thr['files_per_batch']:g} files "
            f"({thr['seconds_per_batch']:.1f} s each)",
            "median latency s": "",
            "p95 latency s": "",
            "events/s": thr["events_per_second"],
        },
        {
            "what": f"stream, steady {args.check_fraction:.0%} of that (kept up: {chk['kept_up']})",
            "median latency s": chk["median_s"],
            "p95 latency s": chk["p95_s"],
            "events/s": chk["events_per_second"],
        },
        {
            "what": "peer: batch `ingest` of each file, warm session",
            "median latency s": peer["median_s"],
            "p95 latency s": peer["p95_s"],
            "events/s": peer["events_per_second"],
        },
    ]
    print_table("Streaming ingest on local[2]: landing -> events + stream_counters", rows, list(rows[0]))
    results["ratios"] = {
        "stream median latency / peer median per-file time": lat["median_s"] / peer["median_s"],
        "stream sustained events/s / peer events/s": thr["events_per_second"] / peer["events_per_second"],
    }
    for name, value in results["ratios"].items():
        print(f"{name}: {value:.2f}")
    results["load_average_at_end"] = os.getloadavg()
    print(
        f"load average at start {results['load_average_at_start']}, at end {results['load_average_at_end']}"
    )
    save("streaming", results)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"\nbenchmark finished in {time.time() - started:.0f}s")
