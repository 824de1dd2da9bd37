"""spark-submit entry point: `spark-submit jobs/samples.py ARGS` = `recsys-spark samples ARGS` (--help for options)."""

from _submit import submit

submit("samples")
