"""The command line: job list, per-job --help, usage errors, and the spark-submit entry points."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_spark import cli
from recsys_spark.config import CommonConfig, DatedConfig, add_config_arguments, config_from_params, option

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_job(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for job in cli.JOBS:
        assert job in out
    assert cli.main([]) == 2


def test_unknown_job_is_a_usage_error(capsys):
    assert cli.main(["nonsense"]) == 2
    assert "unknown job 'nonsense'" in capsys.readouterr().err


def test_job_help_shows_options_with_defaults(capsys):
    assert cli.main(["tables", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--lake" in out and "(default: ./lake)" in out and "--engine" in out


@pytest.mark.parametrize("job", sorted(cli.JOBS))
def test_every_job_prints_its_help(job, capsys):
    # Help texts are prose: a "95% interval" once broke argparse's %-formatting of evaluate --help.
    assert cli.main([job, "--help"]) == 0
    assert "--lake" in capsys.readouterr().out


def test_bad_flag_value_is_a_usage_error(capsys):
    assert cli.main(["tables", "--engine", "parquet"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@dataclasses.dataclass
class _ExampleConfig(DatedConfig):
    top_k: int = option(100, "Neighbours per id.")
    windows: list[int] = option([1, 7], "Windows in days.")
    verbose: bool = option(False, "Talk more.")
    alpha: float = option(0.5, "A weight.")


def test_config_fields_become_flags_with_the_same_names():
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, _ExampleConfig)
    ns = parser.parse_args(["--top-k", "7", "--windows", "3", "30", "--verbose", "--date", "2026-11-02"])
    assert (ns.top_k, ns.windows, ns.verbose, ns.date, ns.alpha) == (
        7,
        [3, 30],
        True,
        dt.date(2026, 11, 2),
        0.5,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--date", "02/11/2026"])
    assert config_from_params(_ExampleConfig, {"top_k": 3}).top_k == 3
    with pytest.raises(ValueError, match="unknown options"):
        config_from_params(_ExampleConfig, {"topk": 3})
    # list defaults are not shared between instances
    assert _ExampleConfig().windows is not _ExampleConfig().windows


def test_every_registered_job_has_a_config_and_run_function():
    import importlib

    for job, (module, config_name, run_name, _) in cli.JOBS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            pytest.fail(f"job {job}: module {module} is missing")
        assert issubclass(getattr(mod, config_name), CommonConfig), job
        assert callable(getattr(mod, run_name)), job
        assert (REPO / "jobs" / f"{job.replace('-', '_')}.py").exists(), f"jobs/ entry point for {job}"


@pytest.mark.slow
def test_spark_submit_entry_point_runs_the_same_job(tmp_path):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    spark_submit = Path(sys.executable).parent / "spark-submit"
    result = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            str(REPO / "jobs" / "tables.py"),
            "--lake",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"no tables in {tmp_path}" in result.stdout


def test_py4j_retry_notes_are_dropped_but_its_errors_kept():
    import logging

    from recsys_spark.cli import _is_py4j_retry

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("root", level, __file__, 1, message, None, None)

    assert _is_py4j_retry(record(logging.INFO, "Exception while sending command."))
    assert not _is_py4j_retry(record(logging.ERROR, "Exception while sending command."))
    assert not _is_py4j_retry(record(logging.INFO, "train: starting"))
