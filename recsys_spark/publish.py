"""`recsys-spark publish --date D`: mark a day's outputs as published, after every check passed.

The Delta tables and model versions are already committed by the jobs that wrote them; publishing is
the consumers' contract on top: `<lake>/_reports/published/<D>.json` names, for day D, the exact Delta
version of every output table and the model versions, and it exists only once every stage of the day
finished and no quality check of the day failed. Serving and analytics read those versions (Delta time
travel), so a half-finished or failed day is never picked up, and yesterday's manifest stays valid.

- `--mode daily` (the daily DAG's last task) checks that every `--tables` table holds day D (its `dt = D`
  partition, or for tables replaced whole, a latest commit made for D), that each `--models` model's
  full version is `full-D`, and that no `_reports/quality/<table>/<D>.json` summary failed critically;
  then writes `<D>.json`. Exit 1, naming what is missing, otherwise; nothing is written.
- `--mode incremental` (the incremental DAG) records the models' serving versions and the
  `item_vectors` version as `incremental-<stamp>.json`, unless they did not change since the last one.

Either file is written atomically (a temporary name, then a rename), so a reader never sees half of it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

from recsys_spark.catalog import DAILY_TABLES, DATED_TABLES, METHOD_TABLES, MODELS, WALK_METHODS
from recsys_spark.config import DatedConfig, option
from recsys_spark.errors import UsageError

log = logging.getLogger(__name__)

NONE = "none"


@dataclass
class PublishConfig(DatedConfig):
    """Checks that the day's tables, models and quality summaries are complete and clean, then writes
    <lake>/_reports/published/<date>.json with every table's Delta version and the model versions
    (--mode incremental: incremental-<stamp>.json with the serving versions)."""

    mode: str = option(
        "daily",
        "daily: one day's outputs; incremental: the serving models.",
        choices=["daily", "incremental"],
    )
    tables: list[str] = option(
        list(DAILY_TABLES),
        "Tables that must hold --date; the others are recorded as they stand ('none': no table required).",
    )
    models: list[str] = option(list(MODELS), "Models whose full version must be full-<date> ('none': none).")
    methods: list[str] = option(list(WALK_METHODS), "Walk/embedding methods that must be of --date.")
    stamp: str | None = option(
        None, "Incremental mode: the file's stamp (the DAG passes its run's); default now, UTC."
    )


def _fs(lake, *parts: str):
    from recsys_spark.lake.commit import filesystem

    return filesystem(lake.path(*parts))


def _read_json(lake, *parts: str) -> dict | None:
    fs, path = _fs(lake, *parts)
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read())
    except FileNotFoundError:
        return None


def write_json_atomically(lake, document: dict, *parts: str) -> str:
    """Write `document` to the lake location `parts` atomically (`lake.commit.write_atomically`)."""
    from recsys_spark.lake.commit import write_atomically

    text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
    write_atomically(lake.path(*parts), text.encode())
    return lake.path(*parts)


def _list_names(lake, *parts: str, folders: bool = False) -> list[str]:
    """Names in a lake folder (only its sub-folders with `folders`); [] when it does not exist."""
    import pyarrow.fs as pafs

    fs, path = _fs(lake, *parts)
    wanted = pafs.FileType.Directory if folders else pafs.FileType.File
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    except FileNotFoundError:
        return []
    return sorted(i.base_name for i in infos if i.type == wanted)


def _has_day(lake, table: str, day: dt.date) -> bool:
    from pyspark.sql import functions as F

    return lake.read(table, dates=[day]).filter(F.col("dt") == F.lit(day)).limit(1).count() > 0


def _newest_day_before(lake, table: str, day: dt.date) -> str | None:
    from pyspark.sql import functions as F

    newest = lake.read(table).filter(F.col("dt") < F.lit(day)).agg(F.max("dt")).first()[0]
    return str(newest) if newest else None


def table_state(lake, table: str, day: dt.date, methods: list[str]) -> tuple[dict[str, Any], str | None]:
    """(what to record about `table`, why it does not hold `day` or None)."""
    if not lake.exists(table):
        return {}, "missing"
    history = lake.history(table)
    state: dict[str, Any] = {"version": history[0]["version"]}
    if table in DATED_TABLES:
        if _has_day(lake, table, day):
            state["date"] = str(day)
            return state, None
        state["date"] = _newest_day_before(lake, table, day)
        return state, f"no dt = {day} partition (newest before it: {state['date']})"
    if table in METHOD_TABLES:
        # Written per method (one partition each): the newest commit of each method says its day.
        dates = {
            m: next((str(e.get("date")) for e in history if e.get("method") == m), None) for m in methods
        }
        state["methods"] = dates
        stale = sorted(m for m, d in dates.items() if d != str(day))
        return state, f"{', '.join(stale)} not built for {day} ({dates})" if stale else None
    state["date"] = history[0].get("date")
    if state["date"] != str(day):
        return state, f"latest version {state['version']} is of {state['date']}, not {day}"
    return state, None


def quality_failures(lake, day: dt.date) -> tuple[dict[str, str], list[str]]:
    """Status of every `_reports/quality/<table>/<day>.json` summary, and the critical failures among them."""
    statuses, failed = {}, []
    for table in _list_names(lake, "_reports", "quality", folders=True):
        summary = _read_json(lake, "_reports", "quality", table, f"{day}.json")
        if summary is None:
            continue
        statuses[table] = summary.get("status", "unknown")
        if summary.get("status") == "failed" or summary.get("critical_failed"):
            names = [c.get("name") or c.get("expectation") or "?" for c in summary.get("critical_failed", [])]
            failed.append(f"{table}: critical expectation(s) failed {names} ({summary.get('data_docs', '')})")
    return statuses, failed


def run_daily(cfg: PublishConfig, spark, lake) -> int:
    from recsys_spark.train.registry import Registry

    day = cfg.date
    problems: list[str] = []
    tables: dict[str, dict] = {}
    for table in DAILY_TABLES:
        state, problem = table_state(lake, table, day, cfg.methods)
        if problem and table in cfg.tables:
            problems.append(f"table {table}: {problem}")
        elif problem and state:
            state["stale"] = True  # not required today (its stage was skipped): recorded as it stands
        if state:
            tables[table] = state
    if lake.exists("item_vectors"):  # one partition per model version: the version pins them all
        tables["item_vectors"] = {"version": lake.version("item_vectors")}
    models: dict[str, dict] = {}
    for model in cfg.models:
        latest = Registry.for_model(lake, model).latest()
        full = (latest.get("full") or {}).get("version")
        if full != f"full-{day}":
            problems.append(f"model {model}: full version is {full or 'missing'}, not full-{day}")
        models[model] = {
            "full": full,
            "base": (latest.get("full") or {}).get("base"),
            "serving": latest.get("serving"),
            "path": lake.path("_models", model, "full", full) if full else None,
        }
    statuses, failed = quality_failures(lake, day)
    problems += [f"quality {f}" for f in failed]
    evaluation = _read_json(lake, "_reports", "evaluation", f"{day}.json")
    if problems:
        print(f"publish {day}: NOT published, {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    document = {
        "date": str(day),
        "mode": "daily",
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lake": lake.root,
        "tables": tables,
        "models": models,
        "quality": statuses,
        "evaluation": lake.path("_reports", "evaluation", f"{day}.json") if evaluation else None,
    }
    path = write_json_atomically(lake, document, "_reports", "published", f"{day}.json")
    versions = ", ".join(f"{m} {v['full']}" for m, v in models.items())
    print(f"publish {day}: {len(tables)} tables, models {versions or '-'}")
    print(f"  {path}")
    return 0


def run_incremental(cfg: PublishConfig, spark, lake) -> int:
    from recsys_spark.train.registry import Registry

    models = {}
    for model in cfg.models:
        latest = Registry.for_model(lake, model).latest()
        if not latest.get("serving"):
            print(
                f"publish incremental: model {model} has no serving version; NOT published", file=sys.stderr
            )
            return 1
        models[model] = {
            "serving": latest["serving"],
            "full": (latest.get("full") or {}).get("version"),
            "watermark": (latest.get("incremental") or latest.get("full") or {}).get("watermark"),
        }
    previous = [n for n in _list_names(lake, "_reports", "published") if n.startswith("incremental-")]
    if previous:
        last = _read_json(lake, "_reports", "published", previous[-1]) or {}
        if last.get("models") == models:
            print(f"publish incremental: serving versions unchanged since {previous[-1]}; nothing to publish")
            return 0
    stamp = cfg.stamp or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "mode": "incremental",
        "stamp": stamp,
        "date": str(cfg.date),
        "published_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lake": lake.root,
        "models": models,
        "tables": {"item_vectors": {"version": lake.version("item_vectors")}},
    }
    path = write_json_atomically(lake, document, "_reports", "published", f"incremental-{stamp}.json")
    serving = ", ".join(f"{m} {v['serving']}" for m, v in models.items())
    print(f"publish incremental: {serving}\n  {path}")
    return 0


def run(cfg: PublishConfig, spark, lake) -> int:
    # `none` spells an empty list on the command line (the DAG passes it when those stages were skipped).
    cfg.tables = [t for t in cfg.tables if t != NONE]
    cfg.models = [m for m in cfg.models if m != NONE]
    unknown = sorted(set(cfg.tables) - set(DAILY_TABLES))
    if unknown:
        raise UsageError(f"--tables: unknown {unknown}; daily outputs are {list(DAILY_TABLES)}")
    if sorted(set(cfg.models) - set(MODELS)):
        raise UsageError(f"--models: choose from {list(MODELS)}")
    return run_daily(cfg, spark, lake) if cfg.mode == "daily" else run_incremental(cfg, spark, lake)
