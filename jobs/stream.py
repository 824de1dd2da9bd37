"""spark-submit entry point: `spark-submit jobs/stream.py ARGS` = `recsys-spark stream ARGS` (--help for options)."""

from _submit import submit

submit("stream")
