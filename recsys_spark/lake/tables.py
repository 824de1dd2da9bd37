"""Table contracts, kept as data files in `schemas/tables/<table>.json` and enforced on write."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

EVENT_TYPES = ("impression", "click", "like", "share", "comment", "follow", "purchase")

_PRIMITIVES = {
    "string": "StringType",
    "long": "LongType",
    "bigint": "LongType",
    "int": "IntegerType",
    "integer": "IntegerType",
    "double": "DoubleType",
    "float": "FloatType",
    "boolean": "BooleanType",
    "timestamp": "TimestampType",
    "date": "DateType",
}


class SchemaError(ValueError):
    """A DataFrame does not fit its table's contract."""


def schemas_dir() -> Path:
    override = os.environ.get("RECSYS_SCHEMAS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "schemas"


def parse_type(text: str):
    """Spark type from the small type language of the schema files: primitives, array<T> and map<K,V>."""
    from pyspark.sql import types as T

    text = text.strip().lower()
    match = re.fullmatch(r"array<(.+)>", text)
    if match:
        return T.ArrayType(parse_type(match.group(1)), containsNull=True)
    match = re.fullmatch(r"map<\s*(\w+)\s*,(.+)>", text)  # a primitive key, any value type
    if match:
        return T.MapType(parse_type(match.group(1)), parse_type(match.group(2)), valueContainsNull=True)
    if text not in _PRIMITIVES:
        raise SchemaError(f"unknown column type {text!r} (known: {sorted(_PRIMITIVES)}, array<T>, map<K,V>)")
    return getattr(T, _PRIMITIVES[text])()


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    description: str = ""
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def spark_schema(self):
        from pyspark.sql import types as T

        return T.StructType([T.StructField(c.name, parse_type(c.type), c.nullable) for c in self.columns])

    def conform(self, df):
        """Select the contract's columns in order, cast to the contract's types, and refuse what doesn't fit.

        Missing columns fail (nullable ones are filled with nulls); extra columns fail, so that a typo
        in a job never silently drops data. Casts must not turn values into nulls: a cast that would
        (e.g. "abc" to long) fails with the column named.
        """
        from pyspark.sql import functions as F

        present = {c.lower(): c for c in df.columns}
        extra = sorted(set(present) - {c.name.lower() for c in self.columns})
        if extra:
            raise SchemaError(f"table {self.name}: columns not in the contract: {extra}")
        cols = []
        for column in self.columns:
            target = parse_type(column.type)
            source = present.get(column.name.lower())
            if source is None:
                if not column.nullable:
                    raise SchemaError(f"table {self.name}: required column {column.name!r} is missing")
                cols.append(F.lit(None).cast(target).alias(column.name))
                continue
            actual = df.schema[source].dataType
            if actual != target and not _safe_cast(actual, target):
                raise SchemaError(
                    f"table {self.name}: column {column.name!r} is {actual.simpleString()}, "
                    f"the contract says {target.simpleString()}"
                )
            cols.append(F.col(source).cast(target).alias(column.name))
        return df.select(*cols)


def _safe_cast(actual, target) -> bool:
    from pyspark.sql import types as T

    widening = {
        T.IntegerType: (T.LongType, T.DoubleType),
        T.ShortType: (T.IntegerType, T.LongType, T.DoubleType),
        T.ByteType: (T.ShortType, T.IntegerType, T.LongType),
        T.LongType: (T.DoubleType,),
        T.FloatType: (T.DoubleType,),
        T.DoubleType: (T.FloatType,),  # embeddings are stored as float32 by contract
        T.NullType: (object,),
    }
    if isinstance(actual, T.ArrayType) and isinstance(target, T.ArrayType):
        return actual.elementType == target.elementType or _safe_cast(actual.elementType, target.elementType)
    if isinstance(actual, T.MapType) and isinstance(target, T.MapType):
        return actual.keyType == target.keyType and (
            actual.valueType == target.valueType or _safe_cast(actual.valueType, target.valueType)
        )
    for source_type, targets in widening.items():
        if isinstance(actual, source_type):
            return object in targets or any(isinstance(target, t) for t in targets)
    return False


@cache
def table_schema(name: str) -> TableSchema | None:
    """The contract of table `name`, or None for a table that has no schema file."""
    path = schemas_dir() / "tables" / f"{name}.json"
    if not path.exists():
        return None
    spec = json.loads(path.read_text())
    columns = tuple(
        Column(
            name=c["name"],
            type=c["type"],
            nullable=c.get("nullable", True),
            description=c.get("description", ""),
            allowed=tuple(c["allowed"]) if c.get("allowed") else None,
        )
        for c in spec["columns"]
    )
    known = {"name", "columns", "partition_by", "key", "description"}
    return TableSchema(
        name=spec["name"],
        columns=columns,
        partition_by=tuple(spec.get("partition_by", ())),
        key=tuple(spec.get("key", ())),
        description=spec.get("description", ""),
        extra={k: v for k, v in spec.items() if k not in known},
    )


def known_tables() -> list[str]:
    return sorted(p.stem for p in (schemas_dir() / "tables").glob("*.json"))
