"""spark-submit entry point: `spark-submit jobs/recommend.py ARGS` = `recsys-spark recommend ARGS` (--help for options)."""

from _submit import submit

submit("recommend")
