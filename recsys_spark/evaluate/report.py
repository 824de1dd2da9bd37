"""The evaluation report: `_reports/evaluation/<date>.json` for tools, `<date>.html` for people.

The JSON file is the machine-readable contract (DESIGN.md): `{"date": D, "recall": {CHANNEL: {"recall@K":
x, "ndcg@K": x, "hitrate@K": x, ...}}, "ranking": {TASK: {"auc": x, "uauc": x, "logloss": x}}}` plus
whatever extra top-level keys the evaluate job adds ("baselines", "users_evaluated", "model_versions",
...). It is written atomically (a temporary name in the same folder, then a move), so a reader never
sees half a file; it is strict JSON, so NaN / ±inf (a metric undefined on the day's data) are written
as `null`.

The HTML page is self-contained (inline CSS and SVG, no scripts, no external assets) so it can be
mailed or archived as one file: the run's facts, a channels × metrics table (best per column in bold),
a ranking tasks × metrics table with the statistics-only baseline under each task, bar charts, and a
relevance-vs-diversity scatter plot (one labelled point per channel). When the result carries
`recall_exclude_seen` (the evaluate job's `--exclude-seen`), the headline table and charts show those
numbers, and the page says so; the seen-items-kept `recall` follows in a second table. An "A/B
variants" section shows `variants` (users per variant, each metric's mean with its 95% interval, the
difference to the reference variant with its interval and a significant / not significant marker),
and a "Business metrics" section shows `business` (day D per (layer, variant), then the retention and
LT7 of the days before it).
Every piece of text from the data is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

CONTRACT_KEYS = ("date", "recall", "ranking")
EXCLUDE_SEEN_KEY = "recall_exclude_seen"
VARIANTS_KEY = "variants"  # evaluate --variant-by: the A/B readout of the final lists
BUSINESS_KEY = "business"  # the business metrics of the day, overall and per variant
BASELINE_LABEL = "statistics-only baseline"
LOWER_IS_BETTER = frozenset({"logloss", "logloss_uncalibrated"})
RECALL_METRIC_ORDER = ("recall", "ndcg", "hitrate", "coverage", "ild", "category_ild", "novelty")
RANKING_METRIC_ORDER = ("auc", "uauc", "logloss", "logloss_uncalibrated")
# A task's `oracle_auc` / `oracle_uauc` (the generator's true probabilities) and `oracle_serving_*`
# (the same without D's impression count, the ranker's reachable limit) are shown as their own rows.
# Longest prefix first: `oracle_serving_auc` is not the oracle's `serving_auc`.
ORACLE_ROWS = (
    ("oracle_serving_", "oracle, serving (truth without D's impression count)"),
    ("oracle_", "oracle (true probability)"),
)
ORACLE_LABELS = tuple(label for _, label in ORACLE_ROWS)
ORACLE_CHANNEL = "oracle"
TRAINING_KEY = "training"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")
POINT_COLOURS = (*COLOURS, "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


# -- JSON ----------------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """`value` as strict-JSON data: NaN/±inf → None, NumPy scalars → Python, tuples → lists, keys → str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # NumPy scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def check_result(date: str, result: Mapping[str, Any]) -> None:
    """Raise ValueError unless `result` has the contract's shape for `date` (a YYYY-MM-DD day)."""
    try:
        dt.date.fromisoformat(date)
    except (TypeError, ValueError):
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}") from None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
    if result.get("date") != date:
        raise ValueError(f"result['date'] is {result.get('date')!r}, expected {date!r}")
    for section in ("recall", "ranking", *((EXCLUDE_SEEN_KEY,) if EXCLUDE_SEEN_KEY in result else ())):
        block = result.get(section)
        if not isinstance(block, Mapping) or not all(isinstance(v, Mapping) for v in block.values()):
            raise ValueError(f"result[{section!r}] must map each name to a dict of metrics")


def write_evaluation_report(lake, date: str, result: dict, details: dict | None = None) -> tuple[str, str]:
    """Write `<lake>/_reports/evaluation/<date>.json` (exactly `result`, strict JSON) and `<date>.html`.

    `details`: facts about the run shown at the top of the page (window, sample sizes, versions ...);
    they are not written to the JSON. Returns `(json_path, html_path)` as lake locations (local paths or
    URIs). Both files are replaced when the same date is evaluated again.
    """
    from recsys_spark.lake.commit import write_atomically

    check_result(date, result)
    payload = json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n"
    page = evaluation_html(date, result, details)
    write_atomically(lake.path("_reports", "evaluation", f"{date}.json"), payload.encode("utf-8"))
    write_atomically(lake.path("_reports", "evaluation", f"{date}.html"), page.encode("utf-8"))
    return lake.path("_reports", "evaluation", f"{date}.json"), lake.path(
        "_reports", "evaluation", f"{date}.html"
    )


# -- HTML ----------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _format(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "—" if value is None or isinstance(value, (int, float)) else html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    return f"{number:.4f}"


def _metric_order(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """`metric@K` names by K, then `known` order; other names after, alphabetically."""

    def key(name: str):
        base, _, k = name.partition("@")
        rank = known.index(base) if base in known else len(known)
        return (0 if k.isdigit() else 1, int(k) if k.isdigit() else 0, rank, name)

    return sorted(set(names), key=key)


def _best(values: Sequence[Any], metric: str, at_least: int = 1) -> float | None:
    """The best finite value (max, or min for lower-is-better metrics); None with fewer than `at_least`."""
    numbers = [n for n in (_number(v) for v in values) if n is not None]
    if len(numbers) < max(1, at_least):
        return None
    return min(numbers) if metric in LOWER_IS_BETTER else max(numbers)


def _cell(value: Any, best: float | None) -> str:
    text = _format(value)
    number = _number(value)
    return f"<td><b>{text}</b></td>" if best is not None and number == best else f"<td>{text}</td>"


def _facts_table(facts: Mapping[str, Any]) -> str:
    rows = []
    for key, value in facts.items():
        if isinstance(value, (Mapping, list, tuple)):
            shown = f"<code>{html.escape(json.dumps(jsonable(value), sort_keys=True))}</code>"
        elif isinstance(value, float):
            shown = _format(value)
        else:
            shown = html.escape(str(value))
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{shown}</td></tr>")
    return f'<table class="facts">{"".join(rows)}</table>'


def _recall_table(recall: Mapping[str, Mapping[str, Any]]) -> str:
    metrics = _metric_order([m for values in recall.values() for m in values], RECALL_METRIC_ORDER)
    # The best channel is marked among those a user could deploy: the oracle is the limit, not a rival.
    rivals = [values for channel, values in recall.items() if channel != ORACLE_CHANNEL]
    best = {m: _best([values.get(m) for values in rivals], m) for m in metrics}
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><th>{html.escape(str(channel))}</th>"
        + "".join(_cell(values.get(m), best[m]) for m in metrics)
        + "</tr>"
        for channel, values in recall.items()
    )
    return f"<table><thead><tr><th>channel</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def _split_oracle(values: Mapping[str, Any]) -> tuple[dict, list[tuple[str, dict]]]:
    """A task's metrics as the model's, and one (label, metrics) row per oracle present."""
    rest, rows = dict(values), []
    for prefix, label in ORACLE_ROWS:
        row = {m[len(prefix) :]: rest.pop(m) for m in list(rest) if m.startswith(prefix)}
        if row:
            rows.append((label, row))
    return rest, rows


def _ranking_table(ranking: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Any]) -> str:
    split = {task: _split_oracle(values) for task, values in ranking.items()}
    metrics = _metric_order(
        [m for model, _ in split.values() for m in model]
        + [m for task in ranking if isinstance(baselines.get(task), Mapping) for m in baselines[task]],
        RANKING_METRIC_ORDER,
    )
    head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    rows = []
    for task, (values, oracles) in split.items():
        baseline = baselines.get(task) if isinstance(baselines.get(task), Mapping) else None
        group = [("model", values)] + ([(BASELINE_LABEL, baseline)] if baseline is not None else [])
        group += oracles
        rivals = [v for label, v in group if label not in ORACLE_LABELS]
        best = {m: _best([v.get(m) for v in rivals], m, at_least=2) for m in metrics}
        for i, (label, row) in enumerate(group):
            task_cell = f'<th rowspan="{len(group)}">{html.escape(str(task))}</th>' if i == 0 else ""
            cells = "".join(_cell(row.get(m), best[m]) for m in metrics)
            rows.append(f'<tr>{task_cell}<td class="label">{html.escape(label)}</td>{cells}</tr>')
    return (
        f"<table><thead><tr><th>task</th><th>scorer</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n that is ≥ value (1 for nothing positive)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-12):
            return step * power
    return 10 * power


def bar_chart_svg(
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[Any]]],
    vmax: float | None = None,
    reference: tuple[float, str] | None = None,
) -> str:
    """A grouped bar chart as inline SVG: one group per name, one bar per series; missing values → no bar.

    `reference` draws a dashed horizontal line at a value with a label (e.g. AUC 0.5 = random).
    """
    bar, gap, left, top, plot_h, bottom = 18, 22, 52, 52, 180, 70
    n_series = max(1, len(series))
    group_w = n_series * bar + gap
    width = max(360, left + 16 + len(groups) * group_w)
    height = top + plot_h + bottom
    numbers = [n for _, values in series for n in (_number(v) for v in values) if n is not None]
    top_value = vmax if vmax is not None else _nice_max(max(numbers, default=0.0))

    def y(value: float) -> float:
        return top + plot_h * (1 - min(max(value, 0.0), top_value) / top_value)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f"<title>{html.escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="8" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    legend_x = 8
    for s, (name, _) in enumerate(series):
        colour = COLOURS[s % len(COLOURS)]
        parts.append(f'<rect x="{legend_x}" y="28" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 16}" y="38" font-size="12">{html.escape(name)}</text>')
        legend_x += 28 + 7 * len(name)
    for t in range(5):
        value = top_value * t / 4
        parts.append(
            f'<line x1="{left}" x2="{width - 8}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end">{value:.3g}</text>'
        )
    if reference is not None:
        ref_value, ref_label = reference
        parts.append(
            f'<line x1="{left}" x2="{width - 8}" y1="{y(ref_value):.1f}" y2="{y(ref_value):.1f}" '
            f'stroke="#888" stroke-dasharray="4 3"/>'
            f'<text x="{width - 10}" y="{y(ref_value) - 3:.1f}" font-size="10" text-anchor="end" '
            f'fill="#555">{html.escape(ref_label)}</text>'
        )
    for g, group in enumerate(groups):
        x0 = left + 8 + g * group_w
        for s, (name, values) in enumerate(series):
            value = _number(values[g]) if g < len(values) else None
            x = x0 + s * bar
            if value is None:
                parts.append(
                    f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - 3}" font-size="9" '
                    f'text-anchor="middle" fill="#999">n/a</text>'
                )
                continue
            y_top = y(value)
            parts.append(
                f'<rect x="{x}" y="{y_top:.1f}" width="{bar - 2}" height="{top + plot_h - y_top:.1f}" '
                f'fill="{COLOURS[s % len(COLOURS)]}"><title>{html.escape(f"{group} {name}: {value:.4f}")}'
                f"</title></rect>"
            )
        label_x = x0 + (n_series * bar) / 2
        parts.append(
            f'<text x="{label_x:.1f}" y="{top + plot_h + 14}" font-size="11" text-anchor="end" '
            f'transform="rotate(-30 {label_x:.1f} {top + plot_h + 14})">{html.escape(str(group))}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - 8}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#333"/></svg>'
    )
    return "".join(parts)


def _recall_charts(recall: Mapping[str, Mapping[str, Any]]) -> list[str]:
    channels = list(recall)
    ks = sorted(
        {int(m.split("@", 1)[1]) for values in recall.values() for m in values if re.fullmatch(r"\w+@\d+", m)}
    )
    charts = []
    for k in ks:
        series = [
            (f"{name}@{k}", [recall[c].get(f"{name}@{k}") for c in channels])
            for name in ("recall", "ndcg")
            if any(f"{name}@{k}" in recall[c] for c in channels)
        ]
        if series:
            charts.append(bar_chart_svg(f"Recall@{k} and NDCG@{k} per channel", channels, series))
    return charts


def _points(
    recall: Mapping[str, Mapping[str, Any]], x_key: str, y_key: str
) -> list[tuple[str, float, float]]:
    out = []
    for channel, values in recall.items():
        x, y = _number(values.get(x_key)), _number(values.get(y_key))
        if x is not None and y is not None:
            out.append((str(channel), x, y))
    return out


def relevance_diversity_axes(recall: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    """`(x metric, y metric)` of the scatter plot: ILD@K (else category ILD@K) against NDCG@K, smallest K.

    None when no channel has both values for any K.
    """
    ks = sorted(
        {int(m.split("@", 1)[1]) for values in recall.values() for m in values if re.fullmatch(r"\w+@\d+", m)}
    )
    for x_name in ("ild", "category_ild"):
        for k in ks:
            if _points(recall, f"{x_name}@{k}", f"ndcg@{k}"):
                return f"{x_name}@{k}", f"ndcg@{k}"
    return None


def scatter_svg(title: str, points: Sequence[tuple[str, float, float]], x_label: str, y_label: str) -> str:
    """A labelled scatter plot as inline SVG: one `<g class="point">` (circle and name) per point.

    Parameters
    ----------
    title : str
        Title shown above the plot.
    points : sequence of (label, x, y)
        The points; x and y finite.
    x_label, y_label : str
        Axis names.

    Returns
    -------
    str
        The `<svg>` element.
    """
    left, top, plot_w, plot_h, bottom, right = 56, 34, 420, 260, 44, 110
    width, height = left + plot_w + right, top + plot_h + bottom
    x_max = _nice_max(max((p[1] for p in points), default=0.0))
    y_max = _nice_max(max((p[2] for p in points), default=0.0))
    x_min = min(0.0, min((p[1] for p in points), default=0.0))

    def px(value: float) -> float:
        return left + plot_w * (value - x_min) / (x_max - x_min)

    def py(value: float) -> float:
        return top + plot_h * (1 - max(value, 0.0) / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        'class="scatter">',
        f"<title>{html.escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="8" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for t in range(5):
        yv, xv = y_max * t / 4, x_min + (x_max - x_min) * t / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{py(yv) + 4:.1f}" font-size="10" text-anchor="end">{yv:.3g}</text>'
            f'<line x1="{px(xv):.1f}" x2="{px(xv):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>'
            f'<text x="{px(xv):.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">{xv:.3g}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>'
        f'<text x="{left + plot_w / 2}" y="{top + plot_h + 32}" font-size="12" text-anchor="middle">'
        f"{html.escape(x_label)} (diversity →)</text>"
        f'<text x="14" y="{top + plot_h / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">{html.escape(y_label)} (relevance →)</text>'
    )
    for n, (label, x, y) in enumerate(points):
        colour = POINT_COLOURS[n % len(POINT_COLOURS)]
        tip = html.escape(f"{label}: {x_label} {x:.4f}, {y_label} {y:.4f}")
        parts.append(
            f'<g class="point"><title>{tip}</title>'
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="{colour}"/>'
            f'<text x="{px(x) + 7:.1f}" y="{py(y) + 4:.1f}" font-size="11">{html.escape(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _scatter(recall: Mapping[str, Mapping[str, Any]]) -> str | None:
    axes = relevance_diversity_axes(recall)
    if axes is None:
        return None
    x_key, y_key = axes
    points = _points(recall, x_key, y_key)
    return scatter_svg(f"Relevance vs diversity: {y_key} against {x_key}", points, x_key, y_key)


def _auc_chart(ranking: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Any]) -> str:
    tasks = list(ranking)
    series = [("model", [ranking[t].get("auc") for t in tasks])]
    if any(isinstance(baselines.get(t), Mapping) for t in tasks):
        series.append(
            (
                BASELINE_LABEL,
                [baselines[t].get("auc") if isinstance(baselines.get(t), Mapping) else None for t in tasks],
            )
        )
    for prefix, label in reversed(ORACLE_ROWS):  # the true probability's bar first, as before
        if any(f"{prefix}auc" in ranking[t] for t in tasks):
            series.append((label, [ranking[t].get(f"{prefix}auc") for t in tasks]))
    return bar_chart_svg(
        "AUC per task: model vs baseline", tasks, series, vmax=1.0, reference=(0.5, "random")
    )


def _training_section(training: Mapping[str, Any]) -> list[str]:
    """Each evaluated model's loss curve: a table of its epochs and a bar chart of the mean loss."""
    out = ["<h2>Training</h2>"]
    rows, charts = [], []
    for model, entry in training.items():
        epochs = [e for e in entry.get("epochs", []) if isinstance(e, Mapping)]
        for e in epochs:
            rows.append(
                f"<tr><th>{html.escape(str(model))}</th><td>{html.escape(str(entry.get('version', '')))}</td>"
                f"<td>{e.get('epoch')}</td><td>{_format(e.get('rows'))}</td>"
                f"<td>{_format(e.get('mean_loss'))}</td><td>{_format(e.get('rows_per_second'))}</td></tr>"
            )
        if epochs:
            charts.append(
                bar_chart_svg(
                    f"{model}: mean training loss per epoch",
                    [str(e.get("epoch")) for e in epochs],
                    [("mean loss", [e.get("mean_loss") for e in epochs])],
                )
            )
    out += [
        "<table><thead><tr><th>model</th><th>version</th><th>epoch</th><th>rows</th><th>mean loss</th>"
        f"<th>rows/s</th></tr></thead><tbody>{''.join(rows)}</tbody></table>",
        '<p class="note">The full versions evaluated here, from their manifests: rows over all ranks, '
        "row-weighted mean loss, rows/s over the slowest rank.</p>",
        f'<div class="charts">{"".join(charts)}</div>',
    ]
    return out


def _signed(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number:+.4f}"


def _interval(low: Any, high: Any, signed: bool = False) -> str:
    show = _signed if signed else _format
    return f"[{show(low)}, {show(high)}]"


def _variants_section(ab: Mapping[str, Any] | None) -> list[str]:
    """The A/B readout (`variants`): users per variant, each metric's mean and 95% interval, and the
    difference to the reference with its interval and whether it is significant."""
    out = ['<section id="ab-variants">', "<h2>A/B variants</h2>"]
    if not isinstance(ab, Mapping) or not isinstance(ab.get("by_variant"), Mapping):
        out += ["<p>No A/B readout: there were no final lists of the day before.</p>", "</section>"]
        return out
    layer, reference = str(ab.get("layer")), str(ab.get("reference"))
    by_variant = ab["by_variant"]
    compare = f"vs_{reference}"
    out.append(
        f'<p class="note">Layer <code>{html.escape(layer)}</code>, variants from '
        f"<code>{html.escape(str(ab.get('spec')))}</code>; reference variant "
        f"<b>{html.escape(reference)}</b>. The final lists (served view) per variant: each metric's mean "
        "over the variant's evaluated users with its 95% percentile-bootstrap interval, and the "
        "difference to the reference with the bootstrap interval of the difference; "
        "<b>significant</b> when that interval excludes 0 (two-sided, 5%).</p>"
    )
    users = "".join(
        f'<tr data-variant="{html.escape(str(v))}"><th>{html.escape(str(v))}'
        f"{' (reference)' if v == reference else ''}</th>"
        f'<td class="users">{_format(entry.get("users"))}</td></tr>'
        for v, entry in by_variant.items()
    )
    out.append(
        f'<table class="ab-users"><thead><tr><th>variant</th><th>users</th></tr></thead>'
        f"<tbody>{users}</tbody></table>"
    )
    metrics = _metric_order(
        [m for entry in by_variant.values() for m in entry.get("metrics", {})], RECALL_METRIC_ORDER
    )
    rows = []
    for metric in metrics:
        group = [(v, e) for v, e in by_variant.items() if metric in e.get("metrics", {})]
        for n, (variant, entry) in enumerate(group):
            m = entry["metrics"][metric]
            vs = entry.get(compare, {}).get(metric)
            if vs is not None:
                significant = bool(vs.get("significant"))
                diff = (
                    f'<td class="diff">{_signed(vs.get("diff"))}</td>'
                    f'<td class="diff-interval">{_interval(vs.get("low"), vs.get("high"), True)}</td>'
                    + (
                        '<td class="sig yes"><b>✔ significant</b></td>'
                        if significant
                        else '<td class="sig no">not significant</td>'
                    )
                )
            else:
                shown = "reference" if variant == reference else "—"
                diff = f'<td class="diff">{shown}</td><td class="diff-interval">—</td><td class="sig">—</td>'
            head = f'<th rowspan="{len(group)}">{html.escape(metric)}</th>' if n == 0 else ""
            rows.append(
                f'<tr data-metric="{html.escape(metric)}" data-variant="{html.escape(str(variant))}">{head}'
                f'<td class="label">{html.escape(str(variant))}</td>'
                f'<td class="mean">{_format(m.get("mean"))}</td>'
                f'<td class="interval">{_interval(m.get("low"), m.get("high"))}</td>{diff}</tr>'
            )
    out += [
        f'<table class="ab-metrics"><thead><tr><th>metric</th><th>variant</th><th>mean</th>'
        f"<th>95% interval</th><th>diff vs {html.escape(reference)}</th><th>95% interval of diff</th>"
        f"<th>significant?</th></tr></thead><tbody>{''.join(rows)}</tbody></table>",
        "</section>",
    ]
    return out


BUSINESS_DAY_COLUMNS = (
    "active_users",
    "clicks",
    "clicks_per_user",
    "dwell_ms_per_user",
    "retention_1d",
    "retention_7d",
    "lt7",
    "items_shown",
    "coverage",
    "days_after",
)
BUSINESS_EARLIER_COLUMNS = ("active_users", "retention_1d", "retention_7d", "lt7", "days_after", "complete")


def _business_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], with_day: bool, css: str
) -> str:
    keys = ("dt", "layer", "variant") if with_day else ("layer", "variant")
    head = "".join(f"<th>{k}</th>" for k in keys) + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        marks = "".join(f' data-{k}="{html.escape(str(row.get(k)))}"' for k in ("dt", "layer", "variant"))
        cells = [f"<th>{html.escape(str(row.get(keys[0])))}</th>"]
        cells += [f'<td class="label">{html.escape(str(row.get(k)))}</td>' for k in keys[1:]]
        for c in columns:
            value = row.get(c)
            shown = ("yes" if value else "no") if isinstance(value, bool) else _format(value)
            cells.append(f'<td data-column="{html.escape(c)}">{shown}</td>')
        body.append(f"<tr{marks}>{''.join(cells)}</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _business_section(business: Mapping[str, Any] | None) -> list[str]:
    """The business metrics (`business`): day D per (layer, variant), then the earlier days' retention."""
    out = ['<section id="business">', "<h2>Business metrics</h2>"]
    if not isinstance(business, Mapping):
        out += ["<p>No business metrics: the lake has no items table.</p>", "</section>"]
        return out
    day = html.escape(str(business.get("date")))
    layer = business.get("layer")
    groups = (
        f"overall (<code>all</code>) and per variant of layer <code>{html.escape(str(layer))}</code> "
        f"({html.escape(str(business.get('assignment')))})"
        if layer
        else "overall (<code>all</code>; <code>--variant-by LAYER</code> adds its variants)"
    )
    out.append(
        f'<p class="note">Day {day}, on which the lists of the day before were served: {groups}. Computed '
        "from the events (definitions in docs/experiments.md): active users have a non-impression event "
        "on the day; retention_1d, retention_7d and lt7 look at the days after it and show — until those "
        "days are in the lake (retention_1d needs the next day, the 7-day ones all 7; days_after counts "
        "those present).</p>"
    )
    rows = business.get("rows") or []
    if rows:
        out.append(_business_table(rows, BUSINESS_DAY_COLUMNS, False, "business-day"))
    else:
        out.append(f"<p>No events on {day}.</p>")
    earlier = business.get("earlier") or []
    if earlier:
        out += [
            "<h3>Retention and LT7 of the 7 days before</h3>",
            '<p class="note">Their weeks reach into the days after them that are already in the lake; '
            "complete = all 7 are, so the row is final.</p>",
            _business_table(earlier, BUSINESS_EARLIER_COLUMNS, True, "business-earlier"),
        ]
    out.append("</section>")
    return out


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, table.facts th { text-align: left; }
table.facts td, td.label { text-align: left; }
thead th { background: #f3f3f3; }
.charts svg { margin: 0 1em 1em 0; vertical-align: top; }
p.note { color: #555; font-size: 0.9em; max-width: 60em; }
td.sig.yes { color: #1a7f37; } td.sig.no { color: #777; }
"""


def evaluation_html(date: str, result: Mapping[str, Any], details: Mapping[str, Any] | None = None) -> str:
    """The self-contained HTML page of one evaluation (see the module docstring)."""
    kept = result.get("recall") or {}
    unseen = result.get(EXCLUDE_SEEN_KEY)
    recall = unseen if isinstance(unseen, Mapping) else kept
    ranking = result.get("ranking") or {}
    baselines = result.get("baselines") if isinstance(result.get("baselines"), Mapping) else {}
    shown_apart = (*CONTRACT_KEYS, "baselines", EXCLUDE_SEEN_KEY, VARIANTS_KEY, BUSINESS_KEY, TRAINING_KEY)
    extra = {k: v for k, v in result.items() if k not in shown_apart}
    title = f"Offline evaluation — {date}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if details:
        out += ["<h2>Run</h2>", _facts_table(details)]
    if extra:
        out += ["<h2>Other result fields</h2>", _facts_table(extra)]

    out.append("<h2>Recall channels</h2>")
    if recall:
        if recall is unseen:
            out.append(
                '<p class="note"><b>Seen items excluded</b> (--exclude-seen): each user\'s items engaged '
                "with before the day are removed from every channel's list before its top-K cut and from "
                f"the truth (JSON key <code>{EXCLUDE_SEEN_KEY}</code>). The lists as the channels rank "
                "them, seen items kept, follow below (JSON key <code>recall</code>).</p>"
            )
        else:
            out.append('<p class="note">Seen items kept: the lists as the channels rank them.</p>')
        scatter = _scatter(recall)
        out += [
            _recall_table(recall),
            '<p class="note">Per-user means over the evaluated users; best value per column in bold. '
            "Recall@K = |top-K ∩ truth| / |truth|; NDCG@K with binary gains; HitRate@K = share of users "
            "with at least one relevant item in their top K. Coverage@K = distinct listed items / "
            "catalogue (coverage = at the largest K); ILD@K = 1 − mean pairwise cosine of the item "
            "embeddings in a list; category_ild@K = share of list pairs of different categories; "
            "novelty@K = mean −log2 p(i), p(i) = (users who had i + 1) / (users + 1).</p>",
            '<div class="charts">',
            *_recall_charts(recall),
            *([scatter] if scatter else []),
            "</div>",
        ]
        if recall is unseen and kept:
            out += ["<h3>Seen items kept (JSON key <code>recall</code>)</h3>", _recall_table(kept)]
    else:
        out.append("<p>No recall channel was evaluated.</p>")

    out.append("<h2>Ranking</h2>")
    if ranking:
        out += [
            _ranking_table(ranking, baselines),
            '<p class="note">AUC: Mann–Whitney, ties count 1/2. uAUC: per-user AUC weighted by the user\'s '
            "impressions, over users with both classes. Log-loss: lower is better. Bold: the better of model "
            f"and {html.escape(BASELINE_LABEL)} per task.</p>",
            f'<div class="charts">{_auc_chart(ranking, baselines)}</div>',
        ]
    else:
        out.append("<p>No ranking task was evaluated.</p>")
    if isinstance(result.get(TRAINING_KEY), Mapping):
        out += _training_section(result[TRAINING_KEY])
    if VARIANTS_KEY in result:
        out += _variants_section(result[VARIANTS_KEY])
    if BUSINESS_KEY in result:
        out += _business_section(result[BUSINESS_KEY])
    out.append("</body></html>")
    return "\n".join(out) + "\n"
