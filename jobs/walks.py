"""spark-submit entry point: `spark-submit jobs/walks.py ARGS` = `recsys-spark walks ARGS` (--help for options)."""

from _submit import submit

submit("walks")
