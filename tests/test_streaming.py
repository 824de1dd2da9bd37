"""`recsys-spark stream`: landed files → events exactly once, bad rows and files → quarantine, fresh state.

The in-process tests drive one micro-batch at a time (`BatchProcessor.process`); the slow test runs the
real CLI as a subprocess, SIGKILLs it between two commits of a micro-batch and restarts it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys_spark import catalog
from recsys_spark.ingest import canonical
from recsys_spark.ingest.quarantine import REASONS
from recsys_spark.stats import daily_counts_for
from recsys_spark.streaming import ingest_stream as S
from recsys_spark.streaming.incremental import cooccurrence_for_days, item_neighbours
from recsys_spark.streaming.job import BatchProcessor, StreamConfig, StreamLock, checkpoint_dir, landing_dir

REPO = Path(__file__).resolve().parents[1]
# Relative to today: the ts_out_of_range check compares with the clock, so fixed dates would age out.
TODAY = dt.datetime.now(dt.timezone.utc).date()
DAY1, DAY2 = TODAY - dt.timedelta(days=3), TODAY - dt.timedelta(days=2)
COLUMNS = ["user_id", "item_id", "event", "ts", "session_id", "dwell_ms"]
MAX_TS = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=24)).strftime("%Y-%m-%d %H:%M:%S")


def _epoch(day: dt.date, seconds: float) -> float:
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() + seconds


def _iso(day: dt.date, seconds: float) -> str:
    return dt.datetime.fromtimestamp(_epoch(day, seconds), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _land(folder: Path, name: str, data: bytes, mtime: float | None = None) -> Path:
    """Land a file the way producers must: write under a hidden name, then rename into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    final = folder / name
    os.replace(tmp, final)
    return final


def _csv(rows: list[list]) -> bytes:
    lines = [",".join(COLUMNS)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def _jsonl(rows: list[dict | str]) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n").encode()


def _parquet(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def _events(frame) -> list[tuple]:
    return sorted(
        (r.user_id, r.item_id, r.event, r.ts, r.session_id, r.dwell_ms, r.dt) for r in frame.collect()
    )


# -- parsing agrees with batch ingest --------------------------------------------------------------
# (row, reason) in CSV spelling; the JSON and Parquet files carry the same values.
CASES = [
    (["u1", "i1", "click", _iso(DAY1, 10), "s1", 100], None),
    (["u1", "i2", "Like", str(int(_epoch(DAY1, 20))), "s1", None], None),
    (["u2", "i3", "purchase", str(_epoch(DAY2, 30.5)), None, 20], None),
    (["u2", "i3", "purchase", str(_epoch(DAY2, 30.5)), None, 30], None),  # duplicate: dwell 30 wins
    ([None, "i1", "click", _iso(DAY1, 40), None, None], "missing_user_id"),
    (["u3", " ", "click", _iso(DAY1, 40), None, None], "missing_item_id"),
    (["u3", "i1", "steal", _iso(DAY1, 40), None, None], "unknown_event"),
    (["u3", "i1", "click", "yesterday", None, None], "unparseable_ts"),
    (["u3", "i1", "click", "1990-01-01T00:00:00Z", None, None], "ts_out_of_range"),
    (["u3", "i1", "click", _iso(DAY1, 50), None, -5], "negative_dwell_ms"),
    (["u3", "i1", "click", _iso(DAY1, 60), None, "abc"], "unparseable_dwell_ms"),
]


def _json_value(column: str, value):
    """JSON spelling of a CASES value: epoch times and dwell as JSON numbers, as producers write them."""
    if value is None:
        return None
    if column == "ts" and str(value).replace(".", "").isdigit():
        return float(value) if "." in str(value) else int(value)
    if column == "dwell_ms" and isinstance(value, int):
        return value
    return value


def test_json_csv_and_parquet_files_agree_with_batch_ingest(spark, tmp_path):
    folder = tmp_path / "landing"
    rows = [row for row, _ in CASES]
    csv_path = _land(
        folder, "a.csv", _csv([*rows, ["u9", "i9", "click", _iso(DAY1, 1), None, None, "extra"]])
    )
    json_rows = [{c: _json_value(c, v) for c, v in zip(COLUMNS, row) if v is not None} for row in rows]
    json_path = _land(folder, "b.jsonl", _jsonl([*json_rows, "not json at all", ""]))
    text_rows = [{c: None if v is None else str(v) for c, v in zip(COLUMNS, row)} for row in rows]
    parquet_path = _land(folder, "c.parquet", _parquet(text_rows))
    # Parquet with typed columns: a double epoch time and a long dwell, as a producer's pandas writes them.
    typed = _land(
        folder,
        "d.parquet",
        _parquet(
            [{"user_id": "u5", "item_id": "i5", "event": "click", "ts": _epoch(DAY2, 1.25), "dwell_ms": 7}]
        ),
    )

    bounds = {"run_id": "t", "min_ts": "2000-01-01", "max_ts": MAX_TS}
    batch = canonical.parse_events(spark, str(csv_path), **bounds)
    expected = _events(batch.valid)
    assert len(expected) == 4  # the duplicate stays a duplicate here; events dedupes on write
    expected_reasons = Counter(r for _, r in CASES if r) + Counter({"wrong_column_count": 1})

    for path in (csv_path, json_path, parquet_path):
        batch = S.stage_batch(spark, [f"file://{path}"], **bounds)
        staged = batch.staged
        try:
            assert batch.unreadable == [] and batch.days == [DAY1, DAY2]
            assert _events(S.events_of(staged)) == expected, path.name
            reasons = Counter(r for r in (x[0] for x in staged.select("_reason").collect()) if r)
            if path != parquet_path:  # the Parquet file has no malformed line
                assert reasons == expected_reasons, path.name
            else:
                assert reasons == expected_reasons - Counter({"wrong_column_count": 1})
            rejected = {r.reason: json.loads(r.row) for r in S.rejected_of(staged, "t").collect()}
            assert rejected["unknown_event"]["event"] == "steal"  # the record as landed
        finally:
            staged.unpersist()

    batch = S.stage_batch(spark, [f"file://{typed}"], **bounds)
    (row,) = S.events_of(batch.staged).collect()
    assert (row.ts, row.dwell_ms) == (
        dt.datetime.fromtimestamp(_epoch(DAY2, 1.25), dt.timezone.utc).replace(tzinfo=None),
        7,
    )
    batch.unpersist()


def test_unreadable_files_are_quarantined_and_the_rest_still_lands(spark, tmp_path):
    assert S.UNREADABLE in REASONS
    folder = tmp_path / "landing"
    good = _land(folder, "good.csv", _csv([["u1", "i1", "click", _iso(DAY1, 1), None, None]]))
    good_json = _land(
        folder, "good.json", _jsonl([{"user_id": "u2", "item_id": "i2", "event": "click", "ts": 5e9 / 5}])
    )
    not_parquet = _land(folder, "garbage.parquet", b"this is not parquet")
    no_ts = _land(folder, "no_ts.csv", b"user_id,item_id,event\nu1,i1,click\n")
    unknown = _land(folder, "notes.txt", b"hello")
    # A gzip cut in half: its name and header look fine, the scan fails in the middle of the file, so
    # this exercises the fall-back that reads the batch's files one by one.
    whole = gzip.compress(_csv([["u3", "i3", "click", _iso(DAY1, i), None, None] for i in range(5000)]))
    truncated = _land(folder, "cut.csv.gz", whole[: len(whole) // 2])
    paths = [f"file://{p}" for p in (good, good_json, not_parquet, no_ts, unknown, truncated)]

    batch = S.stage_batch(spark, paths, run_id="t", min_ts="2000-01-01", max_ts=MAX_TS)
    unreadable, staged = batch.unreadable, batch.staged
    try:
        assert batch.counts == {None: 2}
        bad = {Path(p).name: why for p, why in unreadable}
        assert set(bad) == {"garbage.parquet", "no_ts.csv", "notes.txt", "cut.csv.gz"}
        assert "required columns ['ts']" in bad["no_ts.csv"]
        assert "unknown file extension" in bad["notes.txt"]
        assert {(r.user_id, r.item_id) for r in S.events_of(staged).collect()} == {("u1", "i1"), ("u2", "i2")}
    finally:
        staged.unpersist()
    rows = S.unreadable_rows(spark, unreadable, "t").collect()
    assert {r.reason for r in rows} == {"unreadable_file"}
    assert {Path(json.loads(r.row)["file"]).name for r in rows} == set(bad)


# -- exactly-once commits and the incremental state ------------------------------------------------
def _batch_files(folder: Path) -> list[Path]:
    one = [["u1", "i1", "click", _iso(DAY1, 10), "s1", 100], ["u1", "i2", "like", _iso(DAY1, 20), "s1", None]]
    two = [
        {"user_id": "u2", "item_id": "i1", "event": "click", "ts": _epoch(DAY1, 100)},
        {"user_id": "u2", "item_id": "i2", "event": "click", "ts": _epoch(DAY1, 200)},
        {"user_id": "u2", "item_id": "i3", "event": "impression", "ts": _epoch(DAY1, 300)},
        {"user_id": "u2", "item_id": "i9", "event": "poke", "ts": _epoch(DAY1, 400)},
    ]
    return [_land(folder, "one.csv", _csv(one)), _land(folder, "two.jsonl", _jsonl(two))]


def _state(lake) -> dict:
    """Version and rows of every table; `updated_at` (when the state was recomputed) left out."""

    def rows(table: str) -> list[str]:
        frame = lake.read(table)
        return sorted(map(repr, frame.drop(*[c for c in frame.columns if c == "updated_at"]).collect()))

    return {t: (lake.version(t), rows(t)) for t in lake.tables()}


def test_a_replayed_batch_changes_nothing(spark, lake, tmp_path):
    files = [f"file://{p}" for p in _batch_files(tmp_path / "landing")]
    processor = BatchProcessor(StreamConfig(lake=lake.root), spark, lake)

    first = processor.process(files, 0, app_id="stream-test")
    assert (first.events.written, first.quarantine_written, first.days) == (5, 1, [DAY1])
    after_first = _state(lake)
    assert set(after_first) == {"events", "quarantine", "stream_counters", "stream_cooccurrence"}

    # Spark replays a batch whose commit it did not record: same id, same files.
    replay = processor.process(files, 0, app_id="stream-test")
    assert replay.events.skipped and replay.events.written == 0
    assert {t: v for t, (v, _) in _state(lake).items() if t in ("events", "quarantine")} == {
        "events": after_first["events"][0],
        "quarantine": after_first["quarantine"][0],
    }
    assert {t: rows for t, (_, rows) in _state(lake).items()} == {
        t: rows for t, (_, rows) in after_first.items()
    }

    # A lost checkpoint restarts batch ids under a new query id: no marker, the anti-join catches it.
    again = processor.process(files, 0, app_id="stream-other")
    assert not again.events.skipped
    assert (again.events.present, again.events.written) == (5, 0)
    assert lake.read("events").count() == 5
    assert lake.read("quarantine").count() == 1

    history = [h for h in lake.history("events") if h.get("recsys.stream.batch_id") is not None]
    assert [(h["recsys.stream.app_id"], h["recsys.stream.batch_id"]) for h in history] == [
        ("stream-test", "0")
    ]


def test_counters_and_cooccurrence_equal_a_batch_recomputation(spark, lake, tmp_path):
    folder = tmp_path / "landing"
    files = [f"file://{p}" for p in _batch_files(folder)]
    # A later file: a session-less user whose 40-minute silence splits two sessions, a self-loop, an
    # impression between clicks (not a positive interaction), and an event of the next day.
    later = [
        ["u3", "i1", "click", _iso(DAY1, 0), None, None],
        ["u3", "i2", "impression", _iso(DAY1, 30), None, None],
        ["u3", "i2", "click", _iso(DAY1, 60), None, None],
        ["u3", "i2", "share", _iso(DAY1, 90), None, None],
        ["u3", "i3", "click", _iso(DAY1, 60 + 40 * 60), None, None],
        ["u3", "i3", "click", _iso(DAY2, 10), None, None],
    ]
    files.append(f"file://{_land(folder, 'later.csv', _csv(later))}")
    processor = BatchProcessor(StreamConfig(lake=lake.root), spark, lake)
    processor.process(files[:2], 0, app_id="stream-test")
    result = processor.process(files[2:], 1, app_id="stream-test")
    assert result.days == [DAY1, DAY2]

    events = lake.read("events")
    counters = lake.read("stream_counters")
    for day in (DAY1, DAY2):
        got = counters.filter(F.col("dt") == day).drop("updated_at")
        want = daily_counts_for(events, day)
        assert got.count() == want.count() > 0
        assert got.exceptAll(want).count() == 0 and want.exceptAll(got).count() == 0

    cooc = {
        (r.item_id, r.other_item_id, r.dt): r["count"] for r in lake.read("stream_cooccurrence").collect()
    }
    # By hand: u1 i1->i2 (session s1); u2 i1->i2 (i3 was an impression); u3 i1->i2, i2->i2 dropped,
    # then a new session at i3, and i3 alone on DAY2.
    assert cooc == {("i1", "i2", DAY1): 3, ("i2", "i1", DAY1): 3}
    stamps = {r.updated_at for r in lake.read("stream_cooccurrence").collect()}
    assert len(stamps) == 1 and stamps == {r.updated_at for r in counters.collect()}  # batch 1's start
    again = cooccurrence_for_days(events, [DAY1, DAY2], dt.datetime(2000, 1, 1)).drop("updated_at")
    assert again.exceptAll(lake.read("stream_cooccurrence").drop("updated_at")).count() == 0

    top = item_neighbours(lake.read("stream_cooccurrence"), ["i1"]).collect()
    assert [(r.other_item_id, r["count"], r.rank) for r in top] == [("i2", 3, 1)]


def test_update_models_runs_incremental_training_after_new_events(spark, lake, tmp_path, monkeypatch):
    from recsys_spark.train import job as train_job

    calls = []
    monkeypatch.setattr(train_job, "run", lambda cfg, spark, lake: calls.append(cfg) or 0)
    files = [f"file://{p}" for p in _batch_files(tmp_path / "landing")]
    processor = BatchProcessor(StreamConfig(lake=lake.root, update_models=list(catalog.MODELS)), spark, lake)
    processor.process(files, 0, app_id="stream-test")
    processor.process(files, 0, app_id="stream-test")  # a replay trains nothing new
    assert [(c.model, c.mode, c.launcher, c.date) for c in calls] == [
        ("two_tower", "incremental", "local", DAY1),
        ("ranker", "incremental", "local", DAY1),
    ]


@pytest.mark.slow
def test_streamed_events_update_the_id_embeddings_of_the_served_model(spark, tmp_path):
    """--update-models for real: a full two-tower version, then a streamed batch of next-day events
    publishes an incremental version on top of it, moving only the ID embeddings."""
    import torch

    from recsys_spark import cli
    from recsys_spark.lake.delta import Lake
    from recsys_spark.train.checkpoint import load_checkpoint

    root = str(tmp_path / "lake")

    def run(*args: str) -> int:
        return cli.main([args[0], "--lake", root, *args[1:]], spark=spark)

    assert run("generate", "--users", "150", "--items", "60", "--days", "3", "--seed", "4") == 0
    lake = Lake(spark, root)
    last = lake.read("events").agg(F.max("dt")).first()[0]
    assert run("stats", "--date", str(last)) == 0
    assert run("samples", "--date", str(last), "--hard-negative-channel", "none") == 0
    fast = ["--launcher", "local", "--epochs", "1", "--batch-size", "128", "--cold-start-days", "1"]
    assert run("train", "--model", "two_tower", "--date", str(last), *fast) == 0
    full = f"full-{last}"
    base = load_checkpoint(lake.path("_models", "two_tower", "full", full, "checkpoint.pt"))

    day = last + dt.timedelta(days=1)  # the next day, as the stream would land it
    known = [
        (r.user_id, r.item_id) for r in lake.read("events").filter(F.col("dt") == last).limit(40).collect()
    ]
    rows = [[u, i, "click", _iso(day, 60 + k), f"s-{u}", 1000] for k, (u, i) in enumerate(known)]
    files = [f"file://{_land(tmp_path / 'landing', 'next.csv', _csv(rows))}"]
    processor = BatchProcessor(StreamConfig(lake=root, update_models=["two_tower"]), spark, lake)
    processor.process(files, 0, app_id="stream-test")

    latest = json.loads(Path(lake.path("_models", "two_tower", "LATEST.json")).read_text())
    inc = latest["incremental"]
    assert inc["version"] == f"inc-{day}-001" and inc["base"] == full and latest["serving"] == inc["version"]
    updated = load_checkpoint(
        lake.path("_models", "two_tower", "incremental", inc["version"], "checkpoint.pt")
    )
    for a, b in zip(base.dense_parameters(), updated.dense_parameters()):
        assert torch.equal(a, b)  # dense layers bit-identical
    old, new = base.user_emb.weight, updated.user_emb.weight
    assert not torch.equal(new[: old.shape[0]], old)  # the streamed users' embeddings learned


def test_one_stream_per_lake(lake):
    os.makedirs(checkpoint_dir(lake), exist_ok=True)
    with StreamLock(lake), pytest.raises(RuntimeError, match=f"holds .* \\(pid {os.getpid()}\\)"):
        StreamLock(lake).__enter__()
    with StreamLock(lake):  # released on exit (and by the kernel when the holder dies)
        pass


# -- the real process: SIGKILL in the middle of a batch, restart ------------------------------------
def _rows(user: str, day: dt.date, start: int, n: int, session: str | None = None) -> list[list]:
    events = ["click", "impression", "like", "click", "purchase"]
    return [
        [
            user,
            f"i{(start + k) % 7}",
            events[k % len(events)],
            _iso(day, start * 60 + k * 30),
            session,
            k * 10,
        ]
        for k in range(n)
    ]


def _stream(lake_root: str, log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "recsys_spark.cli",
        "stream",
        "--lake",
        lake_root,
        "--master",
        "local[2]",
    ]
    environment = {**os.environ, "RECSYS_DRIVER_MEMORY": os.environ.get("RECSYS_DRIVER_MEMORY", "2g")}
    environment.update(env or {})
    with open(log, "ab") as out:
        # Own process group: the SIGKILL below takes the JVM down with the Python driver, as a crash would.
        return subprocess.Popen(
            [*command, *args], stdout=out, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            pytest.fail(
                f"stream exited with {process.returncode} before {text!r}:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.5)
    pytest.fail(f"no {text!r} after {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_keeps_every_event_exactly_once(spark, tmp_path):
    from recsys_spark.lake import Lake

    lake = Lake(spark, str(tmp_path / "lake"))
    landing = Path(landing_dir(lake))
    log = tmp_path / "stream.log"
    now = time.time()
    a = _rows("u1", DAY1, 0, 12, "s1") + _rows("u1", DAY1, 0, 3, "s1")  # 3 in-file duplicates
    b = [dict(zip(COLUMNS, r)) for r in _rows("u2", DAY1, 5, 10)]
    c = _rows("u3", DAY2, 1, 10)
    d = [dict(zip(COLUMNS, r)) for r in _rows("u4", DAY2, 2, 8)]
    bad = [[None, "i1", "click", _iso(DAY1, 1), None, None], ["u5", "i1", "steal", _iso(DAY1, 2), None, None]]
    # Batch 0 = the two oldest files (maxFilesPerTrigger 2), batch 1 = the next two: mtimes fix the order.
    _land(landing, "a.csv", _csv(a + bad), now - 40)
    _land(landing, "b.json", _jsonl([*b, "{broken"]), now - 30)
    _land(landing, "c.csv", _csv(c), now - 20)
    _land(landing, "zz.parquet", b"definitely not parquet", now - 10)
    _land(
        landing / "more",
        "d.parquet",
        _parquet([{k: str(v) if v is not None else None for k, v in r.items()} for r in d]),
        now - 5,
    )

    first = _stream(
        lake.root,
        log,
        "--trigger-seconds",
        "1",
        "--max-files-per-trigger",
        "2",
        env={"RECSYS_STREAM_TEST_PAUSE": "events:1:600"},
    )
    try:
        _wait_for(log, "batch 1: test hook", first, timeout=240)
        heartbeat = json.loads((Path(lake.path("_checkpoints", "stream", "heartbeat.json"))).read_text())
        assert (heartbeat["pid"], heartbeat["last_batch_id"], heartbeat["batches"]) == (first.pid, 0, 1)
        os.killpg(first.pid, signal.SIGKILL)  # between batch 1's events commit and everything after it
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert lake.version("events") == 1  # batches 0 and 1 committed their events...
    assert lake.read("stream_counters").select("dt").distinct().count() == 1  # ...batch 1 nothing else

    # Another file while it is down, with cross-file duplicates of a.csv.
    e = _rows("u1", DAY1, 0, 5, "s1") + _rows("u6", DAY2, 3, 6)
    _land(landing, "e.csv", _csv(e))

    started = time.time()
    second = _stream(lake.root, log, "--once", "--max-files-per-trigger", "10")
    try:
        assert second.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    text = log.read_text()
    assert "batch 1: events already committed (marker" in text  # the replay, skipped by its marker
    print(f"restart with --once took {time.time() - started:.0f}s")

    # Every valid landed event exactly once, with batch ingest's duplicate rule (largest dwell wins).
    expected: dict[tuple, int] = {}
    for rows in (a, b, c, d, e):
        for r in rows:
            r = list(r.values()) if isinstance(r, dict) else r
            day = dt.datetime.fromisoformat(r[3].replace("Z", "+00:00"))
            key = (r[0], r[1], r[2], day.replace(tzinfo=None), r[4])
            expected[key] = max(expected.get(key, -1), r[5])
    events = lake.read("events")
    got = [(r.user_id, r.item_id, r.event, r.ts, r.session_id, r.dwell_ms) for r in events.collect()]
    assert len(got) == len(set(got)) == len(expected)
    assert sorted(got) == sorted((*k, v) for k, v in expected.items())

    # The state equals a batch recomputation over what events holds now.
    for day in (DAY1, DAY2):
        mine = lake.read("stream_counters").filter(F.col("dt") == day).drop("updated_at")
        want = daily_counts_for(events, day)
        assert mine.exceptAll(want).count() == 0 and want.exceptAll(mine).count() == 0
    clicks = lake.read("stream_counters").filter("entity_type = 'item'").agg(F.sum("click")).first()[0]
    assert clicks == sum(1 for k in expected if k[2] == "click")
    cooc = lake.read("stream_cooccurrence").drop("updated_at")
    recomputed = cooccurrence_for_days(events, [DAY1, DAY2], dt.datetime(2000, 1, 1)).drop("updated_at")
    assert cooc.exceptAll(recomputed).count() == 0 and recomputed.exceptAll(cooc).count() == 0

    # Bad rows and bad files are in quarantine, once each, and did not stop the stream.
    quarantine = Counter(
        (r.reason, Path(json.loads(r.row).get("file", "")).name) for r in lake.read("quarantine").collect()
    )
    assert quarantine == Counter(
        {
            ("missing_user_id", ""): 1,
            ("unknown_event", ""): 1,
            ("wrong_column_count", ""): 1,
            ("unreadable_file", "zz.parquet"): 1,
        }
    )
    # One events commit per batch that had new events, each with its marker: nothing committed twice.
    batches = [h["recsys.stream.batch_id"] for h in lake.history("events")]
    assert sorted(batches) == sorted(set(batches))
    heartbeat = json.loads((Path(lake.path("_checkpoints", "stream", "heartbeat.json"))).read_text())
    assert heartbeat["pid"] == second.pid and heartbeat["state"] == "stopped"
    # Batch 1 replayed (same files as before the kill), then batch 2 = d.parquet + e.csv.
    assert heartbeat["last_batch_id"] == max(map(int, batches)) == 2
    assert dt.datetime.fromisoformat(heartbeat["updated_at"]) > dt.datetime.fromtimestamp(
        started, dt.timezone.utc
    )


@pytest.mark.slow
def test_generated_days_landed_for_the_stream_arrive_exactly_as_generated(spark, tmp_path):
    """`generate --land-days 1` holds the last day back as hourly JSON-lines files; `stream --once`
    then makes `events` equal to the same generation written whole."""
    from recsys_spark import cli
    from recsys_spark.lake.delta import Lake

    options = ["--users", "80", "--items", "40", "--days", "3", "--seed", "9"]
    whole, held = str(tmp_path / "whole"), str(tmp_path / "held")
    assert cli.main(["generate", "--lake", whole, *options], spark=spark) == 0
    assert cli.main(["generate", "--lake", held, *options, "--land-days", "1"], spark=spark) == 0
    last = dt.date(2026, 11, 3)
    held_lake, whole_lake = Lake(spark, held), Lake(spark, whole)
    assert held_lake.read("events").agg(F.max("dt")).first()[0] == last - dt.timedelta(days=1)
    landed = sorted(os.listdir(landing_dir(held_lake)))
    assert landed and all(n.startswith(f"generated-{last}T") and n.endswith(".jsonl") for n in landed)
    assert len(landed) == len(set(landed)) <= 24
    assert not [n for n in os.listdir(os.path.dirname(landing_dir(held_lake))) if n.startswith("_")]

    assert cli.main(["stream", "--lake", held, "--once"], spark=spark) == 0
    got, want = held_lake.read("events"), whole_lake.read("events")
    assert got.count() == want.count() > 0
    assert got.exceptAll(want).count() == 0 and want.exceptAll(got).count() == 0
    assert "quarantine" not in held_lake.tables() or held_lake.read("quarantine").count() == 0
