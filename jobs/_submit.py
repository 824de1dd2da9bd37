"""Shared by the `jobs/<job>.py` entry points: run `recsys-spark <job>` under spark-submit.

`spark-submit jobs/stats.py --lake L --date D` is the same code path as `recsys-spark stats --lake L
--date D`; spark-submit's own options (--master, --conf, --packages) reach the session through SparkConf.
"""

from __future__ import annotations

import os
import sys


def submit(job: str) -> None:
    # Running from a checkout without `pip install -e .`: make the package importable.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from recsys_spark.cli import main

    code = main([job, *sys.argv[1:]])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # see recsys_spark.cli.entrypoint: keeps the exit code when delta-rs aborts at exit
