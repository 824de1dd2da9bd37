"""spark-submit entry point: `spark-submit jobs/evaluate.py ARGS` = `recsys-spark evaluate ARGS` (--help for options)."""

from _submit import submit

submit("evaluate")
