"""The delta-rs engine: Spark writes Parquet, the `deltalake` package commits it as a Delta version.

Used wherever Spark's own Delta jars are missing (no Maven here). The data never passes through the
driver: Spark writes Parquet into a staging folder inside the table, the files are moved under the
table's partition folders, and one Delta transaction adds them (and, for overwrites, removes the files
they replace). Until that commit, readers see the previous version; a job killed before it leaves only
unreferenced files, which no Delta reader looks at.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import time
import uuid
from collections.abc import Callable, Sequence
from urllib.parse import quote, unquote, urlparse

import pyarrow.fs as pafs
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

STAGING_DIR = "_staging"
# App-transaction id every read-checked write (`read_version`) records: two such writes to one table
# based on the same version then conflict in delta-rs's commit check, even when both are appends.
READ_CHECK_APP_ID = "recsys.read-check"


class CommitConflict(RuntimeError):
    """A concurrent commit to the table won: this write's view of the table (read_version) is stale.

    Nothing of this write was committed; redo the read and the write from the new version, or give up.

    Parameters
    ----------
    table_uri : str
        The Delta table written to.
    read_version : int or None
        The version this write was based on (-1: the table did not exist; None: not read-checked).
    detail : str
        What conflicted, appended to the message.
    """

    def __init__(self, table_uri: str, read_version: int | None, detail: str):
        self.table_uri = table_uri
        self.read_version = read_version
        super().__init__(
            f"concurrent write conflict on Delta table {table_uri} (this write read version "
            f"{read_version}): {detail}"
        )


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """PyArrow filesystem and path for a lake URI (local path, file://, s3a:// ...).

    Parameters
    ----------
    uri : str
        A local path or a URI; s3a:// and s3n:// are read as s3://.

    Returns
    -------
    (pyarrow.fs.FileSystem, str)
        The filesystem and the path within it.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return pafs.LocalFileSystem(), unquote(parsed.path) if parsed.scheme else uri
    if parsed.scheme in ("s3a", "s3n"):
        uri = "s3://" + uri.split("://", 1)[1]
    return pafs.FileSystem.from_uri(uri)


def delete_quietly(fs: pafs.FileSystem, path: str, directory: bool = False) -> None:
    """Delete a file or folder; nothing to do when it is already gone (cleanup after a commit or a job).

    Parameters
    ----------
    fs : pyarrow.fs.FileSystem
        The filesystem holding `path`.
    path : str
        The file or folder, as a path within `fs`.
    directory : bool, default False
        Delete a folder with its contents instead of a file.

    Returns
    -------
    None
        Failures (already gone, or any OSError) are logged at debug level, not raised.
    """
    try:
        if directory:
            fs.delete_dir(path)
        else:
            fs.delete_file(path)
    except (FileNotFoundError, OSError):
        log.debug("nothing to delete at %s", path)


def write_atomically(uri: str, data: bytes) -> None:
    """Replace the small file at `uri` (local path or URI): a temporary sibling, then a move.

    Readers see the old file or the new one: a rename on POSIX and HDFS; object stores write the final
    object in one piece. The folder is created when missing; a failed write leaves no temporary file.

    Parameters
    ----------
    uri : str
        The file to replace (or create).
    data : bytes
        Its new contents.

    Returns
    -------
    None
        The file holds `data` when this returns; on error the original exception is re-raised.
    """
    fs, path = filesystem(uri)
    folder, name = posixpath.split(path)
    fs.create_dir(folder or ".", recursive=True)
    tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        delete_quietly(fs, tmp)  # best effort; the original error matters
        raise


def remove_dir(uri: str) -> None:
    """Delete a scratch folder given as a local path or URI, if it is there.

    Parameters
    ----------
    uri : str
        The folder (e.g. from `Lake.scratch_dir`).

    Returns
    -------
    None
        Nothing happens when the folder is already gone.
    """
    fs, path = filesystem(uri)
    delete_quietly(fs, path, directory=True)


def read_bytes(uri: str) -> io.BytesIO:
    """The whole small file at `uri` (local path or URI) in memory, e.g. a checkpoint for `torch.load`.

    Parameters
    ----------
    uri : str
        The file to read.

    Returns
    -------
    io.BytesIO
        Its contents, positioned at the start.
    """
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return io.BytesIO(stream.read())


def _delta_schema(spark_schema):
    from deltalake import Schema

    return Schema.from_json(spark_schema.json())


def _partition_values(relative_path: str, partition_by: Sequence[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for part in relative_path.split("/")[:-1]:
        if "=" in part:
            key, value = part.split("=", 1)
            value = unquote(value)
            values[key] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    missing = set(partition_by) - set(values)
    if missing:
        raise RuntimeError(f"staged file {relative_path} lacks partition folders {sorted(missing)}")
    return values


class DeltaRsCommitter:
    """Writes a Spark DataFrame as one new version of a Delta table at `table_uri`.

    Parameters
    ----------
    table_uri : str
        The Delta table (local path or URI), created by the first write.
    storage_options : dict of str to str, optional
        Passed to deltalake (credentials, endpoints).
    """

    def __init__(self, table_uri: str, storage_options: dict[str, str] | None = None):
        self.table_uri = table_uri
        self.storage_options = storage_options
        self.fs, self.root = filesystem(table_uri)

    def exists(self) -> bool:
        """Whether a Delta table is at `table_uri`.

        Returns
        -------
        bool
            True when the folder holds a Delta log.
        """
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.table_uri, storage_options=self.storage_options)

    def write(
        self,
        df,
        mode: str,
        partition_by: Sequence[str] = (),
        replace_partitions: Sequence[str] | None = None,
        commit_metadata: dict[str, str] | None = None,
        app_transaction: tuple[str, int] | None = None,
        spark_uri: str | None = None,
        before_commit: Callable | None = None,
        read_version: int | None = None,
    ) -> int:
        """Commit `df` as a new version and return it.

        mode: "overwrite" (replace the table), "append", or "replace_partitions" (replace exactly the
        values of the single partition column listed in `replace_partitions`, leaving others alone).
        `before_commit(staged_df)` runs on the staged files before anything is published; if it
        raises, the staged files are removed and no version is committed (the publish gate).
        `read_version`: the version the job computed `df` from (-1: the table did not exist). The commit
        is checked against it: if another read-checked write, an overwrite of the same files or the
        table's creation committed since, `CommitConflict` is raised and nothing is committed.

        Parameters
        ----------
        df : DataFrame
            The rows to commit.
        mode : {"overwrite", "append", "replace_partitions"}
            How the new files relate to the current ones (above).
        partition_by : sequence of str, default ()
            Partition columns of the table.
        replace_partitions : sequence of str, optional
            With "replace_partitions": the partition values to replace (empty: nothing is written).
        commit_metadata : dict of str to str, optional
            Custom metadata of the commit, kept in the table's history.
        app_transaction : (str, int), optional
            `(app_id, version)` idempotency marker recorded with the commit.
        spark_uri : str, optional
            The table's location as Spark sees it (default `table_uri`), for staging the Parquet files.
        before_commit : callable, optional
            `before_commit(staged_df)`, the publish gate; raising aborts the commit.
        read_version : int, optional
            The version `df` was computed from, to check the commit against.

        Returns
        -------
        int
            The table's version after the commit.

        Raises
        ------
        CommitConflict
            If a concurrent commit invalidates `read_version`, or another writer created the table or won
            the commit first.
        ValueError
            If "replace_partitions" is asked of a table without exactly one partition column.
        """
        from deltalake import DeltaTable
        from deltalake.exceptions import CommitFailedError
        from deltalake.transaction import CommitProperties, Transaction, create_table_with_add_actions

        run = uuid.uuid4().hex
        staging_rel = f"{STAGING_DIR}/{run}"
        staging_spark = f"{(spark_uri or self.table_uri).rstrip('/')}/{staging_rel}"
        writer = df.write.mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        moved: list[str] = []
        try:
            writer.parquet(staging_spark)
            if before_commit is not None:
                before_commit(self._staged_frame(df, staging_rel, staging_spark))
            adds, moved = self._publish_files(staging_rel, partition_by)
            transactions = [Transaction(*app_transaction)] if app_transaction else []
            if read_version is not None:
                transactions.append(Transaction(READ_CHECK_APP_ID, read_version + 1))
            properties = CommitProperties(
                custom_metadata=dict(commit_metadata or {}), app_transactions=transactions or None
            )
            schema = _delta_schema(df.schema)
            exists = self.exists()
            if read_version == -1 and exists:
                raise CommitConflict(self.table_uri, read_version, "the table was created concurrently")
            if not exists:
                try:
                    create_table_with_add_actions(
                        self.table_uri,
                        schema,
                        adds,
                        mode="error",
                        partition_by=list(partition_by) or None,
                        storage_options=self.storage_options,
                        commit_properties=properties,
                    )
                except Exception as exc:
                    if self.exists():  # another writer created it between our check and our commit
                        raise CommitConflict(self.table_uri, read_version, str(exc)) from exc
                    raise
            else:
                snapshot = read_version if read_version is not None and read_version >= 0 else None
                table = DeltaTable(self.table_uri, version=snapshot, storage_options=self.storage_options)
                filters = None
                delta_mode = "append" if mode == "append" else "overwrite"
                if mode == "replace_partitions":
                    if len(partition_by) != 1:
                        raise ValueError("replace_partitions needs exactly one partition column")
                    if not replace_partitions:
                        return table.version()  # nothing to replace, nothing to add
                    filters = [(partition_by[0], "in", list(replace_partitions))]
                try:
                    table.create_write_transaction(
                        adds,
                        mode=delta_mode,
                        schema=schema,
                        partition_by=list(partition_by) or None,
                        partition_filters=filters,
                        commit_properties=properties,
                    )
                except CommitFailedError as exc:
                    raise CommitConflict(self.table_uri, table.version(), str(exc)) from exc
        except BaseException:
            for path in moved:  # files of a version that was never committed
                self._delete_quietly(path)
            raise
        finally:
            self._delete_quietly(posixpath.join(self.root, staging_rel), directory=True)
        return DeltaTable(self.table_uri, storage_options=self.storage_options).version()

    def _staged_frame(self, df, staging_rel: str, staging_spark: str):
        """The staged Parquet files as a DataFrame with `df`'s schema and column order."""
        selector = pafs.FileSelector(posixpath.join(self.root, staging_rel), recursive=True)
        if not any(i.base_name.endswith(".parquet") for i in self.fs.get_file_info(selector)):
            return df.sparkSession.createDataFrame([], df.schema)
        return df.sparkSession.read.schema(df.schema).parquet(staging_spark).select(*df.columns)

    def _publish_files(self, staging_rel: str, partition_by: Sequence[str]):
        """Move staged Parquet files under the table's partition folders; return their AddActions."""
        from deltalake.transaction import AddAction

        staging = posixpath.join(self.root, staging_rel)
        selector = pafs.FileSelector(staging, recursive=True)
        adds, moved = [], []
        now_ms = int(time.time() * 1000)
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
                continue
            relative = posixpath.relpath(info.path, staging)
            target = posixpath.join(self.root, relative)
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            self.fs.move(info.path, target)
            moved.append(target)
            rows = pq.read_metadata(target, filesystem=self.fs).num_rows
            adds.append(
                AddAction(
                    quote(relative, safe="/="),
                    info.size,
                    _partition_values(relative, partition_by),
                    now_ms,
                    True,
                    json.dumps({"numRecords": rows}),
                )
            )
        return adds, moved

    def _delete_quietly(self, path: str, directory: bool = False) -> None:
        delete_quietly(self.fs, path, directory)
