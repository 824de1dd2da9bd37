"""Shared benchmark helpers: a local[N] session, peak-memory sampling, and result tables."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))


def bench_session(cores: int = 2, driver_memory: str = "6g"):
    from recsys_spark.session import spark_session

    os.environ.setdefault("RECSYS_DRIVER_MEMORY", driver_memory)
    return spark_session(app_name="recsys-spark-bench", master=f"local[{cores}]")


@dataclass
class PeakMemory:
    """Peak resident memory of this Python process and of its child processes (the Spark driver JVM
    in local mode, which also runs the executors), sampled every `interval` seconds."""

    interval: float = 0.1
    python_peak: int = 0
    children_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.python_peak = max(self.python_peak, me.memory_info().rss)
                kids = sum(c.memory_info().rss for c in me.children(recursive=True))
                self.children_peak = max(self.children_peak, kids)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def total_mb(self) -> float:
        return (self.python_peak + self.children_peak) / 2**20


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
        print("| " + " | ".join(cells) + " |")


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nresults written to {path}")
    return path
