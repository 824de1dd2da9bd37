"""spark-submit entry point: `spark-submit jobs/recall.py ARGS` = `recsys-spark recall ARGS` (--help for options)."""

from _submit import submit

submit("recall")
