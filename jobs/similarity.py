"""spark-submit entry point: `spark-submit jobs/similarity.py ARGS` = `recsys-spark similarity ARGS` (--help for options)."""

from _submit import submit

submit("similarity")
