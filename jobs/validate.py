"""spark-submit entry point: `spark-submit jobs/validate.py ARGS` = `recsys-spark validate ARGS` (--help for options)."""

from _submit import submit

submit("validate")
