"""spark-submit entry point: `spark-submit jobs/embed.py ARGS` = `recsys-spark embed ARGS` (--help for options)."""

from _submit import submit

submit("embed")
