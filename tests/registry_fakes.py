"""Tiny fake model versions for the registry tests (importable without Spark: the SIGKILL worker uses it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_spark.train.registry import Registry


def _stage(registry: Registry, version: str, base_id: str | None = None, items: int = 4) -> str:
    """A complete fake version folder in staging: manifest, item vectors and the item vocabulary."""
    staging = registry.staging_url()
    os.makedirs(f"{staging}/vocab/item")
    manifest = {"version": version, "base_id": base_id}
    Path(staging, "manifest.json").write_text(json.dumps(manifest))
    vectors = pa.table(
        {
            "item_idx": pa.array(range(1, items + 1), pa.int64()),
            "vector": pa.array([[1.0, 0.0]] * items, pa.list_(pa.float32())),
        }
    )
    pq.write_table(vectors, f"{staging}/item_vectors.parquet")
    vocab = pa.table(
        {"id": [f"i{i}" for i in range(1, items + 1)], "idx": pa.array(range(1, items + 1), pa.int64())}
    )
    pq.write_table(vocab, f"{staging}/vocab/item/part-0.parquet")
    return staging


def _full(version: str) -> dict:
    return {"version": version, "date": version[5:], "watermark": "", "base": None, "id": f"id-{version}"}
