"""Lake upkeep and concurrency: partition-pruned reads, a cheap latest_date, `maintain` after a SIGKILL,
and two ingests of one file at once (real processes, real Spark and delta-rs)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parents[1]


def _events(spark, rows):
    return spark.createDataFrame(
        rows, "user_id string, item_id string, event string, ts timestamp, session_id string, dwell_ms long"
    ).withColumn("dt", F.to_date("ts"))


def _row(user, item, day, hour=10):
    return (user, item, "click", dt.datetime(2026, 11, day, hour), None, None)


def _files_on_disk(table_dir: Path) -> set[str]:
    return {
        str(p.relative_to(table_dir))
        for p in table_dir.rglob("*.parquet")
        if not str(p.relative_to(table_dir)).startswith(("_delta_log", "_staging"))
    }


def _files_of_every_version(lake, table: str) -> set[str]:
    from deltalake import DeltaTable

    root = lake.uri(table)
    out: set[str] = set()
    for v in range(lake.version(table) + 1):
        out |= {
            os.path.relpath(f.replace("file://", ""), root) for f in DeltaTable(root, version=v).file_uris()
        }
    return out


def _subprocess(script: str, log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "RECSYS_DRIVER_MEMORY": "1g", "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        # Own process group: a SIGKILL of the group takes the JVM down with the driver, as a crash would.
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_read_with_dates_lists_only_those_partitions_and_gives_the_same_rows(spark, lake):
    lake.append("events", _events(spark, [_row("u1", "i1", 1), _row("u2", "i2", 2), _row("u3", "i3", 3)]))
    pruned = lake.read("events", dates=[dt.date(2026, 11, 2)])
    assert pruned.inputFiles() and all("dt=2026-11-02" in f for f in pruned.inputFiles())
    full = lake.read("events").filter(F.col("dt") == "2026-11-02")
    assert sorted(pruned.collect()) == sorted(full.collect())
    assert lake.read("events", partition_filters=[("dt", "in", ["2026-11-01", "2026-11-03"])]).count() == 2
    assert lake.read("events", dates=[]).count() == 0
    assert lake.read("events", version=0, dates=["2026-11-03"]).count() == 1


def test_latest_date_reads_the_delta_log_not_the_data(spark, lake):
    lake.append("events", _events(spark, [_row("u1", "i1", 1), _row("u2", "i2", 5), _row("u3", "i3", 3)]))
    sc = spark.sparkContext
    sc.setJobGroup("latest-date-probe", "latest_date must not run a Spark job")
    try:
        assert lake.latest_date("events") == dt.date(2026, 11, 5)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert list(sc.statusTracker().getJobIdsForGroup("latest-date-probe")) == []


KILL_AFTER_FILES_MOVED = """
    import os, signal, sys
    from recsys_spark.lake import commit

    publish = commit.DeltaRsCommitter._publish_files

    def publish_then_die(self, *args, **kwargs):
        out = publish(self, *args, **kwargs)
        print("files moved, killing before the commit", flush=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)  # driver and JVM: nothing runs after this
        return out

    commit.DeltaRsCommitter._publish_files = publish_then_die
    from recsys_spark.cli import main
    os._exit(main(["ingest", "--master", "local[1]", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_sigkill_between_moving_files_and_committing_then_maintain_leaves_no_orphan(spark, lake, tmp_path):
    from recsys_spark.cli import main

    for k in range(4):  # four versions of small files in two partitions
        lake.append("events", _events(spark, [_row(f"u{k}", "i1", 1), _row(f"u{k}", "i2", 2)]).repartition(2))
    counts = {v: lake.read("events", version=v).count() for v in range(4)}
    csv = tmp_path / "new.csv"
    csv.write_text(
        "user_id,item_id,event,ts\nu9,i9,click,2026-11-02T10:00:00Z\nu9,i8,click,2026-11-03T10:00:00Z\n"
    )
    log = tmp_path / "killed.log"
    killed = _subprocess(KILL_AFTER_FILES_MOVED, log, "--lake", lake.root, "--events", str(csv))
    try:
        assert killed.wait(timeout=240) == -9, log.read_text()[-3000:]
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, 9)
    assert "files moved" in log.read_text()
    table_dir = Path(lake.uri("events"))
    assert lake.version("events") == 3  # the killed write committed nothing...
    orphans = _files_on_disk(table_dir) - _files_of_every_version(lake, "events")
    assert orphans  # ...but left its moved files (and its _staging folder) behind
    assert any((table_dir / "_staging").iterdir())

    argv = ["maintain", "--lake", lake.root, "--grace-hours", "0", "--min-files", "2"]
    assert main(argv, spark=spark) == 0
    # No orphan: every Parquet file under the table belongs to some version the log keeps.
    assert _files_on_disk(table_dir) <= _files_of_every_version(lake, "events")
    assert not (table_dir / "_staging").exists() or not any((table_dir / "_staging").iterdir())
    # Compaction: fewer files, the same rows, as new versions that changed no data.
    latest = lake.version("events")
    assert latest > 3
    assert lake.read("events").count() == counts[3]
    assert sorted(lake.read("events").collect()) == sorted(lake.read("events", version=3).collect())
    assert len(lake.read("events").inputFiles()) < len(lake.read("events", version=3).inputFiles())
    assert {h.get("recsys.operation") for h in lake.history("events") if h["version"] > 3} == {"compact"}
    # Versions inside the retention (168 h by default) are still readable with all their rows.
    assert {v: lake.read("events", version=v).count() for v in range(4)} == counts
    # Running it again finds nothing to do.
    assert main(argv, spark=spark) == 0
    assert lake.version("events") == latest


CONCURRENT_INGEST = """
    import os, sys, time
    from pathlib import Path
    from recsys_spark.lake import commit

    barrier = Path(sys.argv[1])
    publish = commit.DeltaRsCommitter._publish_files

    def publish_together(self, *args, **kwargs):
        # Both ingests have read events at the same version: commit at the same moment.
        if self.table_uri.endswith("/events"):
            (barrier / str(os.getpid())).touch()
            deadline = time.time() + 180
            while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
                time.sleep(0.2)
        return publish(self, *args, **kwargs)

    commit.DeltaRsCommitter._publish_files = publish_together
    from recsys_spark.cli import main
    os._exit(main(["ingest", "--master", "local[1]", *sys.argv[2:]]))
"""


@pytest.mark.slow
def test_two_ingests_of_one_file_at_once_neither_duplicate_nor_lose_a_row(spark, lake, tmp_path):
    lake.append("events", _events(spark, [_row("u0", "i0", 1)]))
    csv = tmp_path / "events.csv"
    csv.write_text(
        "user_id,item_id,event,ts\n"
        "u1,i1,click,2026-11-01T10:00:00Z\nu1,i2,like,2026-11-01T11:00:00Z\nu2,i1,click,2026-11-02T09:00:00Z\n"
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    logs = [tmp_path / f"ingest{k}.log" for k in range(2)]
    procs = [
        _subprocess(CONCURRENT_INGEST, log, str(barrier), "--lake", lake.root, "--events", str(csv))
        for log in logs
    ]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    outputs = [log.read_text(errors="replace") for log in logs]
    assert len(list(barrier.iterdir())) == 2, outputs  # both really reached the commit together
    rows = [tuple(r) for r in lake.read("events").drop("dwell_ms", "session_id").collect()]
    assert len(rows) == len(set(rows)) == 4, (rows, outputs)  # the old row + 3 new, each once
    assert 0 in codes, outputs
    for code, out in zip(codes, outputs):
        assert code == 0 or "concurrent write conflict" in out, out[-3000:]
    # The loser saw the conflict: it retried from the winner's version (writing nothing) or failed naming it.
    assert any("concurrent write conflict" in out for out in outputs), outputs


def test_maintain_prunes_ann_indexes_untouched_for_the_retention(lake):
    from recsys_spark.lake.maintain import MaintainConfig, prune_ann_indexes

    old, fresh = (
        Path(lake.path("_models", "ann", "deepwalk", "v3")),
        Path(lake.path("_models", "ann", "deepwalk", "v4")),
    )
    for folder in (old, fresh):
        folder.mkdir(parents=True)
        (folder / "index.faiss").write_bytes(b"x")
    week_ago = dt.datetime.now().timestamp() - 8 * 24 * 3600
    os.utime(old / "index.faiss", (week_ago, week_ago))
    cfg = MaintainConfig(lake=lake.root, retention_hours=168.0)
    assert prune_ann_indexes(lake, MaintainConfig(lake=lake.root, dry_run=True)) and old.exists()
    assert [Path(p).name for p in prune_ann_indexes(lake, cfg)] == ["v3"]
    assert not old.exists() and (fresh / "index.faiss").exists()
