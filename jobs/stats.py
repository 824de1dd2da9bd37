"""spark-submit entry point: `spark-submit jobs/stats.py ARGS` = `recsys-spark stats ARGS` (--help for options)."""

from _submit import submit

submit("stats")
