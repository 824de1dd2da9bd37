"""spark-submit entry point: `spark-submit jobs/run_daily.py ARGS` = `recsys-spark run-daily ARGS` (--help for options)."""

from _submit import submit

submit("run-daily")
