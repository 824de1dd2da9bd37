"""spark-submit entry point: `spark-submit jobs/buckets.py ARGS` = `recsys-spark buckets ARGS` (--help for options)."""

from _submit import submit

submit("buckets")
