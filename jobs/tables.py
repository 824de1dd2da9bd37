"""spark-submit entry point: `spark-submit jobs/tables.py ARGS` = `recsys-spark tables ARGS` (--help for options)."""

from _submit import submit

submit("tables")
