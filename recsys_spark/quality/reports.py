"""What a validation leaves behind, under `<lake>/_reports/quality/`:

    index.html                      status board: the latest validation of every table and day
    <table>/<date>.json             summary of the latest validation of that table for that day
    data_docs/index.html            Great Expectations Data Docs (every validation run, all results)
    data_docs/validations/<table>/<date>-<mode>/<time>/lake-<table>.html   one run's page
    gx_results/                     GE's own validation results (JSON), the Data Docs' source

and the short summary printed by `recsys-spark validate`.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

QUALITY_DIR = ("_reports", "quality")


@dataclass
class Check:
    """One evaluated expectation, in the words a report reader needs."""

    expectation: str  # GE type, e.g. expect_column_values_to_be_null
    column: str | None
    severity: str  # critical | warning | info
    success: bool
    description: str
    observed: str  # what was seen, e.g. "3 of 1,000 rows unexpected (0.30%), e.g. ['i9']"
    drift: str | None = None  # the drift metric behind the check, if any

    @property
    def name(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation


@dataclass
class Outcome:
    """The result of validating one table (or one day of it)."""

    table: str
    date: str
    mode: str  # validate | gate
    scope: str  # e.g. "dt = 2026-11-04" or "whole table (version 3)"
    rows: int
    checks: list[Check] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    baseline: str | None = None
    data_docs: str | None = None
    summary_path: str | None = None
    seconds: float = 0.0  # how long the validation took (the gate's cost per table)
    validated_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def critical_failures(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity == "critical"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.success and c.severity != "critical"]

    @property
    def success(self) -> bool:
        """True when every critical expectation held (warnings do not count)."""
        return not self.critical_failures

    @property
    def status(self) -> str:
        if self.critical_failures:
            return "failed"
        return "warning" if self.warnings else "passed"

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "date": self.date,
            "mode": self.mode,
            "scope": self.scope,
            "status": self.status,
            "success": self.success,
            "rows": self.rows,
            "baseline": self.baseline,
            "evaluated": len(self.checks),
            "passed": sum(c.success for c in self.checks),
            "critical_failed": [_check_json(c) for c in self.critical_failures],
            "warnings": [_check_json(c) for c in self.warnings],
            "skipped": self.skipped,
            "checks": [_check_json(c) for c in self.checks],
            "data_docs": self.data_docs,
            "validated_at": self.validated_at,
            "seconds": round(self.seconds, 2),
        }


def _check_json(check: Check) -> dict[str, Any]:
    return {"name": check.name, **asdict(check)}


# -- observed values -------------------------------------------------------------------------
def describe_observed(
    result: dict[str, Any], exception: dict[str, Any] | None, kwargs: dict[str, Any]
) -> str:
    """A GE result as one line: unexpected rows with examples, or the observed value vs the bounds."""
    if exception and exception.get("raised_exception"):
        return f"error: {exception.get('exception_message')}"
    if not result:  # a pass/fail-only run (the gate's quick pass)
        return ""
    if "unexpected_count" in result:
        count = result.get("unexpected_count") or 0
        total = result.get("element_count") or 0
        pct = result.get("unexpected_percent")
        text = f"{count:,} of {total:,} rows unexpected"
        if pct is not None and count:
            text += f" ({pct:.2f}%)"
        examples = result.get("partial_unexpected_list") or []
        if count and examples:
            text += f", e.g. {_short(examples[:5])}"
        return text
    observed = result.get("observed_value")
    text = f"observed {_short(observed)}"
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None or high is not None:
        text += f" (expected {_short(low) if low is not None else '-inf'}..{_short(high) if high is not None else 'inf'})"
    return text


def _short(value: Any) -> str:
    if isinstance(value, str):  # ids can be megabytes long (that is what some checks catch)
        return repr(value if len(value) <= 80 else value[:80] + f"...({len(value):,} chars)")
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."


# -- paths and files -------------------------------------------------------------------------
def quality_path(lake, *parts: str) -> str:
    return lake.path(*QUALITY_DIR, *parts)


def _write_text(lake, path: str, text: str) -> None:
    """Write a report file on any lake filesystem, replacing it atomically where the fs allows."""
    from recsys_spark.lake.commit import write_atomically

    write_atomically(path, text.encode("utf-8"))


def write_summary(lake, outcome: Outcome) -> str:
    """`_reports/quality/<table>/<date>.json` (the latest validation of that table and day)."""
    path = quality_path(lake, outcome.table, f"{outcome.date}.json")
    outcome.summary_path = path
    _write_text(lake, path, json.dumps(outcome.to_json(), indent=2, default=str, allow_nan=False) + "\n")
    write_status_board(lake)
    return path


def read_summaries(lake) -> list[dict[str, Any]]:
    """Every `<table>/<date>.json` under the quality folder: newest day first, tables alphabetically."""
    import pyarrow.fs as pafs

    from recsys_spark.lake.commit import filesystem

    fs, root = filesystem(quality_path(lake))
    try:
        folders = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except FileNotFoundError:
        return []
    out = []
    for folder in folders:  # one folder per table; Data Docs and GE results have their own, skipped
        if folder.type != pafs.FileType.Directory or folder.base_name in ("data_docs", "gx_results"):
            continue
        for info in fs.get_file_info(pafs.FileSelector(folder.path, recursive=False)):
            if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
                continue
            with fs.open_input_stream(info.path) as stream:
                try:
                    out.append(json.loads(stream.read()))
                except json.JSONDecodeError:
                    continue
    out.sort(key=lambda s: s.get("table", ""))
    return sorted(out, key=lambda s: s.get("date", ""), reverse=True)


_BOARD_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td:nth-child(-n+6){white-space:nowrap}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.failed{background:#fdd}.warning{background:#ffd}.passed{background:#dfd}small{color:#555}
"""


def write_status_board(lake) -> str:
    """`_reports/quality/index.html`: one row per table and day, self-contained (no CDN needed)."""
    root = quality_path(lake)
    rows = []
    for s in read_summaries(lake):
        failed = s.get("critical_failed", []) + s.get("warnings", [])
        detail = "<br>".join(
            f"<b>{html.escape(c['severity'])}</b> {html.escape(c['description'] or c['name'])}: "
            f"<small>{html.escape(c['observed'])}</small>"
            for c in failed
        )
        docs = s.get("data_docs") or ""
        if docs.startswith(root + "/"):  # relative, so the folder can be copied or served as it is
            docs = docs[len(root) + 1 :]
        link = f'<a href="{html.escape(docs)}">Data Docs</a>' if docs else ""
        rows.append(
            f'<tr class="{s["status"]}"><td>{html.escape(s["date"])}</td><td>{html.escape(s["table"])}</td>'
            f"<td>{s['status'].upper()}</td><td>{s['mode']}</td><td>{s['rows']:,}</td>"
            f"<td>{s['passed']}/{s['evaluated']}</td><td>{detail}</td><td>{link}</td></tr>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Data quality</title>"
        f"<style>{_BOARD_STYLE}</style></head><body><h1>Data quality</h1>"
        "<p>Latest validation of each table and day. FAILED = a critical expectation failed (the table "
        "was not published if this was a gate); WARNING = only warning-level expectations failed. "
        '<a href="data_docs/index.html">All Great Expectations Data Docs</a>.</p>'
        "<table><tr><th>day</th><th>table</th><th>status</th><th>mode</th><th>rows</th><th>passed</th>"
        f"<th>failed expectations</th><th>report</th></tr>{''.join(rows)}</table></body></html>\n"
    )
    path = quality_path(lake, "index.html")
    _write_text(lake, path, page)
    return path


def summary_lines(outcome: Outcome) -> list[str]:
    """The short human summary `validate` prints."""
    verdict = {"passed": "PASSED", "warning": "PASSED with warnings", "failed": "FAILED"}[outcome.status]
    head = (
        f"{outcome.mode} {outcome.table} ({outcome.scope}): {verdict} - "
        f"{sum(c.success for c in outcome.checks)}/{len(outcome.checks)} expectations held, {outcome.rows:,} rows"
    )
    lines = [head]
    if outcome.baseline:
        lines.append(f"  compared with {outcome.baseline}")
    for check in outcome.critical_failures + outcome.warnings:
        lines.append(f"  {check.severity.upper():<8} {check.name}: {check.description}")
        lines.append(f"           {check.observed}")
    for note in outcome.skipped:
        lines.append(f"  skipped  {note}")
    if outcome.data_docs:
        lines.append(f"  report:  {outcome.data_docs}")
    if outcome.summary_path:
        lines.append(f"  summary: {outcome.summary_path}")
    return lines
