"""Expectation suites as data: `schemas/expectations/<table>.json`, one per table.

A suite file holds Great Expectations (1.x) expectation configurations as GE itself writes them
(`type`, `kwargs`, `severity`, `description`), plus three things GE has no notion of:

- `scope`: `day` (validate one `dt` partition, compare with the previous one) or `table` (the whole
  table, compare with its previous Delta version).
- `derived`: columns computed on Spark before GE sees the batch, for checks GE cannot express on one
  column: a Spark SQL expression (window functions allowed: rank gaps, duplicates per key) or a
  lookup in another table (`missing_from`: the referential checks). A derived column is written so
  that its *bad* rows carry a value and good rows are null, so `expect_column_values_to_be_null`
  lists the offending ids in the report.
- `drift`: volume and mix metrics compared with the previous day; they become GE expectations whose
  bounds are the previous day's value widened by a tolerance (`tolerances`, overridable per run).

Nothing here touches Spark at import time; `prepare` and `drift_expectations` take DataFrames.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from recsys_spark.lake.tables import schemas_dir

SEVERITIES = ("critical", "warning", "info")
SCOPES = ("day", "table")
DRIFT_METRICS = ("row_count", "distinct", "mix", "mean")
# Keys of expectation kwargs that name columns: used to find which derived columns a check needs.
_COLUMN_KEYS = ("column", "column_A", "column_B")
_COLUMN_LIST_KEYS = ("column_list", "column_set")
_TEMPLATE = re.compile(r"\$\{(\w+)\}")


class SuiteError(ValueError):
    """A suite file is malformed (unknown severity, drift metric, derived kind...)."""


@dataclass(frozen=True)
class Derived:
    """A column computed before validation: a Spark SQL `expr`, or `missing_from` another table."""

    name: str
    expr: str | None = None
    missing_from: Mapping[str, str] | None = None
    description: str = ""


@dataclass(frozen=True)
class Drift:
    """A metric compared with the previous day's: `row_count`, `distinct` ids, `mix` shares, `mean`."""

    metric: str
    column: str | None = None
    values: tuple[str, ...] = ()
    tolerance: str = "volume"
    severity: str = "warning"


@dataclass(frozen=True)
class Suite:
    table: str
    scope: str
    expectations: tuple[dict, ...]
    derived: tuple[Derived, ...] = ()
    drift: tuple[Drift, ...] = ()
    tolerances: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def day_scoped(self) -> bool:
        return self.scope == "day"

    def derived_by_name(self) -> dict[str, Derived]:
        return {d.name: d for d in self.derived}


def expectations_dir() -> Path:
    return schemas_dir() / "expectations"


def known_suites() -> list[str]:
    return sorted(p.stem for p in expectations_dir().glob("*.json"))


def columns_of(expectation: Mapping[str, Any]) -> set[str]:
    """Column names an expectation config refers to."""
    kwargs = expectation.get("kwargs", {})
    names = {kwargs[k] for k in _COLUMN_KEYS if isinstance(kwargs.get(k), str)}
    for key in _COLUMN_LIST_KEYS:
        names.update(kwargs.get(key) or ())
    return names


@cache
def load_suite(table: str) -> Suite:
    """The suite of `table` from its JSON file; SuiteError when malformed, KeyError when absent."""
    path = expectations_dir() / f"{table}.json"
    if not path.exists():
        raise KeyError(table)
    spec = json.loads(path.read_text())
    where = f"suite {path.name}"
    scope = spec.get("scope", "table")
    if scope not in SCOPES:
        raise SuiteError(f"{where}: scope {scope!r} is not one of {SCOPES}")
    expectations = []
    for number, raw in enumerate(spec.get("expectations", []), 1):
        if "type" not in raw or "kwargs" not in raw:
            raise SuiteError(f"{where}: expectation {number} needs 'type' and 'kwargs'")
        severity = raw.get("severity", "critical")
        if severity not in SEVERITIES:
            raise SuiteError(
                f"{where}: expectation {number} ({raw['type']}): severity {severity!r} not in {SEVERITIES}"
            )
        expectations.append({**raw, "severity": severity})
    derived = []
    for name, raw in spec.get("derived", {}).items():
        if ("expr" in raw) == ("missing_from" in raw):
            raise SuiteError(
                f"{where}: derived column {name!r} needs exactly one of 'expr' or 'missing_from'"
            )
        lookup = raw.get("missing_from")
        if lookup is not None and not {"table", "column"} <= set(lookup):
            raise SuiteError(f"{where}: derived column {name!r}: missing_from needs 'table' and 'column'")
        derived.append(Derived(name, raw.get("expr"), lookup, raw.get("description", "")))
    drift = []
    tolerances = {k: float(v) for k, v in spec.get("tolerances", {}).items()}
    for raw in spec.get("drift", []):
        metric = raw.get("metric")
        if metric not in DRIFT_METRICS:
            raise SuiteError(f"{where}: drift metric {metric!r} not in {DRIFT_METRICS}")
        if metric != "row_count" and not raw.get("column"):
            raise SuiteError(f"{where}: drift metric {metric} needs a 'column'")
        if metric == "mix" and not raw.get("values"):
            raise SuiteError(f"{where}: drift metric mix needs 'values'")
        item = Drift(
            metric,
            raw.get("column"),
            tuple(raw.get("values", ())),
            raw.get("tolerance", "mix" if metric in ("mix", "mean") else "volume"),
            raw.get("severity", "warning"),
        )
        if item.tolerance not in tolerances:
            raise SuiteError(
                f"{where}: drift {metric} uses tolerance {item.tolerance!r}, not in 'tolerances'"
            )
        if item.severity not in SEVERITIES:
            raise SuiteError(f"{where}: drift {metric}: severity {item.severity!r} not in {SEVERITIES}")
        drift.append(item)
    return Suite(
        table=spec.get("table", table),
        scope=scope,
        expectations=tuple(expectations),
        derived=tuple(derived),
        drift=tuple(drift),
        tolerances=tolerances,
        description=spec.get("description", ""),
    )


def render(template: str, params: Mapping[str, Any]) -> str:
    """Fill `${name}` placeholders of a derived expression (e.g. `${future_limit}`)."""

    def value(match: re.Match) -> str:
        if match.group(1) not in params:
            raise SuiteError(f"unknown placeholder ${{{match.group(1)}}} (known: {sorted(params)})")
        return str(params[match.group(1)])

    return _TEMPLATE.sub(value, template)


def prepare(df, suite: Suite, lake, params: Mapping[str, Any], needed: Iterable[str]):
    """`df` with the derived columns in `needed` added. Returns (frame, skipped derived names).

    A `missing_from` lookup whose table is absent from the lake cannot be checked: the column is
    left out and reported as skipped rather than counting every id as unknown (a MovieLens lake
    without a users file is normal).
    """
    from pyspark.sql import functions as F

    wanted = set(needed)
    skipped: list[str] = []
    for derived in suite.derived:
        if derived.name not in wanted:
            continue
        if derived.expr is not None:
            df = df.withColumn(derived.name, F.expr(render(derived.expr, params)))
            continue
        lookup = derived.missing_from
        ref_table, column = lookup["table"], lookup["column"]
        key = lookup.get("key", column)
        if lake is None or not lake.exists(ref_table):
            skipped.append(derived.name)
            continue
        found = f"_found_{derived.name}"
        ref_key = f"_key_{derived.name}"
        keys = (
            lake.read(ref_table).select(F.col(key).alias(ref_key)).distinct().withColumn(found, F.lit(True))
        )
        df = (
            df.join(keys, F.col(column) == F.col(ref_key), "left")
            .withColumn(derived.name, F.when(F.col(found).isNull(), F.col(column)))
            .drop(found, ref_key)
        )
    return df, skipped


# -- drift -----------------------------------------------------------------------------------
def _share_column(drift: Drift, value: str) -> str:
    return f"{drift.column}_share_{re.sub(r'[^0-9A-Za-z]+', '_', value)}"


def drift_columns(drift: Drift):
    """(name, Spark Column) of the indicator columns a `mix` metric averages."""
    from pyspark.sql import functions as F

    return [
        (_share_column(drift, v), F.when(F.col(drift.column) == v, 1.0).otherwise(0.0)) for v in drift.values
    ]


def baseline_metrics(df, drifts: Iterable[Drift]) -> dict[str, float]:
    """Every drift metric of `df` in one Spark aggregation: `row_count`, `distinct:<col>`, `share:<col>`."""
    from pyspark.sql import functions as F

    aggs = {"row_count": F.count(F.lit(1))}
    for drift in drifts:
        if drift.metric == "distinct":
            aggs[f"distinct:{drift.column}"] = F.countDistinct(drift.column)
        elif drift.metric == "mean":
            aggs[f"mean:{drift.column}"] = F.avg(F.col(drift.column).cast("double"))
        elif drift.metric == "mix":
            for name, indicator in drift_columns(drift):
                aggs[f"share:{name}"] = F.avg(indicator)
    row = df.agg(*[agg.alias(f"m{i}") for i, agg in enumerate(aggs.values())]).first()
    return {name: (float(row[i]) if row[i] is not None else math.nan) for i, name in enumerate(aggs)}


def drift_expectations(
    drifts: Iterable[Drift],
    baseline: Mapping[str, float],
    baseline_label: str,
    tolerances: Mapping[str, float],
) -> list[dict]:
    """GE expectation configs for the suite's drift metrics, bounded around the baseline's values.

    Counts may move by a relative tolerance (`volume` 0.5 = 50% down or up); shares and means by an
    absolute one (`mix` 0.05 = five percentage points), which behaves sensibly for rare events.
    """
    out = []
    for drift in drifts:
        tol = tolerances[drift.tolerance]
        if drift.metric in ("row_count", "distinct"):
            key = "row_count" if drift.metric == "row_count" else f"distinct:{drift.column}"
            before = baseline[key]
            low, high = math.floor(before * max(0.0, 1 - tol)), math.ceil(before * (1 + tol))
            what = "row count" if drift.metric == "row_count" else f"distinct {drift.column}"
            text = f"{what} within ±{tol:.0%} of {baseline_label} ({before:,.0f}): {low:,}..{high:,}"
            if drift.metric == "row_count":
                out.append(_drift("expect_table_row_count_to_be_between", {}, low, high, drift, text))
            else:
                kwargs = {"column": drift.column}
                out.append(
                    _drift("expect_column_unique_value_count_to_be_between", kwargs, low, high, drift, text)
                )
            continue
        pairs = (
            [(f"mean:{drift.column}", drift.column, f"mean of {drift.column}")]
            if drift.metric == "mean"
            else [
                (
                    f"share:{_share_column(drift, value)}",
                    _share_column(drift, value),
                    f"share of {drift.column} = {value}",
                )
                for value in drift.values
            ]
        )
        for key, column, what in pairs:
            before = baseline[key]
            if math.isnan(before):
                continue
            low, high = max(0.0, before - tol), before + tol
            text = f"{what} within ±{tol:.3g} of {baseline_label} ({before:.4f}): {low:.4f}..{high:.4f}"
            out.append(_drift("expect_column_mean_to_be_between", {"column": column}, low, high, drift, text))
    return out


def _drift(kind: str, kwargs: dict, low: float, high: float, drift: Drift, text: str) -> dict:
    return {
        "type": kind,
        "kwargs": {**kwargs, "min_value": low, "max_value": high},
        "severity": drift.severity,
        "description": text,
        "meta": {"drift": drift.metric},
    }


def drift_indicator_names(suite: Suite) -> list[str]:
    """Names of the `mix` indicator columns (no Spark needed)."""
    return [_share_column(d, v) for d in suite.drift if d.metric == "mix" for v in d.values]


def drift_indicator_columns(suite: Suite):
    """(name, Column) of every `mix` indicator, added to the batch so GE can average them."""
    out = []
    for drift in suite.drift:
        if drift.metric == "mix":
            out.extend(drift_columns(drift))
    return out
