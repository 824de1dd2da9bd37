"""spark-submit entry point: `spark-submit jobs/graph.py ARGS` = `recsys-spark graph ARGS` (--help for options)."""

from _submit import submit

submit("graph")
