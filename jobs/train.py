"""spark-submit entry point: `spark-submit jobs/train.py ARGS` = `recsys-spark train ARGS` (--help for options)."""

from _submit import submit

submit("train")
