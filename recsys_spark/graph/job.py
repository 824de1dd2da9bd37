"""`recsys-spark graph` and `recsys-spark walks`: the item graph and random walks over it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from recsys_spark.config import GatedConfig, option, params_of
from recsys_spark.graph.item_graph import item_graph
from recsys_spark.graph.walks import WalkParams, random_walks
from recsys_spark.lake.commit import remove_dir

log = logging.getLogger(__name__)


@dataclass
class GraphConfig(GatedConfig):
    """Builds item_graph from the behaviour sequences of the window ending at --date."""

    window_days: int = option(0, "Days of history ending at --date (0 = all history up to --date).")
    session_gap_minutes: float = option(30.0, "Silence that ends a session when events carry no session_id.")
    max_user_events: int = option(
        1000,
        "Only each user's latest N positive events count, so one over-active user cannot dominate (0 = no cap).",
    )


@dataclass
class WalksConfig(WalkParams, GatedConfig):
    """Random walks over item_graph; replaces this method's walks in the walks table."""

    partitions: int = option(0, "Spark tasks for the walks (0 = sized to the cluster and the graph).")


def run_graph(cfg: GraphConfig, spark, lake) -> int:
    started = time.time()
    edges = item_graph(
        lake.read("events"), cfg.date, cfg.window_days, cfg.session_gap_minutes, cfg.max_user_events
    )
    version = lake.overwrite("item_graph", edges, metadata={"date": str(cfg.date), "job": "graph"})
    stats = lake.read("item_graph").selectExpr("count(*) AS edges", "sum(weight) AS transitions").first()
    print(
        f"item_graph {cfg.date}: {stats.edges:,} edges from {int(stats.transitions or 0):,} transitions "
        f"(version {version}, {time.time() - started:.1f}s)"
    )
    return 0


def run_walks(cfg: WalksConfig, spark, lake) -> int:
    started = time.time()
    params = params_of(cfg, WalkParams)
    scratch = lake.scratch_dir()
    try:
        walks = random_walks(lake.read("item_graph"), params, scratch, partitions=cfg.partitions or None)
        version = lake.overwrite_partitions(
            "walks",
            walks,
            "method",
            [cfg.method],
            metadata={"date": str(cfg.date), "job": "walks", "method": cfg.method, "seed": str(cfg.seed)},
        )
    finally:
        remove_dir(scratch)
    stats = (
        lake.read("walks")
        .filter(f"method = '{cfg.method}'")
        .selectExpr("count(*) AS n", "sum(size(items)) AS steps")
        .first()
    )
    seconds = time.time() - started
    print(
        f"walks {cfg.method}: {stats.n:,} walks, {int(stats.steps or 0):,} steps "
        f"({(stats.steps or 0) / max(seconds, 1e-9):,.0f} steps/s, version {version}, {seconds:.1f}s)"
    )
    return 0
