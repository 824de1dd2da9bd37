"""Item cold start on one lake: new items in the final lists, their held-out CTR, days to similarity.

For the lists' day D (default: the newest `recommendations` partition whose next day has events) and
`--new-item-days` n (rerank's default, 3), each figure is printed beside its peer, measured on the
same lake and day (definitions in recsys_spark/evaluate/cold_start.py):

- the share of final lists holding a new item, and the share of list slots that are new items, vs
  the share of D's catalogue that is new;
- the new items' CTR on the held-out day D + 1 vs the old items' (ratio new / old, with both
  groups' impressions);
- days from an item's creation to the first dated `itemcf_sim` / `swing_sim` version holding it
  (count, median, p90), and the share of items created in the table's span that never got in.

Usage: .venv/bin/python benchmarks/bench_cold_start.py [--lake demo-lake] [--date D] [--new-item-days 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from common import REPO, bench_session, print_table, save


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None, fmt: str = ".2f", unit: str = "") -> str:
    return "-" if x is None else format(x, fmt) + unit


def _of(share: float | None, part: int, whole: int, of: str = "of", unit: str = "") -> str:
    return f"{_pct(share)} ({part:,} {of} {whole:,}{unit})"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def default_day(lake) -> dt.date:
    """The newest `recommendations` day whose next day has events (the held-out day)."""
    if not lake.exists("recommendations"):
        raise SystemExit(f"no recommendations in {lake.root}: run `make demo` first")
    days = sorted(r[0] for r in lake.read("recommendations").select("dt").distinct().collect())
    for day in reversed(days):  # one row per day of lists
        nxt = day + dt.timedelta(days=1)
        if lake.exists("events") and lake.read("events", dates=[nxt]).limit(1).count():
            return day
    raise SystemExit(f"no recommendations day of {lake.root} has events on the next day")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default=str(REPO / "demo-lake"))
    parser.add_argument("--date", default=None, help="the lists' day D (default: see above)")
    parser.add_argument("--new-item-days", type=int, default=3, help="n: new = created in the n days to D")
    args = parser.parse_args()
    if not Path(args.lake).exists() and "://" not in args.lake:
        raise SystemExit(f"no lake at {args.lake}: run `make demo` first")

    from recsys_spark.evaluate.cold_start import (
        SIMILARITY_TABLES,
        days_to_similarity,
        new_item_share,
        new_vs_old_ctr,
    )
    from recsys_spark.lake import Lake

    started = time.time()
    spark = bench_session(cores=2)
    lake = Lake(spark, args.lake)
    day = dt.date.fromisoformat(args.date) if args.date else default_day(lake)
    n = args.new_item_days
    items = lake.read("items").cache()
    share = new_item_share(lake.read("recommendations", dates=[day]), items, day, n)
    held_out = day + dt.timedelta(days=1)
    ctr = new_vs_old_ctr(lake.read("events", dates=[held_out]), items, day, n)
    similarity = {t: days_to_similarity(lake, t, items) for t in SIMILARITY_TABLES}

    catalogue = "catalogue share new: " + _of(
        share["share_catalogue_new"], share["catalogue_new_items"], share["catalogue_items"]
    )
    over = _ratio(share["share_slots_new"], share["share_catalogue_new"])
    new, old = ctr["new"], ctr["old"]
    rows = [
        {
            "figure": f"lists of {day} with a new item",
            "value": _of(share["share_lists_with_new_item"], share["lists_with_new_item"], share["lists"]),
            "peer": catalogue,
            "ratio": "-",
        },
        {
            "figure": "list slots that are new items",
            "value": _of(share["share_slots_new"], share["new_item_slots"], share["slots"]),
            "peer": catalogue,
            "ratio": _num(over, ".2f", "x"),
        },
        {
            "figure": f"CTR on {held_out} of items new as of {day}",
            "value": _of(new["ctr"], new["clicks"], new["impressions"], "clicks of", " impressions"),
            "peer": "old items: " + _of(old["ctr"], old["clicks"], old["impressions"], "clicks of", " impr."),
            "ratio": _num(ctr["ctr_ratio_new_vs_old"], ".3f", "x"),
        },
    ]
    for table, s in similarity.items():
        if s is None:
            rows.append({"figure": f"days to {table}", "value": "no table", "peer": "-", "ratio": "-"})
            continue
        rows.append(
            {
                "figure": f"days to {table} ({s['versions']} versions, {s['first_date']}..{s['last_date']})",
                "value": f"{s['reached']:,} items: median {_num(s['median_days'], '.1f')}, "
                f"p90 {_num(s['p90_days'], '.1f')}",
                "peer": "never reached: " + _of(s["share_never_reached"], s["never_reached"], s["items"]),
                "ratio": "-",
            }
        )
    print_table(
        f"Item cold start on {args.lake}, lists of {day} (new: created in the {n} days to {day})",
        rows,
        ["figure", "value", "peer", "ratio"],
    )
    later = ctr["created_after"]
    if later["impressions"]:
        print(
            f"\n(items created on {held_out} or later, in neither group: CTR "
            + _of(later["ctr"], later["clicks"], later["impressions"], "clicks of", " impressions")
            + ")"
        )
    seconds = time.time() - started
    print(f"measured in {seconds:.0f}s")
    save(
        "cold_start",
        {
            "lake": str(args.lake),
            "date": str(day),
            "new_item_days": n,
            "new_item_share": share,
            "new_vs_old_ctr": ctr,
            "days_to_similarity": similarity,
            "slot_share_vs_catalogue_share": over,
            "seconds": seconds,
        },
    )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
