"""spark-submit entry point: `spark-submit jobs/rerank.py ARGS` = `recsys-spark rerank ARGS` (--help for options)."""

from _submit import submit

submit("rerank")
