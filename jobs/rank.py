"""spark-submit entry point: `spark-submit jobs/rank.py ARGS` = `recsys-spark rank ARGS` (--help for options)."""

from _submit import submit

submit("rank")
