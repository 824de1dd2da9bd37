"""`recsys-spark maintain`: lake upkeep, daily after publish (compact, vacuum, staging leftovers).

Per table, in this order:

1. **Compact.** Every partition holding `min_files` or more files smaller than `small_file_mb` has
   them rewritten by Spark into about `target_file_mb`-sized files, committed as one new version that
   removes the old files and adds the new with `dataChange=false`: the rows are the same, readers of
   the new version see exactly what they saw before, and readers of older versions keep their files
   (they are only tombstoned). The commit is checked against the version read, so a concurrent write
   to the partition wins and that partition is left for the next run.
2. **Vacuum.** Files removed by a commit more than `retention_hours` ago are deleted (delta-rs vacuum;
   a version younger than the retention keeps every file it references, so it stays readable).
   Parquet files under the table that no version in the Delta log ever referenced (what a job killed
   between moving its files and committing leaves) are deleted once older than `grace_hours`.
3. **Staging leftovers.** `<table>/_staging/<run>/` folders older than `grace_hours` (a killed job's
   half-written output) are deleted. The grace period protects writers still running.

Once per run, outside the tables: **ANN indexes** (`_models/ann/<channel>/<version>/`, one per vector
version and, with new items filled in, per day) whose newest file is older than `retention_hours` are
deleted. They are a cache: recall rebuilds the index of a version it needs and finds missing.

Only the delta-rs engine is maintained here; on the Spark Delta engine use Delta's OPTIMIZE/VACUUM.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote

import pyarrow.fs as pafs

from recsys_spark.catalog import ANN_INDEX_DIR
from recsys_spark.config import CommonConfig, option
from recsys_spark.errors import UsageError
from recsys_spark.lake.commit import STAGING_DIR, CommitConflict, delete_quietly, filesystem

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass
class MaintainConfig(CommonConfig):
    """Compacts small files, vacuums unreferenced files past the retention, removes staging leftovers."""

    tables: list[str] = option([], "Tables to maintain; default every table in the lake.")
    retention_hours: float = option(
        168.0, "Files removed by a commit longer ago than this are deleted; younger versions stay readable."
    )
    grace_hours: float = option(
        6.0,
        "Never-committed files and _staging folders older than this are deleted (a killed job's "
        "leftovers); younger ones may belong to a job still running.",
    )
    compact: bool = option(True, "Rewrite partitions with many small files into fewer files.")
    small_file_mb: float = option(32.0, "Files smaller than this count as small.")
    min_files: int = option(4, "Compact a partition once it has at least this many small files.")
    target_file_mb: float = option(128.0, "Size of the files compaction writes, about.")
    dry_run: bool = option(False, "Only report what would be compacted and deleted.")


@dataclass
class MaintainSummary:
    table: str
    partitions_compacted: int = 0
    files_compacted: int = 0
    files_written: int = 0
    conflicts: list[str] = field(default_factory=list)
    vacuumed: int = 0
    orphans_deleted: int = 0
    staging_deleted: int = 0

    def line(self) -> str:
        return (
            f"{self.table}: compacted {self.files_compacted} file(s) in {self.partitions_compacted} "
            f"partition(s) into {self.files_written}; vacuumed {self.vacuumed}; orphans deleted "
            f"{self.orphans_deleted}; staging folders deleted {self.staging_deleted}"
            + (f"; skipped after conflicts: {', '.join(self.conflicts)}" if self.conflicts else "")
        )


def run(cfg: MaintainConfig, spark, lake) -> int:
    if lake.engine != "delta-rs":
        raise UsageError(
            "maintain works on the delta-rs engine; use Delta's OPTIMIZE and VACUUM with --engine spark"
        )
    for table in cfg.tables or lake.tables():
        summary = maintain_table(lake, table, cfg)
        log.info("maintain: %s", summary.line())
        print(summary.line(), flush=True)
    if not cfg.tables:
        pruned = prune_ann_indexes(lake, cfg)
        print(f"ann indexes: deleted {len(pruned)} untouched for {cfg.retention_hours:g}h", flush=True)
    return 0


def prune_ann_indexes(lake, cfg: MaintainConfig) -> list[str]:
    """Delete the ANN index folders whose newest file is older than the retention; their paths."""
    fs, root = filesystem(lake.path(*ANN_INDEX_DIR))
    cutoff = time.time() - cfg.retention_hours * 3600
    pruned = []
    try:
        channels = [i for i in fs.get_file_info(pafs.FileSelector(root)) if i.type == pafs.FileType.Directory]
    except FileNotFoundError:
        return pruned
    for channel in channels:
        for info in fs.get_file_info(pafs.FileSelector(channel.path)):
            if info.type != pafs.FileType.Directory:
                continue
            files = [
                c.mtime.timestamp() if c.mtime else time.time()
                for c in fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
                if c.type == pafs.FileType.File
            ]  # the files' times: a folder's own mtime only says when its last entry was added
            if max(files, default=info.mtime.timestamp() if info.mtime else time.time()) > cutoff:
                continue
            log.info("maintain: deleting ANN index %s/%s", channel.base_name, info.base_name)
            pruned.append(info.path)
            if not cfg.dry_run:
                delete_quietly(fs, info.path, directory=True)
    return pruned


def maintain_table(lake, table: str, cfg: MaintainConfig) -> MaintainSummary:
    summary = MaintainSummary(table)
    if not lake.exists(table):
        raise UsageError(f"table {table!r} does not exist in lake {lake.root}")
    if cfg.compact:
        compact(lake, table, cfg, summary)
    vacuum(lake, table, cfg, summary)
    return summary


# -- compaction ------------------------------------------------------------------------------------
def _add_actions(delta) -> list[dict]:
    """The latest version's files: path (relative, as in the log), size, rows, partition values."""
    import pyarrow as pa

    rows = pa.table(delta.get_add_actions(flatten=True)).to_pylist()
    out = []
    for r in rows:
        parts = {k[len("partition.") :]: v for k, v in r.items() if k.startswith("partition.")}
        out.append(
            {"path": r["path"], "size": r["size_bytes"], "rows": r.get("num_records"), "partition": parts}
        )
    return out


def compact(lake, table: str, cfg: MaintainConfig, summary: MaintainSummary) -> None:
    """Rewrite each partition's small files into fewer files: one dataChange=false version per partition."""
    from deltalake import DeltaTable

    delta = DeltaTable(lake.uri(table), storage_options=lake.storage_options)
    groups: dict[tuple, list[dict]] = {}
    for add in _add_actions(delta):
        if add["size"] < cfg.small_file_mb * MB:
            groups.setdefault(tuple(sorted((k, _text(v)) for k, v in add["partition"].items())), []).append(
                add
            )
    for key, files in sorted(groups.items()):
        if len(files) < cfg.min_files:
            continue
        label = ",".join(f"{k}={v}" for k, v in key) or "(unpartitioned)"
        if cfg.dry_run:
            log.info("maintain %s: would compact %d files of %s", table, len(files), label)
            continue
        try:
            written = _compact_partition(lake, table, delta, dict(key), files, cfg)
        except CommitConflict as exc:
            log.warning("maintain %s: %s left as it is: %s", table, label, exc)
            summary.conflicts.append(label)
            continue
        summary.partitions_compacted += 1
        summary.files_compacted += len(files)
        summary.files_written += written


def _text(value) -> str | None:
    return None if value is None else str(value)


def _compact_partition(
    lake, table: str, delta, partition: dict, files: list[dict], cfg: MaintainConfig
) -> int:
    """Spark reads the files, writes ~target-sized ones to staging; one commit swaps them (dataChange=false)."""
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction, CommitProperties, RemoveAction
    from pyspark.sql import types as T

    fs, root = filesystem(lake.uri(table))
    schema = T.StructType.fromJson(json.loads(delta.schema().to_json()))
    partition_by = delta.metadata().partition_columns
    data_columns = [f for f in schema.fieldNames() if f not in partition_by]
    uris = [f"{lake.spark_uri(table)}/{f['path']}" for f in files]
    frame = lake.spark.read.schema(schema).option("basePath", lake.spark_uri(table)).parquet(*uris)
    total = sum(f["size"] for f in files)
    count = max(1, math.ceil(total / (cfg.target_file_mb * MB)))
    staging_rel = f"{STAGING_DIR}/compact-{uuid.uuid4().hex}"
    # Written without partition folders: the files go into the partition's folder, their values are known.
    frame.select(*data_columns).coalesce(count).write.mode("errorifexists").parquet(
        f"{lake.spark_uri(table)}/{staging_rel}"
    )
    folder = "/".join(f"{k}={_folder_value(partition.get(k))}" for k in partition_by)
    now_ms = int(time.time() * 1000)
    adds, moved = [], []
    try:
        import pyarrow.parquet as pq

        staged = fs.get_file_info(pafs.FileSelector(posixpath.join(root, staging_rel), recursive=True))
        for info in staged:
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
                continue
            relative = posixpath.join(folder, info.base_name) if folder else info.base_name
            target = posixpath.join(root, relative)
            fs.create_dir(posixpath.dirname(target), recursive=True)
            fs.move(info.path, target)
            moved.append(target)
            rows = pq.read_metadata(target, filesystem=fs).num_rows
            stats = json.dumps({"numRecords": rows})
            adds.append(AddAction(_quoted(relative), info.size, partition, now_ms, False, stats))
        removes = [RemoveAction(f["path"], False, now_ms, f["size"], partition) for f in files]
        try:
            delta.create_write_transaction(
                [*removes, *adds],
                mode="append",
                schema=delta.schema(),
                partition_by=partition_by or None,
                commit_properties=CommitProperties(
                    custom_metadata={"recsys.job": "maintain", "recsys.operation": "compact"}
                ),
            )
        except CommitFailedError as exc:
            raise CommitConflict(lake.uri(table), delta.version(), str(exc)) from exc
        delta.update_incremental()  # the next partition's commit starts from this version
    except BaseException:
        for path in moved:
            delete_quietly(fs, path)
        raise
    finally:
        delete_quietly(fs, posixpath.join(root, staging_rel), directory=True)
    log.info("maintain %s: compacted %d files of %s into %d", table, len(files), partition, len(adds))
    return len(adds)


def _folder_value(value) -> str:
    from urllib.parse import quote

    return "__HIVE_DEFAULT_PARTITION__" if value is None else quote(str(value), safe="")


def _quoted(relative: str) -> str:
    from urllib.parse import quote

    return quote(relative, safe="/=")


# -- vacuum ----------------------------------------------------------------------------------------
def referenced_files(lake, table: str) -> set[str]:
    """Every data file (relative path, unquoted) that any version in the Delta log adds or removes,
    plus the latest version's files (which a checkpoint may hold instead of the JSON commits)."""
    from deltalake import DeltaTable

    fs, root = filesystem(lake.uri(table))
    paths: set[str] = set()
    log_dir = posixpath.join(root, "_delta_log")
    for info in fs.get_file_info(pafs.FileSelector(log_dir)):
        if not info.base_name.endswith(".json"):
            continue
        with fs.open_input_stream(info.path) as stream:
            for line in stream.read().decode("utf-8").splitlines():
                if not line.strip():
                    continue
                action = json.loads(line)
                for kind in ("add", "remove"):
                    if kind in action:
                        paths.add(unquote(action[kind]["path"]))
    delta = DeltaTable(lake.uri(table), storage_options=lake.storage_options)
    paths.update(unquote(a["path"]) for a in _add_actions(delta))
    return paths


def vacuum(lake, table: str, cfg: MaintainConfig, summary: MaintainSummary) -> None:
    from deltalake import DeltaTable

    delta = DeltaTable(lake.uri(table), storage_options=lake.storage_options)
    # Lite mode: only files the log removed (tombstones) past the retention, never a live file.
    deleted = delta.vacuum(
        retention_hours=math.ceil(cfg.retention_hours),  # whole hours (delta-rs); never shorter
        dry_run=cfg.dry_run,
        enforce_retention_duration=False,
        commit_properties=None,
    )
    summary.vacuumed = len(deleted)
    fs, root = filesystem(lake.uri(table))
    cutoff = time.time() - cfg.grace_hours * 3600
    referenced = referenced_files(lake, table)
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = posixpath.relpath(info.path, root)
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        if relative.split("/")[0].startswith(("_", ".")):  # the log, staging (handled below)
            continue
        if relative in referenced or info.mtime is None or info.mtime.timestamp() > cutoff:
            continue
        log.info("maintain %s: deleting never-committed file %s", table, relative)
        summary.orphans_deleted += 1
        if not cfg.dry_run:
            delete_quietly(fs, info.path)
    staging = posixpath.join(root, STAGING_DIR)
    try:
        runs = fs.get_file_info(pafs.FileSelector(staging))
    except FileNotFoundError:
        runs = []
    for info in runs:
        if _newest_mtime(fs, info) > cutoff:
            continue
        log.info("maintain %s: deleting staging leftover %s", table, info.base_name)
        summary.staging_deleted += 1
        if not cfg.dry_run:
            delete_quietly(fs, info.path, directory=info.type == pafs.FileType.Directory)


def _newest_mtime(fs: pafs.FileSystem, info: pafs.FileInfo) -> float:
    """The newest modification time in a staging folder: a writer still adding files keeps it young."""
    times = [info.mtime.timestamp() if info.mtime else time.time()]
    if info.type == pafs.FileType.Directory:
        for child in fs.get_file_info(pafs.FileSelector(info.path, recursive=True)):
            times.append(child.mtime.timestamp() if child.mtime else time.time())
    return max(times)
