"""spark-submit entry point: `spark-submit jobs/ingest.py ARGS` = `recsys-spark ingest ARGS` (--help for options)."""

from _submit import submit

submit("ingest")
