"""The lake: Delta tables under one directory (see `delta.Lake`) and their contracts (`tables`)."""

from recsys_spark.lake.delta import Lake
from recsys_spark.lake.tables import EVENT_TYPES, SchemaError, TableSchema, table_schema

__all__ = ["EVENT_TYPES", "Lake", "SchemaError", "TableSchema", "table_schema"]
