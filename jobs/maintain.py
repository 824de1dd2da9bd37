"""spark-submit entry point: `spark-submit jobs/maintain.py ARGS` = `recsys-spark maintain ARGS` (--help for options)."""

from _submit import submit

submit("maintain")
