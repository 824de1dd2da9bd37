"""Run every benchmarks/bench_*.py, each in its own process, and summarise (`make bench`).

`--quick` (the default) runs each benchmark at a small size, so the whole set finishes in a few
minutes on 2 cores and proves the benchmarks run; its figures are not the README's. `--full` runs
the sizes documented in benchmarks/README.md (hours on 2 cores; run it on a quiet machine).
Each benchmark's output streams through as it runs; at the end its tables (ours against the peer)
are printed again with a summary, and the exit code is 1 if any benchmark failed. A benchmark
whose peer libraries are not installed is skipped (exit 0), or counts as failed with `--strict`.

Usage: .venv/bin/python benchmarks/run_all.py [--quick | --full] [--only graph similarity ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Bench:
    name: str
    quick: list[str]
    full: list[str]
    peers: list[str] = field(default_factory=list)  # modules the script imports unconditionally


# Quick sizes: a few minutes each on a shared 2-core machine. Full sizes: benchmarks/README.md.
BENCHES = [
    Bench("ingest", ["--sizes", "100000"], ["--sizes", "1000000", "10000000"]),
    Bench(
        "similarity",
        ["--events", "100000"],
        ["--events", "1000000", "5000000", "20000000"],
    ),
    Bench(
        "graph",
        ["--users", "1000", "--items", "300", "--days", "2", "--num-walks", "2", "--walk-length", "10"]
        + ["--dim", "16", "--epochs", "1"],
        ["--users", "20000", "--items", "5000"],
        peers=["pecanpy", "gensim"],
    ),
    Bench(
        "training",
        ["--users", "1000", "--items", "300", "--days", "1", "--batch-size", "512"],
        ["--users", "10000", "--items", "3000", "--days", "3", "--model", "ranker", "--batch-size", "1024"],
    ),
    Bench(
        "streaming",
        ["--rate", "100", "--seconds", "10", "--backlog-files", "20", "--batch-files", "10"]
        + ["--peer-files", "4"],
        ["--rate", "200", "--seconds", "60", "--backlog-files", "200"],
    ),
]


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed (exit N), timed out, skipped (...)
    seconds: float
    report: list[str]


def report_lines(stdout: str) -> list[str]:
    """The result tables of one benchmark's output: markdown tables, ratio lines, or else its tail."""
    lines = stdout.splitlines()
    keep = [
        line
        for line in lines
        if line.startswith(("## ", "|")) or (" / " in line and ":" in line and not line.startswith("row:"))
    ]
    if keep:
        return keep
    # bench_similarity prints one pandas table at the end.
    tail = [
        line
        for line in lines
        if line.strip() and not line.startswith(("row:", "results written", "benchmark finished"))
    ]
    return tail[-15:]


def run_one(bench: Bench, args: list[str], timeout: float, strict: bool) -> Outcome:
    missing = [m for m in bench.peers if importlib.util.find_spec(m) is None]
    if missing:
        status = f"skipped (peer not installed: {', '.join(missing)}; see benchmarks/README.md)"
        return Outcome(bench.name, ("failed: " if strict else "") + status, 0.0, [])
    script = HERE / f"bench_{bench.name}.py"
    command = [sys.executable, str(script), *args]
    print(f"\n==== {bench.name}: {' '.join(command[1:])}", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    started = time.time()
    captured: list[str] = []
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # stream through, keep a copy for the summary
            sys.stdout.write(line)
            sys.stdout.flush()
            captured.append(line)
            if time.time() - started > timeout:
                raise subprocess.TimeoutExpired(command, timeout)
        code = proc.wait(timeout=max(1.0, timeout - (time.time() - started)))
        status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, by its handle
        proc.wait()
        status = f"failed (timed out after {timeout:.0f}s)"
    return Outcome(bench.name, status, time.time() - started, report_lines("".join(captured)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="Small sizes (the default).")
    size.add_argument("--full", action="store_true", help="The sizes documented in benchmarks/README.md.")
    names = [b.name for b in BENCHES]
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"Run only these: {names}.")
    parser.add_argument(
        "--timeout", type=float, default=None, help="Seconds per benchmark (quick 900, full none)."
    )
    parser.add_argument("--strict", action="store_true", help="A benchmark skipped for a missing peer fails.")
    args = parser.parse_args(argv)
    timeout = args.timeout or (float("inf") if args.full else 900.0)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    outcomes = [run_one(b, b.full if args.full else b.quick, timeout, args.strict) for b in chosen]

    print(f"\n======== benchmark summary ({'full' if args.full else 'quick'} sizes)")
    for outcome in outcomes:
        if outcome.report:
            print(f"\n---- {outcome.name}")
            print("\n".join(outcome.report))
    print()
    width = max(len(o.name) for o in outcomes)
    for outcome in outcomes:
        print(f"{outcome.name.ljust(width)}  {outcome.seconds:7.0f}s  {outcome.status}")
    failed = [o.name for o in outcomes if o.status.startswith("failed")]
    if failed:
        print(f"\n{len(failed)} benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
