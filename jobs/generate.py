"""spark-submit entry point: `spark-submit jobs/generate.py ARGS` = `recsys-spark generate ARGS` (--help for options)."""

from _submit import submit

submit("generate")
