"""`recsys-spark <job> --lake PATH [options]`: the one command line of every job.

`jobs/<job>.py` (for `spark-submit`) delegates here, so both paths run the same code. Each job is a
config dataclass plus a `run(config, spark, lake) -> exit code` function, looked up in `JOBS` and
imported only when chosen, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence

from recsys_spark.catalog import EXIT_FAILED, EXIT_OK, EXIT_USAGE, JOBS
from recsys_spark.config import add_config_arguments, config_from_namespace
from recsys_spark.errors import UsageError  # defined in the bottom layer; still importable from here

log = logging.getLogger("recsys_spark")


def _top_level_help() -> str:
    width = max(len(j) for j in JOBS)
    lines = [
        "usage: recsys-spark <job> --lake PATH [options]   (recsys-spark <job> --help for a job's options)",
        "",
        "jobs:",
    ]
    lines += [f"  {name.ljust(width)}  {JOBS[name][3]}" for name in JOBS]
    return "\n".join(lines)


def build_parser(job: str) -> tuple[argparse.ArgumentParser, type]:
    module_name, config_name, _, summary = JOBS[job]
    config_cls = getattr(importlib.import_module(module_name), config_name)
    parser = argparse.ArgumentParser(
        prog=f"recsys-spark {job}",
        description=summary + ("\n\n" + config_cls.__doc__.strip() if config_cls.__doc__ else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, config_cls)
    return parser, config_cls


def _is_py4j_retry(record: logging.LogRecord) -> bool:
    """py4j's note that it is retrying a command on a fresh connection (INFO, on the root logger).

    It follows every Horovod/TorchDistributor launch (the launcher's forked children close a copy of
    the driver's gateway socket) with a full traceback although the retry succeeds; a failed retry
    is logged again at ERROR and stays visible.
    """
    return record.levelno < logging.WARNING and record.getMessage() == "Exception while sending command."


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "urllib3", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if level.upper() != "DEBUG":
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: not _is_py4j_retry(record))


def main(argv: Sequence[str] | None = None, spark=None) -> int:
    """Run one job and return its exit code. With `spark` given, reuse that session (tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return EXIT_OK if argv else EXIT_USAGE
    job, rest = argv[0], argv[1:]
    if job not in JOBS:
        print(f"recsys-spark: unknown job {job!r}\n\n{_top_level_help()}", file=sys.stderr)
        return EXIT_USAGE
    parser, config_cls = build_parser(job)
    try:
        namespace = parser.parse_args(rest)
    except SystemExit as exc:  # argparse exits 0 for --help and 2 for bad usage
        return int(exc.code or 0)
    config = config_from_namespace(config_cls, namespace)
    _configure_logging(config.log_level)
    module_name, _, run_name, _ = JOBS[job]
    run = getattr(importlib.import_module(module_name), run_name)

    from recsys_spark.lake.commit import CommitConflict
    from recsys_spark.lake.delta import Lake
    from recsys_spark.quality.gate import QualityGateError, enable_gates
    from recsys_spark.session import spark_session

    started = time.time()
    owns_session = spark is None
    try:
        if owns_session:
            # Spark's start-up lines (log4j profile, hostname) only at --log-level DEBUG.
            quiet = config.log_level.upper() != "DEBUG"
            spark = spark_session(app_name=f"recsys-spark {job}", master=config.master, quiet=quiet)
        lake = Lake(spark, config.lake, engine=config.engine)
        if hasattr(config, "date") and config.date is None and job not in ("generate", "ingest"):
            config.date = lake.latest_date("events")
            if config.date is None:
                raise UsageError(f"--date not given and lake {lake.root} has no events to take it from")
            log.info("%s: --date defaults to the latest day in events: %s", job, config.date)
        if getattr(config, "gate", False):
            # Every table this job writes passes its critical suite before the Delta commit, or stays
            # at its previous version: a job alone (Airflow task, spark-submit) publishes what run-daily would.
            enable_gates(lake, config.date)
        log.info("%s: starting (lake %s, engine %s)", job, lake.root, lake.engine)
        code = run(config, spark, lake)
        log.info("%s: finished with exit code %s in %.1fs", job, code, time.time() - started)
        return int(code or 0)
    except UsageError as exc:
        print(f"recsys-spark {job}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"recsys-spark {job}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except QualityGateError as exc:
        print(f"recsys-spark {job}: stopped by a quality gate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CommitConflict as exc:  # another writer won the table: nothing of this job's write is in it
        log.error("%s: %s", job, exc)
        print(f"recsys-spark {job}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:
        log.exception("%s: failed after %.1fs; published tables are unchanged", job, time.time() - started)
        return EXIT_FAILED
    finally:
        if owns_session and spark is not None:
            spark.stop()


def entrypoint() -> None:
    """Console script: run, flush, and exit hard.

    delta-rs can abort the interpreter at exit now and then (delta-rs issue 2184, exit 134), which
    would turn a success into a failure; `os._exit` after flushing keeps the real exit code.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entrypoint()
