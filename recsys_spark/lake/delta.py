"""The lake: a directory of Delta tables behind one interface, whichever Delta engine is available.

- `spark`: Spark's own `format("delta")`, used when the Delta Lake jars are on the classpath
  (production clusters: `spark-submit --packages io.delta:delta-spark_2.13:<version>`).
- `delta-rs`: Spark writes Parquet and the `deltalake` package commits it (`lake/commit.py`); used
  when the jars are missing, as on a laptop or in CI here.

Both produce standard Delta tables: any Delta reader (Spark with Delta, deltalake, DuckDB) reads them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from recsys_spark.lake.commit import CommitConflict, DeltaRsCommitter, filesystem
from recsys_spark.lake.tables import table_schema

log = logging.getLogger(__name__)

ENGINES = ("auto", "spark", "delta-rs")
CONFLICT_ATTEMPTS = 3  # tries of a read-then-write step that keeps losing to concurrent commits

# (column, op, value) partition filters as deltalake takes them: op one of =, !=, in, not in.
PartitionFilter = tuple[str, str, Any]

# gate(table, df_about_to_be_published, context): raise to stop the commit (see set_gate).
Gate = Callable[[str, Any, Mapping[str, Any]], None]


def _normalise_root(root: str) -> str:
    parsed = urlparse(str(root))
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else str(root)
        return os.path.abspath(os.path.expanduser(path))
    return str(root).rstrip("/")


class Lake:
    """Tables under `root`: table `T` is the Delta table at `root/T`.

    Reports, models, checkpoints and the landing zone live under `_reports`, `_models`, `_checkpoints`
    and `_landing` next to the tables.

    Parameters
    ----------
    spark : SparkSession
        The session that reads and writes the tables.
    root : str
        The lake's folder: a local path, a file:// URI or an object-store URI (s3a:// ...).
    engine : {"auto", "spark", "delta-rs"}, default "auto"
        The Delta engine; "auto" is "spark" when the Delta Lake jars are on the classpath, else "delta-rs".
    storage_options : dict of str to str, optional
        Passed to deltalake (credentials, endpoints) on the delta-rs engine.

    Raises
    ------
    ValueError
        If `engine` is unknown, or is "spark" without the Delta Lake jars.
    """

    def __init__(self, spark, root: str, engine: str = "auto", storage_options: dict[str, str] | None = None):
        if engine not in ENGINES:
            raise ValueError(f"unknown lake engine {engine!r}; choose one of {ENGINES}")
        self.spark = spark
        self.root = _normalise_root(root)
        self.storage_options = storage_options
        from recsys_spark.session import delta_available

        if engine == "auto":
            engine = "spark" if delta_available(spark) else "delta-rs"
        elif engine == "spark" and not delta_available(spark):
            raise ValueError(
                "--engine spark needs the Delta Lake jars on Spark's classpath "
                "(spark-submit --packages io.delta:delta-spark_2.13:4.0.0); use --engine auto or delta-rs"
            )
        self.engine = engine
        self.is_local = "://" not in self.root
        self.gate: Gate | None = None
        log.info("lake at %s (engine %s)", self.root, engine)

    # -- paths -------------------------------------------------------------------------------
    def uri(self, table: str) -> str:
        """Location of a table as deltalake and the filesystem see it.

        Parameters
        ----------
        table : str
            Table name.

        Returns
        -------
        str
            `root/table` (a plain path on a local lake).
        """
        return os.path.join(self.root, table) if self.is_local else f"{self.root}/{table}"

    def spark_uri(self, table: str) -> str:
        """Location of a table as Spark sees it (local paths as file:// URIs).

        Parameters
        ----------
        table : str
            Table name.

        Returns
        -------
        str
            The table's URI for Spark readers and writers.
        """
        return f"file://{self.uri(table)}" if self.is_local else self.uri(table)

    def path(self, *parts: str) -> str:
        """A non-table location under the lake, e.g. `lake.path("_reports", "quality")`.

        Parameters
        ----------
        *parts : str
            Path components below the root.

        Returns
        -------
        str
            The joined path (a plain path on a local lake, a URI otherwise).
        """
        return os.path.join(self.root, *parts) if self.is_local else "/".join([self.root, *parts])

    def scratch_dir(self, prefix: str = "walks") -> str:
        """A fresh folder under `_tmp` for intermediate files every executor can read (as a Spark URI).

        The caller deletes it when done (`lake.commit.remove_dir`); the name is unique per process and call.

        Parameters
        ----------
        prefix : str, default "walks"
            Start of the folder's name.

        Returns
        -------
        str
            The folder's Spark URI (`_tmp/<prefix>-<pid>-<random>`); it is not created here.
        """
        path = self.path("_tmp", f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        return f"file://{path}" if self.is_local else path

    def set_gate(self, gate: Gate | None) -> None:
        """Install (None: remove) a publish gate, called on every write after the new data is computed
        and before the Delta commit, as `gate(table, df, context)`. `df` is the data about to become
        the new version (on delta-rs: the staged Parquet files, so nothing is computed twice);
        `context` has `mode`, `partition_column`, `partitions` and `metadata`. If the gate raises,
        nothing is committed and the table stays at its previous version (quality/gate.py).

        Parameters
        ----------
        gate : callable or None
            `gate(table, df, context)`, raising to refuse a write; None removes the current gate.

        Returns
        -------
        None
            The gate applies to every later gated write of this `Lake`.
        """
        self.gate = gate

    def _committer(self, table: str) -> DeltaRsCommitter:
        return DeltaRsCommitter(self.uri(table), self.storage_options)

    # -- reading -----------------------------------------------------------------------------
    def exists(self, table: str) -> bool:
        """Whether `table` is a Delta table in the lake.

        Parameters
        ----------
        table : str
            Table name.

        Returns
        -------
        bool
            True when `root/table` holds a Delta table.
        """
        if self.engine == "spark":
            from delta.tables import DeltaTable

            return DeltaTable.isDeltaTable(self.spark, self.spark_uri(table))
        return self._committer(table).exists()

    def version(self, table: str) -> int | None:
        """Latest version of a table, None when it does not exist.

        Parameters
        ----------
        table : str
            Table name.

        Returns
        -------
        int or None
            The newest version number, None when there is no such table.
        """
        if not self.exists(table):
            return None
        return self.history(table, limit=1)[0]["version"]

    def read(
        self,
        table: str,
        version: int | None = None,
        dates: Iterable[dt.date | str] | None = None,
        partition_filters: Sequence[PartitionFilter] | None = None,
    ):
        """The table (at `version`, default the latest) as a Spark DataFrame.

        `dates` (rows with `dt` in them) and `partition_filters` (e.g. `[("dt", "=", "2026-11-07")]`)
        prune by partition: only those partitions' files are listed and read. The rows are the same as
        filtering the whole table.

        Parameters
        ----------
        table : str
            Table name.
        version : int, optional
            Version to read by time travel; default the latest.
        dates : iterable of date or str, optional
            Keep only rows whose `dt` is one of these days (an empty iterable: no rows).
        partition_filters : sequence of (column, op, value), optional
            Partition filters, op one of `=`, `!=`, `in`, `not in`; values compare as strings.

        Returns
        -------
        DataFrame
            The rows, in the table's column order.

        Raises
        ------
        FileNotFoundError
            If the table does not exist.
        """
        filters = list(partition_filters or [])
        if dates is not None:
            filters.append(("dt", "in", sorted({str(d) for d in dates})))
        if not self.exists(table):
            raise FileNotFoundError(
                f"table {table!r} does not exist in lake {self.root}; run the job that produces it "
                f"(e.g. `recsys-spark generate --lake {self.root}` or `recsys-spark ingest ...`) first"
            )
        if self.engine == "spark":
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            return _filtered(reader.load(self.spark_uri(table)), filters)  # Delta prunes by partition itself
        import warnings

        from deltalake import DeltaTable
        from pyspark.sql import types as T

        delta = DeltaTable(self.uri(table), version=version, storage_options=self.storage_options)
        schema = T.StructType.fromJson(json.loads(delta.schema().to_json()))
        if filters and any(v == [] for _, op, v in filters if op == "in"):
            files = []  # `dt IN ()`: nothing matches (deltalake refuses an empty list)
        else:
            with warnings.catch_warnings():  # deprecated for file_pruning_predicate, same semantics here
                warnings.simplefilter("ignore", DeprecationWarning)
                files = delta.file_uris(partition_filters=_string_filters(filters) or None)
        if not files:
            return self.spark.createDataFrame([], schema)
        if self.is_local:
            files = [f if "://" in f else f"file://{f}" for f in files]
        frame = self.spark.read.schema(schema).option("basePath", self.spark_uri(table)).parquet(*files)
        return frame.select(*schema.fieldNames())  # Spark moves partition columns last; keep table order

    def read_as_of(self, table: str, day: dt.date | str):
        """The table as a job for `day` may see it: only data that ended before `day`; None if there is none.

        A table partitioned by `dt` is read at its latest version, rows `dt < day` (its partitions are
        its days). Any other table is read by Delta time travel at its newest version whose commit
        records a `date` before `day` (the daily jobs record the day they computed, and that day's data
        ends with it), so a version built with day `day`'s events, or by a backfill of a later day, is
        never seen. A table partitioned by another column whose commits record that column (`walks`,
        `item_embeddings`: `method`) is resolved per value: each value from its own newest such commit.
        None when the table does not exist or no version of it is dated before `day`.

        Parameters
        ----------
        table : str
            Table name.
        day : date or str
            The day of the job (ISO string or date); only data from before it is returned.

        Returns
        -------
        DataFrame or None
            The table as of `day`, or None (see above).
        """
        from pyspark.sql import functions as F

        day = dt.date.fromisoformat(day) if isinstance(day, str) else day
        if not self.exists(table):
            return None
        schema = table_schema(table)
        by = schema.partition_by if schema is not None else ()
        if by == ("dt",) or (schema is None and "dt" in self.read(table).columns):
            return self.read(table).filter(F.col("dt") < F.lit(day))
        # ISO dates compare as strings; a commit without a date (written by hand) is not known to be older.
        dated = [e for e in self.history(table) if str(e.get("date") or "9999") < str(day)]
        if len(by) == 1 and dated and all(by[0] in e for e in dated):
            newest: dict[str, int] = {}
            for entry in dated:  # newest first
                newest.setdefault(str(entry[by[0]]), entry["version"])
            log.info(
                "%s as of %s: %s", table, day, ", ".join(f"{k} at version {v}" for k, v in newest.items())
            )
            parts = [self.read(table, version=v).filter(F.col(by[0]) == F.lit(k)) for k, v in newest.items()]
            out = parts[0]
            for part in parts[1:]:
                out = out.unionByName(part)
            return out
        if not dated:
            return None
        log.info("%s as of %s: version %s (of %s)", table, day, dated[0]["version"], dated[0].get("date"))
        return self.read(table, version=dated[0]["version"])

    def history(self, table: str, limit: int | None = None) -> list[dict]:
        """Versions newest first: `version`, `timestamp`, `operation` and the commit's metadata.

        Parameters
        ----------
        table : str
            Table name (it must exist).
        limit : int, optional
            At most this many newest versions; default all.

        Returns
        -------
        list of dict
            One dict per version, newest first, the commit metadata flattened into it.
        """
        if self.engine == "spark":
            rows = self.spark.sql(f"DESCRIBE HISTORY delta.`{self.spark_uri(table)}`").collect()
            # Our commit metadata travels as JSON in userMetadata: flatten it as delta-rs does.
            out = [
                {
                    **json.loads(r["userMetadata"] or "{}"),
                    "version": r["version"],
                    "timestamp": r["timestamp"],
                    "operation": r["operation"],
                }
                for r in rows
            ]
            return out[:limit] if limit else out
        from deltalake import DeltaTable

        entries = DeltaTable(self.uri(table), storage_options=self.storage_options).history(limit)
        return sorted(entries, key=lambda e: e["version"], reverse=True)

    # -- writing -----------------------------------------------------------------------------
    def overwrite(
        self, table: str, df, metadata: dict[str, str] | None = None, read_version: int | None = None
    ) -> int:
        """Replace the whole table with `df` as one new version; returns the version.

        With `read_version`, a concurrent commit since that version raises `CommitConflict` instead of
        being silently replaced (a lost update).

        Parameters
        ----------
        table : str
            Table name; created if missing.
        df : DataFrame
            The new contents (conformed to the table's registered schema, if it has one).
        metadata : dict of str to str, optional
            Commit metadata (e.g. `date`), kept in the table's history.
        read_version : int, optional
            The version `df` was computed from (see `read_version`), to check the commit against.

        Returns
        -------
        int
            The version committed.

        Raises
        ------
        CommitConflict
            If `read_version` is given and another read-checked write committed since.
        """
        return self._write(table, df, "overwrite", metadata=metadata, read_version=read_version)

    def append(
        self,
        table: str,
        df,
        metadata: dict[str, str] | None = None,
        app_transaction: tuple[str, int] | None = None,
        read_version: int | None = None,
    ) -> int:
        """Add `df`'s rows as one new version. `app_transaction=(app_id, n)` records an idempotency marker.

        `read_version`: the version `df` was computed from (see `read_version`); if another read-checked
        write committed since, `CommitConflict` is raised and nothing is written.

        Parameters
        ----------
        table : str
            Table name; created if missing.
        df : DataFrame
            The rows to add.
        metadata : dict of str to str, optional
            Commit metadata, kept in the table's history.
        app_transaction : (str, int), optional
            `(app_id, n)` idempotency marker recorded with the commit.
        read_version : int, optional
            The version `df` was computed from, to check the commit against.

        Returns
        -------
        int
            The version committed.

        Raises
        ------
        CommitConflict
            If `read_version` is given and another read-checked write committed since.
        """
        return self._write(
            table, df, "append", metadata=metadata, app_transaction=app_transaction, read_version=read_version
        )

    def read_version(self, table: str) -> int:
        """The version a read-then-write job reads now, for its write's `read_version` (-1: no table).

        Parameters
        ----------
        table : str
            Table name.

        Returns
        -------
        int
            The latest version, -1 when the table does not exist.
        """
        version = self.version(table)
        return -1 if version is None else version

    def overwrite_dates(
        self, table: str, df, dates: Iterable[dt.date | str], metadata: dict[str, str] | None = None
    ) -> int:
        """Replace exactly the `dt` partitions in `dates` with `df` (whose rows must lie in them).

        Re-running a day replaces that day: idempotent, never duplicated. Dates in `dates` with no rows
        in `df` end up empty.

        Parameters
        ----------
        table : str
            Table name, partitioned by `dt` alone.
        df : DataFrame
            The new rows of those days.
        dates : iterable of date or str
            The days to replace.
        metadata : dict of str to str, optional
            Commit metadata, kept in the table's history.

        Returns
        -------
        int
            The version committed.

        Raises
        ------
        ValueError
            If the table is not partitioned by `dt` alone.
        """
        return self.overwrite_partitions(table, df, "dt", dates, metadata=metadata)

    def overwrite_partitions(
        self, table: str, df, column: str, values: Iterable, metadata: dict[str, str] | None = None
    ) -> int:
        """Replace exactly the partitions `column IN values` with `df`, leaving the others as they are.

        Rows of `df` outside `values` are dropped, so a replace can never leak into another partition.

        Parameters
        ----------
        table : str
            Table name, partitioned by `column` alone.
        df : DataFrame
            The new rows of those partitions.
        column : str
            The partition column.
        values : iterable
            The partition values to replace (compared as strings).
        metadata : dict of str to str, optional
            Commit metadata, kept in the table's history.

        Returns
        -------
        int
            The version committed (with `values` empty, an existing table's current version).

        Raises
        ------
        ValueError
            If the table is not partitioned by `column` alone.
        """
        wanted = sorted({str(v) for v in values})
        return self._write(
            table, df, "replace_partitions", metadata=metadata, partition_column=column, values=wanted
        )

    def drop_partitions(
        self, table: str, column: str, values: Iterable, metadata: dict[str, str] | None = None
    ) -> int:
        """Remove the partitions `column IN values` as one new version, without the publish gate.

        Removing what no reader references publishes no data, so there is nothing to validate (a
        gate's "there are rows" check would otherwise refuse every clean-up of the last rows).

        Parameters
        ----------
        table : str
            Table name, partitioned by `column` alone.
        column : str
            The partition column.
        values : iterable
            The partition values to remove (compared as strings).
        metadata : dict of str to str, optional
            Commit metadata, kept in the table's history.

        Returns
        -------
        int
            The version committed.

        Raises
        ------
        FileNotFoundError
            If the table does not exist.
        ValueError
            If the table is not partitioned by `column` alone.
        """
        wanted = sorted({str(v) for v in values})
        empty = self.spark.createDataFrame([], self.read(table).schema)
        return self._write(table, empty, "replace_partitions", metadata, column, wanted, gated=False)

    def _write(
        self,
        table,
        df,
        mode,
        metadata=None,
        partition_column: str | None = None,
        values: Sequence[str] | None = None,
        app_transaction=None,
        gated: bool = True,
        read_version: int | None = None,
    ):
        schema = table_schema(table)
        partition_by: tuple[str, ...] = ()
        if schema is not None:
            df = schema.conform(df)
            partition_by = schema.partition_by
        elif "dt" in df.columns:
            partition_by = ("dt",)
        if mode == "replace_partitions":
            if partition_by != (partition_column,):
                raise ValueError(
                    f"table {table} is not partitioned by {partition_column} alone: {partition_by}"
                )
            from pyspark.sql import functions as F

            df = df.filter(F.col(partition_column).cast("string").isin(list(values or [])))
        meta = {"recsys.table": table, **(metadata or {})}
        check = self._gate_check(table, mode, partition_column, values, meta) if gated else None
        if self.engine == "spark":
            return self._write_spark(table, df, mode, partition_by, values, meta, check, app_transaction)
        version = self._committer(table).write(
            df,
            mode,
            partition_by=partition_by,
            replace_partitions=values,
            commit_metadata=meta,
            app_transaction=app_transaction,
            spark_uri=self.spark_uri(table),
            before_commit=check,
            read_version=read_version,
        )
        log.info("committed %s version %s (%s)", table, version, mode)
        return version

    def _gate_check(self, table, mode, partition_column, values, meta) -> Callable | None:
        """`check(df)` calling the gate with this write's context; None without a gate or for a no-op."""
        if self.gate is None or (mode == "replace_partitions" and not values):
            return None
        gate = self.gate
        context = {
            "mode": mode,
            "partition_column": partition_column,
            "partitions": list(values or []),
            "metadata": meta,
        }

        def check(staged) -> None:
            gate(table, staged, context)

        return check

    def _write_spark(
        self, table, df, mode, partition_by, values, meta, check=None, app_transaction=None
    ) -> int:
        if check is not None:
            # No staging folder on this engine: cache the rows so the gate and the write compute them once.
            df = df.persist()
            try:
                check(df)
                return self._write_spark(table, df, mode, partition_by, values, meta, None, app_transaction)
            finally:
                df.unpersist()
        # A column the contract added later (e.g. rank_samples.pair_dense) joins an existing table: `_write`
        # conformed the frame to the table's contract, so schema merging only ever adds its columns.
        writer = (
            df.write.format("delta").option("userMetadata", json.dumps(meta)).option("mergeSchema", "true")
        )
        if app_transaction:  # Delta's idempotent-write marker; a version already recorded is skipped
            writer = writer.option("txnAppId", app_transaction[0]).option("txnVersion", app_transaction[1])
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if mode == "append":
            writer = writer.mode("append")
        else:
            writer = writer.mode("overwrite").option("partitionOverwriteMode", "static")
            if mode == "replace_partitions":
                if not values:
                    return self.version(table) or 0
                column = partition_by[0]
                literals = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
                writer = writer.option("replaceWhere", f"CAST({column} AS STRING) IN ({literals})")
        writer.save(self.spark_uri(table))
        return self.version(table)

    # -- housekeeping ------------------------------------------------------------------------
    def tables(self) -> list[str]:
        """The tables of the lake: its Delta-table folders not starting with `_`.

        Returns
        -------
        list of str
            Table names, sorted; empty when the root does not exist.
        """
        fs, root = filesystem(self.root)
        import pyarrow.fs as pafs

        try:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
        except FileNotFoundError:
            return []
        return sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory
            and not i.base_name.startswith("_")
            and self.exists(i.base_name)
        )

    def latest_date(self, table: str = "events") -> dt.date | None:
        """The latest `dt` in a date-partitioned table (the default day of the daily jobs).

        On delta-rs it comes from the partition values of the latest version's files in the Delta log:
        no data file is read, however large the table.

        Parameters
        ----------
        table : str, default "events"
            Table name, partitioned by `dt`.

        Returns
        -------
        date or None
            The latest day, None when the table does not exist or has no dated rows.
        """
        from pyspark.sql import functions as F

        if not self.exists(table):
            return None
        if self.engine == "spark":
            return self.read(table).agg(F.max("dt")).first()[0]
        from deltalake import DeltaTable

        delta = DeltaTable(self.uri(table), storage_options=self.storage_options)
        days = [p.get("dt") for p in delta.partitions()]
        days = [d for d in days if d not in (None, "__HIVE_DEFAULT_PARTITION__")]
        return dt.date.fromisoformat(max(days)) if days else None


def retry_on_conflict(step: Callable[[], Any], what: str, attempts: int = CONFLICT_ATTEMPTS) -> Any:
    """Run a read-then-write `step` again while it loses to concurrent commits (`CommitConflict`).

    Safe only for steps that read the table afresh each time, so a retry starts from the new version.
    After `attempts` losses the conflict is raised with `what` and the count in its message.

    Parameters
    ----------
    step : callable
        The read-then-write step, called without arguments.
    what : str
        What the step does, for the log and the final error message.
    attempts : int, default CONFLICT_ATTEMPTS
        How many times to try.

    Returns
    -------
    Any
        What `step` returned on its first attempt without a conflict.

    Raises
    ------
    CommitConflict
        If every attempt lost to a concurrent commit.
    """
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except CommitConflict as exc:
            if attempt == attempts:
                raise CommitConflict(
                    exc.table_uri, exc.read_version, f"{what}: gave up after {attempts} attempts: {exc}"
                ) from exc
            log.warning(
                "%s: %s; retrying from the new version (attempt %d of %d)", what, exc, attempt + 1, attempts
            )
    raise AssertionError("unreachable")


def _string_filters(filters: Sequence[PartitionFilter]) -> list[PartitionFilter]:
    """Partition values are strings in the Delta log: compare them as such (dates in ISO form)."""
    out: list[PartitionFilter] = []
    for column, op, value in filters:
        if isinstance(value, (list, tuple, set)):
            out.append((column, op, sorted(str(v) for v in value)))
        else:
            out.append((column, op, str(value)))
    return out


def _filtered(frame, filters: Sequence[PartitionFilter]):
    from pyspark.sql import functions as F

    for column, op, value in _string_filters(filters):
        col = F.col(column).cast("string")
        if op in ("in", "not in"):
            cond = col.isin(list(value))
            frame = frame.filter(cond if op == "in" else ~cond)
        else:
            frame = frame.filter(col == value if op == "=" else col != value)
    return frame
