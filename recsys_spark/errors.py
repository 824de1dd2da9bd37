"""Exception types shared across layers, so a library module never imports the command line to raise one.

Stdlib only and at the bottom of the import graph (see tests/test_layers.py): anything may import it.
`recsys_spark.cli` maps `UsageError` to exit code 2; other failures exit 1.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad arguments or missing inputs: the user can fix it (exit code 2)."""
