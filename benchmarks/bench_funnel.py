"""The recommendation funnel against its own recall channels, from one `evaluate` run.

The peer of the final lists is the best single recall channel, scored in the same `evaluate` run
on the same held-out day and users, the way each would serve (seen and over-exposed items removed
from every list and from the truth: `recall_exclude_seen`). Printed: every channel's NDCG@10,
Recall@10 and ILD@10, and the ratios final / best channel (NDCG@10) and final / ranked (ILD@10), the
two conditions of issue 16.

By default it reads the newest `_reports/evaluation/*.json` of `--lake` (run `make demo` first).
`--build SEED` makes a fresh lake first with `scripts/demo.sh` and the generator seed SEED (the demo
uses 1; another seed checks that the defaults were not fitted to that one lake): ~15 min on 2 cores.

Usage: .venv/bin/python benchmarks/bench_funnel.py [--lake demo-lake] [--date D] [--build SEED]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, RESULTS

SERVED = ("final", "ranked")


def funnel_table(report: dict, k: int = 10) -> tuple[list[str], dict]:
    """Lines of the table and the summary dict of one evaluation report."""
    block = report.get("recall_exclude_seen") or report["recall"]
    served = "seen and over-exposed excluded" if "recall_exclude_seen" in report else "as ranked"
    channels = {n: m for n, m in block.items() if n not in SERVED}
    if "final" not in block or not channels:
        raise SystemExit(f"the report of {report.get('date')} has no final lists or no channel to compare")
    best = max(channels, key=lambda n: channels[n][f"ndcg@{k}"])
    lines = [f"evaluate {report.get('date')} ({served}), {report.get('users_evaluated_exclude_seen')} users"]
    lines.append(f"  {'channel':<11} {'ndcg@' + str(k):>9} {'recall@' + str(k):>10} {'ild@' + str(k):>8}")
    for name, m in sorted(block.items(), key=lambda kv: -kv[1][f"ndcg@{k}"]):
        ild = m.get(f"ild@{k}")
        lines.append(
            f"  {name:<11} {m[f'ndcg@{k}']:>9.4f} {m[f'recall@{k}']:>10.4f} "
            f"{'-' if ild is None else f'{ild:.4f}':>8}"
        )
    final, ranked = block["final"], block.get("ranked", {})
    summary = {
        "date": report.get("date"),
        "best_channel": best,
        "final_ndcg": final[f"ndcg@{k}"],
        "best_channel_ndcg": channels[best][f"ndcg@{k}"],
        "ndcg_ratio_final_vs_best_channel": final[f"ndcg@{k}"] / channels[best][f"ndcg@{k}"],
        "final_ild": final.get(f"ild@{k}"),
        "ranked_ild": ranked.get(f"ild@{k}"),
    }
    if summary["final_ild"] is not None and summary["ranked_ild"]:
        summary["ild_ratio_final_vs_ranked"] = summary["final_ild"] / summary["ranked_ild"]
    lines.append(
        f"  final / best channel ({best}) NDCG@{k}: {summary['ndcg_ratio_final_vs_best_channel']:.3f}x"
        + (
            f"; final / ranked ILD@{k}: {summary['ild_ratio_final_vs_ranked']:.3f}x"
            if "ild_ratio_final_vs_ranked" in summary
            else ""
        )
    )
    return lines, summary


def newest_report(lake: Path, date: str | None) -> dict:
    folder = lake / "_reports" / "evaluation"
    paths = [folder / f"{date}.json"] if date else sorted(folder.glob("????-??-??.json"))
    if not paths or not paths[-1].exists():
        raise SystemExit(f"no evaluation report under {folder}: run `make demo` (or pass --build SEED)")
    return json.loads(paths[-1].read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=str(REPO / "demo-lake"))
    parser.add_argument("--date", default=None, help="evaluation day (default: the newest report)")
    parser.add_argument(
        "--build", type=int, default=None, metavar="SEED", help="build a fresh demo lake first"
    )
    args = parser.parse_args()
    lake = Path(args.lake)
    if args.build is not None:
        lake = Path(tempfile.mkdtemp(prefix="bench-funnel-")) / "lake"
        started = time.time()
        env = {**os.environ, "DEMO_SEED": str(args.build)}
        subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), str(lake)], env=env, check=True)
        print(f"built {lake} (seed {args.build}) in {time.time() - started:.0f}s")
    lines, summary = funnel_table(newest_report(lake, args.date))
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "funnel.json").write_text(
        json.dumps({**summary, "lake": str(lake), "seed": args.build}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
