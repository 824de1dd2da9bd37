"""`recsys-spark stream`: Structured Streaming ingest of event files landed in `<lake>/_landing/events/`.

The source is Spark's file source over the landing zone in `binaryFile` format, selecting only each
file's path, length and modification time (the source never reads the content): the offset log in
the checkpoint records which files make up each micro-batch, so a batch replayed after a crash is the
same set of files. Reading the files in the batch, rather than with a format-specific streaming
source, lets one stream take JSON, CSV (any header) and Parquet together and quarantine a broken
file instead of failing the query on it.
`foreachBatch` then reads those files with the batch-ingest checks (`ingest_stream.py`) and commits:

1. `events`: the batch's new valid events, one Delta append carrying the app-transaction marker
   `(stream-<query id>, batch id)`; skipped when the marker shows the batch committed before;
2. `quarantine`: rejected rows and unreadable files, the same way;
3. `stream_counters` and `stream_cooccurrence`: the touched days recomputed from `events` and
   replaced (`incremental.py`), which is idempotent by construction;
4. the heartbeat `<lake>/_checkpoints/stream/heartbeat.json`, then optionally incremental model
   updates (`--update-models`).

A kill at any point leaves every table at a committed version; on restart Spark replays the
unfinished batch, step 1 and 2 see their markers and skip, step 3 recomputes. See docs/streaming.md.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_spark.catalog import EXIT_FAILED, FAILED, HEARTBEAT_PATH, MODELS, RUNNING, STARTING, STOPPED
from recsys_spark.config import CommonConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.lake.commit import write_atomically
from recsys_spark.streaming import ingest_stream as S
from recsys_spark.streaming.incremental import (
    STREAM_COOCCURRENCE,
    STREAM_COUNTERS,
    cooccurrence_for_days,
    counters_for_days,
)

log = logging.getLogger(__name__)

# The file source's own schema for binaryFile; `content` is never selected, so never read.
BINARY_FILE_SCHEMA = T.StructType(
    [
        T.StructField("path", T.StringType()),
        T.StructField("modificationTime", T.TimestampType()),
        T.StructField("length", T.LongType()),
        T.StructField("content", T.BinaryType()),
    ]
)
# Test-only fault injection: "<step>:<batch id>:<seconds>" sleeps after that step of that batch (step:
# events, quarantine or counters), so a test can SIGKILL the process between two commits.
PAUSE_ENV = "RECSYS_STREAM_TEST_PAUSE"


@dataclass
class StreamConfig(CommonConfig):
    """Reads event files (JSON lines, CSV or Parquet) landed under <lake>/_landing/events/, appends their
    valid rows to events exactly once (bad rows and unreadable files to quarantine), and refreshes
    stream_counters and stream_cooccurrence for the days touched. Checkpoint and heartbeat under
    <lake>/_checkpoints/stream/. Land a file by writing it elsewhere (or under a name starting with
    '.' or '_') and renaming it into place."""

    once: bool = option(False, "Process every file landed so far, then exit (Spark's availableNow trigger).")
    trigger_seconds: float = option(60.0, "Continuous mode: seconds between the starts of micro-batches.")
    format: str = option(
        "auto",
        "Format of landed files; auto = from each file's extension (.json/.jsonl/.ndjson, .csv, .parquet, "
        "optionally .gz for text formats).",
        choices=list(S.FORMATS),
    )
    max_files_per_trigger: int = option(
        1000, "Most files in one micro-batch (a backlog is split into several)."
    )
    max_file_age: str = option(
        "7d",
        "Spark's maxFileAge: after the first batch, files older than the newest seen file by more than this "
        "are ignored. Land files with a fresh modification time.",
    )
    csv_header: bool = option(True, "CSV files have a header line naming the columns.")
    delimiter: str = option(",", "Field delimiter of CSV files.")
    min_ts: str = option("2000-01-01", "Events before this time (UTC) are ts_out_of_range.")
    max_future_hours: float = option(
        24.0,
        "Events later than the micro-batch's landing time (its newest file's modification time) + this many "
        "hours are ts_out_of_range.",
    )
    session_gap_minutes: float = option(
        30.0, "stream_cooccurrence: silence that ends a session when events carry no session_id."
    )
    update_models: list[str] = option(
        [],
        "After each batch with new events, run `train --mode incremental --launcher local` of these models "
        "in this process (the Airflow DAG normally does it).",
        choices=list(MODELS),
    )


def validate(cfg: StreamConfig) -> None:
    if cfg.trigger_seconds <= 0:
        raise UsageError("--trigger-seconds must be > 0")
    if cfg.max_files_per_trigger < 1:
        raise UsageError("--max-files-per-trigger must be >= 1")
    try:
        dt.datetime.fromisoformat(cfg.min_ts)
    except ValueError as exc:
        raise UsageError(f"--min-ts is not an ISO date or time: {cfg.min_ts!r}") from exc


# -- paths, heartbeat, lock ------------------------------------------------------------------------
def landing_dir(lake) -> str:
    return lake.path("_landing", "events")


def checkpoint_dir(lake) -> str:
    """Everything the stream keeps between runs: Spark's checkpoint in `query/`, the heartbeat, the lock."""
    return lake.path("_checkpoints", "stream")


def _spark_uri(lake, path: str) -> str:
    return f"file://{path}" if lake.is_local else path


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Heartbeat:
    """`heartbeat.json`, rewritten atomically (`lake.commit.write_atomically`).

    `{"updated_at", "pid", "batches", "last_batch_id", ...}`: `batches` counts the micro-batches this
    process finished, `last_batch_id` is the latest finished batch's id. Written after every batch and,
    while the query is alive but idle, every few seconds by the main thread, so a stale heartbeat means
    the process or its query is gone (`last_batch_at` tells an idle stream from a stuck batch).
    """

    def __init__(self, lake, trigger: str):
        self.lake = lake
        self.path = lake.path(*HEARTBEAT_PATH)
        self.lock = threading.Lock()
        self.state: dict = {
            "updated_at": None,
            "pid": os.getpid(),
            "batches": 0,
            "last_batch_id": None,
            "last_batch_at": None,
            "started_at": utc_now().isoformat(),
            "trigger": trigger,
            "state": STARTING,
            "query_id": None,
        }

    def beat(self, **changes) -> None:
        with self.lock:
            self.state.update(changes)
            self.state["updated_at"] = utc_now().isoformat()
            write_atomically(self.path, json.dumps(self.state, sort_keys=True, default=str).encode())


class StreamLock:
    """An exclusive `flock` on `_checkpoints/stream/lock` (local lakes): one stream per lake at a time.

    The kernel drops the lock when the process dies, SIGKILL included, so a restart never waits for a
    dead owner. Object-store lakes have no such primitive: run one stream per lake (Airflow does).
    """

    def __init__(self, lake):
        self.path = os.path.join(checkpoint_dir(lake), "lock") if lake.is_local else None
        self.handle = None

    def __enter__(self) -> StreamLock:
        if self.path is None:
            return self
        import fcntl

        self.handle = open(self.path, "a+")  # noqa: SIM115 - held for the life of the stream
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise RuntimeError(
                f"another `recsys-spark stream` holds {self.path} (pid {owner}); one stream per lake"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()


def _test_pause(step: str, batch_id: int) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec:
        return
    wanted_step, wanted_batch, seconds = spec.split(":")
    if wanted_step == step and int(wanted_batch) == batch_id:
        log.warning("batch %d: test hook %s: pausing %ss after %s", batch_id, PAUSE_ENV, seconds, step)
        time.sleep(float(seconds))


# -- one micro-batch -------------------------------------------------------------------------------
@dataclass
class BatchResult:
    batch_id: int
    files: int = 0
    records: int = 0
    events: S.EventsWrite = field(default_factory=S.EventsWrite)
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_written: int = 0
    unreadable_files: int = 0
    days: list[dt.date] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        ev = self.events
        state = "replayed, already committed" if ev.skipped else f"{ev.written} written"
        bad = sum(self.quarantined.values())
        return (
            f"batch {self.batch_id}: {self.files} files, {self.records} records, events {state} "
            f"({ev.present} already present, {ev.valid - ev.unique} duplicates), {bad} quarantined "
            f"({self.unreadable_files} unreadable files), days {[str(d) for d in self.days]}, "
            f"{self.seconds:.1f}s"
        )


class BatchProcessor:
    """The `foreachBatch` function, plus what the stream has done so far."""

    def __init__(self, cfg: StreamConfig, spark: SparkSession, lake, heartbeat: Heartbeat | None = None):
        self.cfg = cfg
        self.spark = spark
        self.lake = lake
        self.heartbeat = heartbeat
        self.app_id: str | None = None
        self.results: list[BatchResult] = []
        self.models_disabled: set[str] = set()

    def __call__(self, batch_df, batch_id: int) -> None:
        listed = batch_df.select("path", "length", "modificationTime").collect()  # one row per file
        files = sorted(r.path for r in listed if r.length)
        if len(files) < len(listed):  # nothing in an empty file to lose; quarantining it would be noise
            log.info("batch %d: %d empty files skipped", batch_id, len(listed) - len(files))
        landed = max((r.modificationTime for r in listed), default=None)
        self.process(files, batch_id, landed_at=landed.astimezone(dt.timezone.utc) if landed else None)

    def query_app_id(self) -> str:
        """`stream-<query id>`: the query id lives in the checkpoint, so it survives restarts but not a
        deleted checkpoint, whose batch ids restart at 0 and must not match the old markers."""
        if self.app_id is None:
            query_id = self.spark.sparkContext.getLocalProperty("sql.streaming.queryId")
            if not query_id:
                with open(self.lake.path("_checkpoints", "stream", "query", "metadata")) as f:
                    query_id = json.load(f)["id"]
            self.app_id = f"stream-{query_id}"
        return self.app_id

    def process(
        self,
        files: list[str],
        batch_id: int,
        app_id: str | None = None,
        landed_at: dt.datetime | None = None,
    ) -> BatchResult:
        """Commit one micro-batch of landed files (`app_id` defaults to the running query's).

        `landed_at` (UTC; the newest modification time of the batch's files, default now) is the "now"
        of the ts_out_of_range check: a replay hours later must classify every row as the first try
        did, or a row between the two limits could end up in neither table.
        """
        started = time.time()
        app_id = app_id or self.query_app_id()
        result = BatchResult(batch_id, files=len(files))
        if not files:
            self._finish(result, started)
            return result
        cfg = self.cfg
        batch_start = utc_now()
        run_id = f"{app_id}-{batch_id}"
        metadata = {
            "recsys.job": "stream",
            "recsys.run_id": run_id,
            "recsys.stream.app_id": app_id,
            "recsys.stream.batch_id": str(batch_id),
            "recsys.stream.files": str(len(files)),
        }
        limit = (landed_at or batch_start) + dt.timedelta(hours=cfg.max_future_hours)
        max_ts = limit.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        log.info("batch %d: reading %d files", batch_id, len(files))
        batch = S.stage_batch(
            self.spark,
            files,
            run_id=run_id,
            min_ts=cfg.min_ts,
            max_ts=max_ts,
            fmt=cfg.format,
            header=cfg.csv_header,
            delimiter=cfg.delimiter,
        )
        try:
            result.records = sum(batch.counts.values())
            result.quarantined = {k: v for k, v in batch.counts.items() if k is not None}
            result.days = batch.days
            result.unreadable_files = len(batch.unreadable)
            rejected = None
            if batch.unreadable:
                result.quarantined[S.UNREADABLE] = len(batch.unreadable)
                for path, why in batch.unreadable:
                    log.warning("batch %d: unreadable file %s: %s", batch_id, path, why)
                rejected = S.unreadable_rows(self.spark, batch.unreadable, run_id)
            if batch.staged is not None and result.days:
                log.info("batch %d: committing events", batch_id)
                valid = S.events_of(batch.staged)
                result.events = S.append_events_once(
                    self.lake, valid, result.days, app_id, batch_id, metadata
                )
                if result.events.skipped:
                    log.info("batch %d: events already committed (marker %s)", batch_id, app_id)
                else:
                    log.info("batch %d: events committed (version %s)", batch_id, result.events.version)
            if batch.staged is not None and batch.counts.keys() - {None}:
                bad_rows = S.rejected_of(batch.staged, run_id)
                rejected = bad_rows if rejected is None else rejected.unionByName(bad_rows)
            _test_pause("events", batch_id)
            if rejected is not None:
                written, _, skipped = S.append_quarantine_once(
                    self.lake, rejected, app_id, batch_id, metadata
                )
                result.quarantine_written = written
                log.info(
                    "batch %d: quarantine %s",
                    batch_id,
                    "already committed (marker)" if skipped else f"committed ({written} new rows)",
                )
            _test_pause("quarantine", batch_id)
            if result.days:
                self.refresh_state(result.days, batch_start, {**metadata})
            _test_pause("counters", batch_id)
        finally:
            batch.unpersist()
        self._finish(result, started)
        if result.days and cfg.update_models and not result.events.skipped and result.events.written:
            self.update_models(max(result.days))
        return result

    def refresh_state(self, days: list[dt.date], batch_start: dt.datetime, metadata: dict[str, str]) -> None:
        """Replace `stream_counters` and `stream_cooccurrence` of `days`, recomputed from `events`."""
        version = self.lake.version("events")
        if version is None:
            return
        # One read of the touched days for both tables (pinned to the version the metadata names).
        events = self.lake.read("events", version=version).filter(F.col("dt").isin(days)).persist()
        try:
            # The updated_at literal must be naive UTC: Spark's session time zone is UTC.
            stamp = batch_start.astimezone(dt.timezone.utc).replace(tzinfo=None)
            meta = {**metadata, "recsys.stream.events_version": str(version)}
            counters = counters_for_days(events, days, stamp)
            cooc = cooccurrence_for_days(events, days, stamp, self.cfg.session_gap_minutes)
            # Two independent tables: writing them from two threads overlaps one's Spark job with the
            # other's driver work (planning, the Delta commit), which is most of a small batch's time.
            with ThreadPoolExecutor(max_workers=2) as pool:
                done = [
                    pool.submit(self.lake.overwrite_dates, table, frame, days, metadata=meta)
                    for table, frame in ((STREAM_COUNTERS, counters), (STREAM_COOCCURRENCE, cooc))
                ]
                for future in done:
                    future.result()
        finally:
            events.unpersist()
        log.info(
            "batch %s: stream_counters and stream_cooccurrence refreshed for %s",
            metadata.get("recsys.stream.batch_id"),
            [str(d) for d in days],
        )

    def _finish(self, result: BatchResult, started: float) -> None:
        result.seconds = time.time() - started
        self.results.append(result)
        log.info("%s", result.line())
        if self.heartbeat is not None:
            self.heartbeat.beat(
                batches=len(self.results),
                last_batch_id=result.batch_id,
                last_batch_at=utc_now().isoformat(),
                state=RUNNING,
            )

    def update_models(self, day: dt.date) -> None:
        """Incremental ID-embedding updates in this process; a failure is logged, never fatal."""
        from recsys_spark.train import job as train_job

        for model in self.cfg.update_models:
            if model in self.models_disabled:
                continue
            train_cfg = train_job.TrainConfig(
                lake=self.lake.root,
                master=self.cfg.master,
                engine=self.cfg.engine,
                log_level=self.cfg.log_level,
                date=day,
                model=model,
                mode="incremental",
                launcher="local",
            )
            try:
                if train_job.run(train_cfg, self.spark, self.lake):
                    # Lost the registry's compare-and-swap to another publisher (the stream is not in the
                    # Airflow pool): nothing was published; the next batch trains on the new pointer.
                    log.warning("incremental %s update not published: the registry changed meanwhile", model)
            except UsageError as exc:  # e.g. no full version yet: retrying every batch would only spam
                log.warning("incremental %s update disabled for this run: %s", model, exc)
                self.models_disabled.add(model)
            except Exception:
                log.exception("incremental %s update failed; the stream goes on", model)


# -- the job ---------------------------------------------------------------------------------------
def start_query(cfg: StreamConfig, spark: SparkSession, lake, processor: BatchProcessor):
    """The streaming query: landed file names → `processor`, checkpointed under `_checkpoints/stream/query`."""
    landing = landing_dir(lake)
    checkpoint = lake.path("_checkpoints", "stream", "query")
    source = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("recursiveFileLookup", "true")  # per-format or per-producer subfolders are fine
        .option("maxFilesPerTrigger", cfg.max_files_per_trigger)
        .option("maxFileAge", cfg.max_file_age)
        .load(_spark_uri(lake, landing))
        .select("path", "length", "modificationTime")  # never `content`: the batch reads the files
    )
    writer = (
        source.writeStream.queryName("recsys-stream")
        .foreachBatch(processor)
        .option("checkpointLocation", _spark_uri(lake, checkpoint))
    )
    if cfg.once:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{int(cfg.trigger_seconds * 1000)} milliseconds")
    return writer.start()


def run(cfg: StreamConfig, spark: SparkSession, lake) -> int:
    validate(cfg)
    if lake.is_local:  # the file source wants its folder; object stores have no empty folders
        os.makedirs(landing_dir(lake), exist_ok=True)
        os.makedirs(checkpoint_dir(lake), exist_ok=True)
    trigger = "availableNow" if cfg.once else f"{cfg.trigger_seconds:g}s"
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:  # stop between py4j calls, in the main loop below
        log.info(
            "stream: signal %d received, stopping (a micro-batch in flight is replayed next time)", signum
        )
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with StreamLock(lake):
            heartbeat = Heartbeat(lake, trigger)
            processor = BatchProcessor(cfg, spark, lake, heartbeat)
            query = start_query(cfg, spark, lake, processor)
            heartbeat.beat(state=RUNNING, query_id=str(query.id))
            log.info(
                "stream: query %s watching %s (%s), checkpoint %s",
                query.id,
                landing_dir(lake),
                trigger,
                checkpoint_dir(lake),
            )
            beat_every = min(max(cfg.trigger_seconds, 1.0), 10.0)
            last_beat = time.time()
            try:
                while not query.awaitTermination(1):
                    if stop.is_set():
                        query.stop()
                        break
                    if time.time() - last_beat >= beat_every:
                        heartbeat.beat()
                        last_beat = time.time()
            except Exception as exc:  # StreamingQueryException: a batch failed for a non-file reason
                log.error("stream: query failed: %s", exc)
                heartbeat.beat(state=FAILED)
                return EXIT_FAILED
            heartbeat.beat(state=STOPPED)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _print_summary(processor.results)
    return 0


def _print_summary(results: list[BatchResult]) -> None:
    written = sum(r.events.written for r in results)
    bad = sum(sum(r.quarantined.values()) for r in results)
    files = sum(r.files for r in results)
    print(
        f"stream: {len(results)} micro-batches, {files} files, {written} events written, "
        f"{bad} records quarantined",
        flush=True,
    )
