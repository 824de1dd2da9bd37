"""spark-submit entry point: `spark-submit jobs/publish.py ARGS` = `recsys-spark publish ARGS` (--help for options)."""

from _submit import submit

submit("publish")
