"""`recsys-spark similarity --algo itemcf|swing|usercf`: one top-K similarity table per run.

The table (`itemcf_sim`, `swing_sim` or `usercf_sim`) is replaced as a whole, one Delta version per
run; the version's commit metadata records the date, the algorithm and every option used.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from recsys_spark.catalog import SIMILARITY_TABLES
from recsys_spark.config import GatedConfig, option, params_of
from recsys_spark.events import interest_weights
from recsys_spark.similarity.itemcf import itemcf_similarity
from recsys_spark.similarity.params import SimilarityParams
from recsys_spark.similarity.swing import swing_similarity
from recsys_spark.similarity.topk import both_directions, top_k
from recsys_spark.similarity.usercf import usercf_similarity

ALGOS = {
    "itemcf": (itemcf_similarity, SIMILARITY_TABLES["itemcf"], "item_id", "sim_item_id"),
    "swing": (swing_similarity, SIMILARITY_TABLES["swing"], "item_id", "sim_item_id"),
    "usercf": (usercf_similarity, SIMILARITY_TABLES["usercf"], "user_id", "sim_user_id"),
}


@dataclass
class SimilarityConfig(SimilarityParams, GatedConfig):
    """Interest weights r_ui come from events in the window ending at --date (click 1, like 2,
    comment 2, share 3, follow 3, purchase 4, impression 0). See docs/similarity.md for the formulas."""

    algo: str = option("swing", "Similarity to compute.", choices=list(ALGOS))
    window_days: int = option(0, "Days of events ending at --date to use; 0 = all history up to --date.")


def similarity_table(events, cfg: SimilarityConfig):
    """The top-K DataFrame of `cfg.algo` from raw events (what `run` writes)."""
    compute, _, id_col, other_col = ALGOS[cfg.algo]
    interactions = interest_weights(events, cfg.date, cfg.window_days)
    pairs = compute(interactions, params_of(cfg, SimilarityParams))
    return top_k(both_directions(pairs, id_col, other_col, id_col, other_col), id_col, other_col, cfg.top_k)


def run(cfg: SimilarityConfig, spark, lake) -> int:
    if cfg.date is None:
        raise ValueError("similarity needs a date (the CLI fills in the latest day of events)")
    table = ALGOS[cfg.algo][1]
    started = time.time()
    result = similarity_table(lake.read("events"), cfg)
    skipped = ("lake", "master", "engine", "log_level", "date", "gate")  # where and how, not what
    options = {k: v for k, v in asdict(cfg).items() if k not in skipped}
    version = lake.overwrite(
        table, result, metadata={"date": str(cfg.date), "algo": cfg.algo, "options": json.dumps(options)}
    )
    computed = time.time() - started
    rows = lake.read(table).count()
    print(
        f"similarity {cfg.algo} {cfg.date}: wrote {rows} rows to {table} version {version} in {computed:.1f}s"
    )
    return 0
