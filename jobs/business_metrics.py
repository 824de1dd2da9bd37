"""spark-submit entry point: `spark-submit jobs/business_metrics.py ARGS` = `recsys-spark business-metrics ARGS`."""

from _submit import submit

submit("business-metrics")
