"""Learned models against the best possible and the classic baselines, from one `evaluate` run.

The peers are named in the same run, on the same held-out day and sampled users, each as it would
serve (`recall_exclude_seen`): the generator's `oracle` (the limit), ItemCF (the co-occurrence
baseline the two-tower must reach, issue 18), and MLlib ALS / EASE. Printed: Recall@10, Recall@50 and
NDCG@10 per channel with its share of the oracle, the ratio two_tower / itemcf at 50, and per ranking
task the ranker's AUC against the statistics baseline and the oracle AUC.

`--build` makes the lake first: `generate` (default 5,000 users, 1,500 items, 8 days), then `run-daily`
of the two days before the held-out one (the first a cold start with `--train-epochs`, the second a
warm start, as a scheduler runs them; A/B, profiles, lists and business metrics skipped), then
`evaluate` of the last day. Without `--build` it reads the newest report of `--lake`.

Usage: .venv/bin/python benchmarks/bench_models.py --build [--users N] [--epochs E] [--np 2]
       .venv/bin/python benchmarks/bench_models.py --lake LAKE [--date D]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS

CHANNELS = ("oracle", "two_tower", "itemcf", "swing", "usercf", "als", "ease", "popularity")
SKIPPED = ("buckets", "recommend", "evaluate", "business_metrics", "walks.node2vec", "embeddings.node2vec")


def cli(*args: str) -> None:
    started = time.time()
    subprocess.run([str(REPO / ".venv" / "bin" / "recsys-spark"), *args], check=True)
    print(f"-- {args[0]} {' '.join(a for a in args[1:4])} ... {time.time() - started:.0f}s", flush=True)


def build(lake: Path, users: int, items: int, days: int, epochs: int, np_: int, seed: int) -> str:
    cli("generate", "--lake", str(lake), "--users", str(users), "--items", str(items), "--days", str(days),
        "--seed", str(seed))  # fmt: skip
    last = dt.date(2026, 11, 1) + dt.timedelta(days=days - 1)
    first, prev = last - dt.timedelta(days=2), last - dt.timedelta(days=1)
    common = ["--lake", str(lake), "--np", str(np_), "--skip", *SKIPPED]
    cli("run-daily", "--date", str(first), "--train-epochs", str(epochs), *common)
    cli("run-daily", "--date", str(prev), *common)
    cli("evaluate", "--lake", str(lake), "--date", str(last), "--channels", *CHANNELS)
    return str(last)


def table(report: dict) -> tuple[list[str], dict]:
    recall = report.get("recall_exclude_seen") or report["recall"]
    oracle = recall.get("oracle", {})
    lines = ["| channel | recall@10 | recall@50 | ndcg@10 | recall@50 / oracle |", "|---|---|---|---|---|"]
    for name in CHANNELS:
        m = recall.get(name)
        if m is None:
            continue
        share = m["recall@50"] / oracle["recall@50"] if oracle.get("recall@50") else float("nan")
        lines.append(
            f"| {name} | {m['recall@10']:.4f} | {m['recall@50']:.4f} | {m['ndcg@10']:.4f} | {share:.3f} |"
        )
    summary: dict = {"recall": {n: recall[n] for n in CHANNELS if n in recall}}
    if "two_tower" in recall and "itemcf" in recall:
        ratio = recall["two_tower"]["recall@50"] / max(recall["itemcf"]["recall@50"], 1e-12)
        summary["two_tower_over_itemcf_recall@50"] = ratio
        lines.append(f"\ntwo_tower / itemcf recall@50: {ratio:.3f} (goal >= 1)")
    lines.append(
        "\n| task | ranker auc | statistics auc | oracle auc | oracle − ranker | serving oracle auc "
        "| serving oracle − ranker |\n|---|---|---|---|---|---|---|"
    )
    for task, m in report.get("ranking", {}).items():
        base = report.get("baselines", {}).get(task, {}).get("auc", float("nan"))
        limit = m.get("oracle_auc", float("nan"))
        serving = m.get("oracle_serving_auc", float("nan"))
        lines.append(
            f"| {task} | {m['auc']:.4f} | {base:.4f} | {limit:.4f} | {limit - m['auc']:+.4f} | "
            f"{serving:.4f} | {serving - m['auc']:+.4f} |"
        )
    summary["ranking"] = report.get("ranking", {})
    summary["baselines"] = report.get("baselines", {})
    return lines, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=None)
    parser.add_argument("--date", default=None, help="evaluation day (default: the newest report)")
    parser.add_argument("--build", action="store_true", help="build a fresh lake first")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="passes of the first (cold) full run")
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.time()
    if args.build:
        lake = Path(args.lake or Path(tempfile.mkdtemp(prefix="bench-models-")) / "lake")
        date = build(lake, args.users, args.items, args.days, args.epochs, args.np, args.seed)
    else:
        if not args.lake:
            parser.error("--lake LAKE (with a report) or --build")
        lake, date = Path(args.lake), args.date
    reports = lake / "_reports" / "evaluation"
    path = reports / f"{date}.json" if date else max(reports.glob("*.json"))
    report = json.loads(path.read_text())
    lines, summary = table(report)
    print(f"\n# {path} ({time.time() - started:.0f}s)\n")
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "models.json").write_text(
        json.dumps({**summary, "lake": str(lake), "args": vars(args)}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
