"""Spark session factory: `local[*]` by default, a cluster via `--master` or `SPARK_MASTER`.

Nothing here runs at import time; call `spark_session()` from a job or a test fixture.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
QUIET_LOG4J = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf", "log4j2.properties")
VERBOSE_LEVELS = ("DEBUG", "TRACE", "ALL")


def _python_for_workers() -> None:
    # Spark's Python workers otherwise run the system python3, which lacks our packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def _delta_jars_configured(conf: Mapping[str, str]) -> bool:
    """True when the Delta Lake jars will be on the classpath of the session about to start.

    They arrive by `--packages io.delta:delta-spark_...`, `--jars .../delta-spark_*.jar` or by being
    copied into `$SPARK_HOME/jars` (common on managed clusters).
    """
    for key in ("spark.jars.packages", "spark.jars"):
        if "delta-spark" in conf.get(key, "") or "delta-core" in conf.get(key, ""):
            return True
    homes = [os.environ.get("SPARK_HOME", "")]
    try:
        import pyspark

        homes.append(os.path.dirname(pyspark.__file__))
    except ImportError:  # pragma: no cover - pyspark is a hard dependency
        pass
    return any(home and glob.glob(os.path.join(home, "jars", "delta-spark_*.jar")) for home in homes)


def _quiet_start_up(settings: dict[str, str], merged: Mapping[str, str], master: str) -> None:
    """Keep Spark's start-up chatter off the console unless debugging (or the caller chose otherwise).

    Only effective before the driver JVM starts (not under spark-submit, whose JVM already runs):
    our log4j2 profile (root WARN, NativeCodeLoader at ERROR) replaces Spark's default one, which
    announces itself and its level at every start, and a local master binds to 127.0.0.1 instead of
    warning that the hostname resolves to a loopback address. A caller's own
    `-Dlog4j2.configurationFile` or `SPARK_LOCAL_IP` wins.
    """
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        return
    java_options = merged.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" not in java_options and "log4j.configurationFile" not in java_options:
        settings["spark.driver.extraJavaOptions"] = (
            f"{java_options} -Dlog4j2.configurationFile={QUIET_LOG4J}".strip()
        )
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def local_shuffle_partitions(cores: int | None = None) -> int:
    """Shuffle partitions for a local run: a few per core instead of Spark's 200 tiny tasks."""
    return max(2, 2 * (cores or os.cpu_count() or 2))


def spark_session(
    app_name: str = "recsys-spark",
    master: str | None = None,
    shuffle_partitions: int | None = None,
    conf: Mapping[str, str] | None = None,
    log_level: str = "WARN",
    quiet: bool | None = None,
):
    """Return the active session or build one.

    `master` falls back to `SPARK_MASTER`, then to whatever `spark-submit --master` set, then `local[*]`.
    Local runs get shuffle partitions sized to the cores and no UI; cluster runs keep Spark's own
    settings unless `shuffle_partitions` is given. Delta's SQL extension is configured only when its
    jars are on the classpath; otherwise the lake commits through delta-rs (see `recsys_spark.lake`).
    Below DEBUG, Spark's start-up noise is quieted (see `_quiet_start_up`).

    Parameters
    ----------
    app_name : str
        Spark application name.
    master : str, optional
        Spark master URL; default `SPARK_MASTER`, then spark-submit's `--master`, then `local[*]`.
    shuffle_partitions : int, optional
        `spark.sql.shuffle.partitions`; default a few per core on local masters, Spark's own otherwise.
    conf : Mapping[str, str], optional
        Extra Spark settings; they override ours.
    log_level : str
        Level of Spark's JVM logging (`sc.setLogLevel`); `DEBUG`, `TRACE` or `ALL` also keeps the
        start-up messages and Spark's default log4j profile.
    quiet : bool, optional
        Quiet Spark's start-up messages; default: unless `log_level` is `DEBUG`, `TRACE` or `ALL`.
        The CLI passes ``False`` at ``--log-level DEBUG``.

    Returns
    -------
    pyspark.sql.SparkSession
        The active session, or a new one.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    _python_for_workers()
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Under spark-submit the JVM already runs, with --master/--conf/--packages as its system
        # properties; SparkConf() sees them only once the gateway is connected (before, it is empty and
        # every spark-submit ran on local[*] whatever its --master). Connecting starts no new JVM.
        from pyspark import SparkContext

        SparkContext._ensure_initialized()
    submitted = SparkConf()  # picks up spark-submit's --master / --conf / --packages
    master = master or os.environ.get("SPARK_MASTER") or submitted.get("spark.master", None) or "local[*]"
    builder = SparkSession.builder.appName(app_name).master(master)
    settings: dict[str, str] = {
        "spark.sql.session.timeZone": "UTC",
        # Delta readers (delta-rs, DuckDB) expect INT64 microsecond timestamps, not Spark's legacy INT96.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.parquet.compression.codec": "snappy",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
    }
    if master.startswith("local"):
        cores = None
        inner = master[len("local") :].strip("[]")
        if inner.isdigit():
            cores = int(inner)
        settings.update(
            {
                "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": str(shuffle_partitions or local_shuffle_partitions(cores)),
                "spark.default.parallelism": str(local_shuffle_partitions(cores)),
                "spark.driver.memory": os.environ.get("RECSYS_DRIVER_MEMORY", "4g"),
                "spark.sql.adaptive.enabled": "true",
                "spark.sql.adaptive.coalescePartitions.enabled": "true",
            }
        )
    elif shuffle_partitions:
        settings["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    merged = {**{k: v for k, v in submitted.getAll()}, **settings, **dict(conf or {})}
    if _delta_jars_configured(merged):
        settings["spark.sql.extensions"] = DELTA_EXTENSION
        settings["spark.sql.catalog.spark_catalog"] = DELTA_CATALOG
    if quiet is None:
        quiet = log_level.upper() not in VERBOSE_LEVELS
    if quiet:
        _quiet_start_up(settings, merged, master)
    for key, value in {**settings, **dict(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    _quiet_single_partition_window_warning(spark, log_level)
    log.info("spark session %s on %s (Spark %s)", app_name, master, spark.version)
    return spark


def _quiet_single_partition_window_warning(spark, log_level: str) -> None:
    """Keep WindowExec's "No Partition Defined" warning out of the logs unless debugging.

    Our windows without PARTITION BY number vocabularies and catalogues (items, not events), on
    purpose; Spark repeats the warning at every plan, hundreds of times per daily run, burying the
    progress lines. Driver-side only: the warning is raised while planning.
    """
    if log_level.upper() in VERBOSE_LEVELS:
        return
    try:
        jvm = spark.sparkContext._jvm
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.spark.sql.execution.window.WindowExec", jvm.org.apache.logging.log4j.Level.ERROR
        )
    except Exception as exc:  # another logging backend: the warning stays, nothing else changes
        log.debug("cannot lower WindowExec's log level: %s", exc)


def delta_available(spark) -> bool:
    """True when Spark's own `format("delta")` works in this session (the Delta jars are loaded)."""
    try:
        spark._jvm.java.lang.Class.forName(DELTA_EXTENSION)
    except Exception:
        return False
    return spark.conf.get("spark.sql.extensions", "") == DELTA_EXTENSION or DELTA_EXTENSION in spark.conf.get(
        "spark.sql.extensions", ""
    )
