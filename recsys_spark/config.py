"""Typed job configs: one dataclass per job, the single source of option names, defaults and help.

A field `top_k` becomes the CLI flag `--top-k`, the DAG param `top_k`, and a row in the docs
(`recsys-spark <job> --help` prints them all), so the three never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import types
import typing
from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its help text, and optionally:

    - `choices=[...]`: the allowed values (the CLI refuses others; the DAG param is an enum);
    - `minimum=N` / `exclusive_minimum=N`: the bound the job's own validation enforces, carried to
      the Airflow param of the same option;
    - `aliases=[old_name, ...]`: earlier names still accepted by the CLI (hidden, with a warning).
    """
    meta = {"help": help, **kwargs}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def same_as(job: str, config_cls: type, name: str, help: str | None = None, **kwargs: Any) -> Any:
    """An option that forwards to option `name` of `job` (config `config_cls`): same default, choices
    and bounds, written once in the job's config. `metadata["forwards"]` = (job, name) for the caller
    that routes it (run-daily's stages, the DAG params)."""
    source = config_cls.__dataclass_fields__[name]
    meta = {k: v for k, v in source.metadata.items() if k not in ("aliases", "help")}
    meta.update(kwargs, forwards=(job, name))
    flag = "--" + name.replace("_", "-")
    return option(field_default(source), help or f"{job} {flag}: {source.metadata.get('help', '')}", **meta)


def params_of(config, params_cls: type):
    """The `params_cls` dataclass (an algorithm's typed parameters) filled from a job config's fields."""
    return params_cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(params_cls)})


@dataclass
class CommonConfig:
    """Options every job takes."""

    lake: str = option("./lake", "Lake directory or URI (file://, s3a://...) holding the Delta tables.")
    master: str | None = option(
        None, "Spark master URL; default $SPARK_MASTER, then spark-submit's --master, then local[*]."
    )
    engine: str = option(
        "auto",
        "Delta engine: spark (needs the Delta jars), delta-rs, or auto (spark when the jars are present).",
        choices=["auto", "spark", "delta-rs"],
    )
    log_level: str = option("INFO", "Log level of recsys-spark's own messages.")


@dataclass
class DatedConfig(CommonConfig):
    """Options of jobs that work on one day."""

    date: dt.date | None = option(None, "Day to compute (YYYY-MM-DD); default the latest day in events.")


@dataclass
class GatedConfig(DatedConfig):
    """Options of dated jobs that write tables: `--gate` (on by default) validates each table before its
    Delta commit. `cli.main` installs the gate once for every such job (quality/gate.py), so a job run
    alone, by `spark-submit` or by an Airflow task, commits only data that passed, as `run-daily` does."""

    gate: bool = option(
        True, "Validate each table's critical expectations before publishing it (docs/quality.md)."
    )


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one `--flag` per field of `config_cls`, with its default and help text."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        base = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = field_default(f)
        help_text = f.metadata.get("help", "")
        shown = "" if default is None else f" (default: {default})"
        # argparse %-formats help ("%(default)s"); ours is prose ("95% intervals"), so escape it.
        help_text = (help_text + shown).replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if base is bool:
            if default:
                kwargs["type"] = _parse_bool
                kwargs["metavar"] = "BOOL"
            else:
                kwargs["action"] = "store_true"
        elif base is dt.date:
            kwargs["type"] = _parse_date
            kwargs["metavar"] = "YYYY-MM-DD"
        elif typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            kwargs["type"] = item
            kwargs["nargs"] = "+"
        elif base in (int, float, str):
            kwargs["type"] = base
        parser.add_argument(flag, **kwargs)
        for alias in f.metadata.get("aliases", ()):
            hidden = {k: v for k, v in kwargs.items() if k not in ("default", "help", "dest", "action")}
            parser.add_argument(
                "--" + alias.replace("_", "-"),
                **hidden,
                dest=f.name,
                action=_deprecated(flag),
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )


def _deprecated(flag: str) -> type[argparse.Action]:
    """An argparse action for an old spelling of `flag` (options with a value): stores, and warns."""

    class Deprecated(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            logging.getLogger("recsys_spark").warning("%s is deprecated: use %s", option_string, flag)
            setattr(namespace, self.dest, values)

    return Deprecated


def config_from_namespace(config_cls: type, namespace: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in vars(namespace).items() if k in names})


def config_from_params(config_cls: type, params: dict[str, Any]):
    """Build a config from a dict of params (e.g. Airflow DAG params); unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ValueError(f"{config_cls.__name__}: unknown options {unknown}")
    return config_cls(**params)


def describe(config_cls: type) -> list[tuple[str, Any, str]]:
    """(flag, default, help) for every option: used to generate the docs tables."""
    rows = []
    for f in dataclasses.fields(config_cls):
        default = field_default(f)
        rows.append(("--" + f.name.replace("_", "-"), default, f.metadata.get("help", "")))
    return rows
