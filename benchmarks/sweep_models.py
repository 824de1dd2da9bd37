"""Training options of one model swept on one lake, each against the baselines and the oracle of the same day.

Each point copies `--lake` (a lake `bench_models.py --build` made: its tables, similarities and
models of the days before `--date`), trains `--model` from scratch on the day before `--date` with
the point's options (`train --warm-start false`, so `--cold-start-days` decides how many days of
samples it sees), and evaluates `--date` on the same sampled users:

- `--model two_tower`: the channels two_tower, itemcf and oracle; one row per point with recall@10,
  recall@50, coverage@10, the ratios two_tower / itemcf and two_tower / oracle at 50;
- `--model ranker`: the ranking of the day's impressions; one row per point with click and like
  AUC, the statistics baseline's AUC, the oracle's (ranking by the generator's true probability,
  which knows how often D showed each pair) and the serving oracle's (the same without that count:
  the limit a model serving on D can reach), each with its gap limit − model, and click log-loss;

and the training rows and seconds.

Points are `name:flag=value,flag=value` (flags of `recsys-spark train`, without the dashes; a switch
such as `own-negatives` is named without a value):

    .venv/bin/python benchmarks/sweep_models.py --lake /tmp/bm/lake --date 2026-11-06 \\
        --point one-day:cold-start-days=1 --point window:cold-start-days=30
    .venv/bin/python benchmarks/sweep_models.py --model ranker --lake /tmp/bm/lake --date 2026-11-06 \\
        --point dcn:arch=dcn_v2 --point din:arch=din

Without `--point` the model's default grid runs. Results go to benchmarks/results/sweep_<model>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS

DEFAULT_GRIDS = {
    "two_tower": (
        "one-day:cold-start-days=1,epochs=3",
        "window:cold-start-days=30,epochs=1",
        "window-3-epochs:cold-start-days=30,epochs=3",
        "window-uniform:cold-start-days=30,epochs=3,uniform-negatives=512",
    ),
    "ranker": tuple(
        f"{arch}:arch={arch},epochs=3" for arch in ("fm", "wide_deep", "deepfm", "dcn_v2", "din", "dien")
    ),
}
# What evaluate runs per model: the recall channels compared, or (ranker) one cheap channel, the
# ranking metrics being computed on the day's impressions whatever the channels.
EVALUATED_CHANNELS = {"two_tower": ("two_tower", "itemcf", "oracle"), "ranker": ("popularity",)}


def parse_point(text: str) -> tuple[str, list[str]]:
    name, _, spec = text.partition(":")
    flags: list[str] = []
    for part in filter(None, spec.split(",")):
        key, has_value, value = part.partition("=")
        flags += [f"--{key.strip()}", value.strip()] if has_value else [f"--{key.strip()}"]  # a switch
    return name, flags


def cli(*args: str) -> float:
    started = time.time()
    subprocess.run([str(REPO / ".venv" / "bin" / "recsys-spark"), *args], check=True)
    return time.time() - started


def run_point(source: Path, day: dt.date, model: str, name: str, flags: list[str], np_: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"sweep-{name}-"))
    lake = work / "lake"
    shutil.copytree(source, lake)
    try:
        before = str(day - dt.timedelta(days=1))
        common = ["--lake", str(lake), "--date", before]
        seconds = cli("train", *common, "--model", model, "--warm-start", "false", "--np", str(np_), *flags)
        manifest = json.loads(
            (lake / "_models" / model / "full" / f"full-{before}" / "manifest.json").read_text()
        )
        cli("evaluate", "--lake", str(lake), "--date", str(day), "--channels", *EVALUATED_CHANNELS[model])
        report = json.loads((lake / "_reports" / "evaluation" / f"{day}.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    recall = report.get("recall_exclude_seen") or report["recall"]
    return {
        "name": name,
        "flags": flags,
        "rows": manifest["rows"],
        "train_seconds": seconds,
        "sample_window": manifest.get("sample_window"),
        "epochs": manifest.get("epochs"),
        "recall": {c: recall[c] for c in ("two_tower", "itemcf", "oracle") if c in recall},
        "ranking": report.get("ranking", {}),
        "baselines": report.get("baselines", {}),
    }


RECALL_HEADER = [
    "| point | train flags | recall@10 | recall@50 | coverage@10 | / itemcf @50 | / oracle @50 | rows | train s |",
    "|---|---|---|---|---|---|---|---|---|",
]


def recall_line(point: dict) -> str:
    r = point["recall"]
    tt, cf, oracle = r["two_tower"], r["itemcf"], r.get("oracle", {})
    over_cf = tt["recall@50"] / max(cf["recall@50"], 1e-12)
    over_oracle = tt["recall@50"] / oracle["recall@50"] if oracle.get("recall@50") else float("nan")
    return (
        f"| {point['name']} | {' '.join(point['flags'])} | {tt['recall@10']:.4f} | {tt['recall@50']:.4f} | "
        f"{tt['coverage@10']:.3f} | {over_cf:.3f} | {over_oracle:.3f} | {point['rows']} | "
        f"{point['train_seconds']:.0f} |"
    )


RANKER_HEADER = [
    "| point | train flags | click auc | statistics | oracle | gap | serving oracle | gap | like auc | oracle "
    "| gap | serving oracle | gap | click logloss | rows | train s |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def limits(task: dict) -> str:
    """The task's oracle and serving-oracle AUC, each with its gap to the model (limit − model)."""
    cells = []
    for key in ("oracle_auc", "oracle_serving_auc"):
        cells += [f"{task[key]:.4f}", f"{task[key] - task['auc']:+.4f}"] if key in task else ["n/a", "n/a"]
    return " | ".join(cells)


def ranker_line(point: dict) -> str:
    click, like = point["ranking"]["click"], point["ranking"].get("like", {})
    base = point["baselines"].get("click", {})
    return (
        f"| {point['name']} | {' '.join(point['flags'])} | {click['auc']:.4f} | {base.get('auc', float('nan')):.4f} | "
        f"{limits(click)} | {like.get('auc', float('nan')):.4f} | {limits(like) if like else 'n/a | n/a | n/a | n/a'} | "
        f"{click['logloss']:.4f} | {point['rows']} | {point['train_seconds']:.0f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", required=True, help="a lake built by bench_models.py --build")
    parser.add_argument("--date", required=True, help="the held-out day evaluated")
    parser.add_argument("--point", action="append", default=[], help="name:flag=value,... (repeatable)")
    parser.add_argument("--model", choices=sorted(DEFAULT_GRIDS), default="two_tower")
    parser.add_argument("--np", type=int, default=2)
    args = parser.parse_args()
    day = dt.date.fromisoformat(args.date)
    points = []
    header, line = (RANKER_HEADER, ranker_line) if args.model == "ranker" else (RECALL_HEADER, recall_line)
    for text in args.point or DEFAULT_GRIDS[args.model]:
        name, flags = parse_point(text)
        points.append(run_point(Path(args.lake), day, args.model, name, flags, args.np))
        print("\n".join([*header, *map(line, points)]), flush=True)
    if args.model == "two_tower":
        cf = points[0]["recall"]["itemcf"]
        print(f"\nitemcf on {day}: recall@10 {cf['recall@10']:.4f}, recall@50 {cf['recall@50']:.4f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sweep_{args.model}.json").write_text(
        json.dumps({"lake": args.lake, "date": args.date, "model": args.model, "points": points}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
