"""spark-submit entry point: `spark-submit jobs/profiles.py ARGS` = `recsys-spark profiles ARGS` (--help for options)."""

from _submit import submit

submit("profiles")
