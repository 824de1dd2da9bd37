"""Loading external data into the lake: canonical files, MovieLens and Taobao.

Each format module turns a file into a `Parsed` (staged input, valid rows in the target contract,
rejected rows in the `quarantine` contract); `job.ingest` writes them idempotently.
"""

from recsys_spark.ingest.quarantine import REASONS, Parsed

__all__ = ["REASONS", "Parsed"]
