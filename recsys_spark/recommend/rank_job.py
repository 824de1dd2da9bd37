"""`recsys-spark rank --date D`: `recall_candidates` of D scored by the published ranker -> `ranked_candidates`.

The ranker is the newest full version trained on a day up to D (`Registry.full_before(D + 1)`): what
is published when the lists of D are computed at the end of D. Features are those of a ranking
sample of D + 1 (`recommend/rank.py`). The `dt = D` partition is replaced (idempotent), and with
`--gate` (default) the rows pass the `ranked_candidates` suite before the commit.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from dataclasses import dataclass

from pyspark.sql import functions as F

from recsys_spark.config import GatedConfig, option, same_as
from recsys_spark.errors import UsageError
from recsys_spark.recommend.rank import FUSION_METHODS, parse_fusion, ranked_candidates
from recsys_spark.samples.job import SamplesConfig

log = logging.getLogger(__name__)

CANDIDATES_TABLE = "recall_candidates"
RANKED_TABLE = "ranked_candidates"


@dataclass
class RankConfig(GatedConfig):
    """Scores day D's recall candidates with the ranker published by the end of D (features as a
    ranking sample of D+1 carries them) and writes ranked_candidates (dt = D)."""

    fusion: str = option("click:1,like:0.5", "Task weights of the fused score, task:weight,...")
    fusion_method: str = option("sum", "sum: Σ w_t p_t; product: Π p_t^w_t.", choices=list(FUSION_METHODS))
    rrf_k: float = option(
        60.0,
        "Without a ranker: score = Σ over channels of 1 / (rrf_k + channel rank).",
        exclusive_minimum=0,
    )
    history_days: int = same_as("samples", SamplesConfig, "history_days")
    batch_size: int = option(4096, "Rows per forward pass on an executor.", minimum=1)


def validate(cfg: RankConfig) -> dict[str, float]:
    if cfg.batch_size < 1 or cfg.history_days < 1 or cfg.rrf_k <= 0:
        raise UsageError("--batch-size and --history-days must be >= 1, --rrf-k > 0")
    if cfg.fusion_method not in FUSION_METHODS:
        raise UsageError(f"--fusion-method must be one of {FUSION_METHODS}")
    return parse_fusion(cfg.fusion)


def ranker_scores(spark, lake, candidates, day: dt.date, cfg: RankConfig):
    """`(scores, tasks, version)` of the published ranker on `candidates`; `(None, (), None)` without one."""
    from recsys_spark.lake.commit import read_bytes, remove_dir
    from recsys_spark.samples.job import day_features, with_features
    from recsys_spark.train.checkpoint import load_checkpoint
    from recsys_spark.train.data import item_table
    from recsys_spark.train.registry import FULL, Registry
    from recsys_spark.train.scoring import encode_for_scoring, score_rows, with_item_features
    from recsys_spark.train.vocab import read_vocabs

    registry = Registry.for_model(lake, "ranker")
    version = registry.full_before(day + dt.timedelta(days=1))
    if version is None:
        return None, (), None
    url = registry.version_url(FULL, version)
    checkpoint = read_bytes(f"{url}/checkpoint.pt").getvalue()
    model = load_checkpoint(io.BytesIO(checkpoint))
    hist_len, tasks = model.sizes.hist_len, tuple(model.tasks)
    del model  # the executors rebuild it from the broadcast bytes
    vocabs = read_vocabs(spark, f"{url}/vocab")
    serve_day = day + dt.timedelta(days=1)  # features of a ranking sample of D + 1
    users, items, hist, _ = day_features(lake, serve_day, hist_len, cfg.history_days)
    # Item buffers as of the same day: a catalogue-sized table, read once on the driver like training does.
    scratch = lake.scratch_dir("rank")
    try:
        item_table(items, vocabs).coalesce(1).write.parquet(f"{scratch}/items")
        checkpoint = with_item_features(checkpoint, f"{scratch}/items")
    finally:
        remove_dir(scratch)
    pairs = candidates.select("user_id", "item_id")
    rows = with_features(pairs, users, items, hist, serve_day)
    encoded = encode_for_scoring(rows, vocabs, hist_len)
    return score_rows(encoded, checkpoint, tasks, cfg.batch_size), tasks, version


def run(cfg: RankConfig, spark, lake) -> int:
    weights = validate(cfg)
    day, started = cfg.date, time.time()
    if not lake.exists(CANDIDATES_TABLE):
        raise UsageError(f"{CANDIDATES_TABLE} does not exist: run `recall --date {day}` first")
    candidates = lake.read(CANDIDATES_TABLE).filter(F.col("dt") == F.lit(day))
    if not candidates.limit(1).count():
        raise UsageError(f"{CANDIDATES_TABLE} has no rows for {day}: run `recall --date {day}` first")
    scores, tasks, version = ranker_scores(spark, lake, candidates, day, cfg)
    if version is None:
        log.warning(
            "rank %s: no ranker version trained on a day up to %s; score = merged recall score "
            "Σ 1/(%g + channel rank), model_version null",
            day,
            day,
            cfg.rrf_k,
        )
    else:
        missing = sorted(set(weights) - set(tasks))
        if missing:
            raise UsageError(
                f"--fusion names {missing}, which ranker {version} has no head for (it has {list(tasks)})"
            )
        log.info(
            "rank %s: ranker %s, tasks %s, fusion %s %s",
            day,
            version,
            list(tasks),
            cfg.fusion_method,
            weights,
        )
    ranked = ranked_candidates(candidates, scores, tasks, weights, cfg.fusion_method, version, day, cfg.rrf_k)
    meta = {
        "recsys.job": "rank",
        "recsys.date": str(day),
        "recsys.model_version": version or "",
        "recsys.fusion": f"{cfg.fusion_method}:{cfg.fusion}" if version else f"rrf:{cfg.rrf_k}",
    }
    written = lake.overwrite_dates(RANKED_TABLE, ranked, [day], metadata=meta)
    now = lake.read(RANKED_TABLE).filter(F.col("dt") == F.lit(day))
    stats = now.agg(F.count(F.lit(1)), F.countDistinct("user_id")).first()
    print(
        f"rank {day}: {stats[0]:,} candidates of {stats[1]:,} users scored by "
        f"{version or 'the merged recall score (no ranker)'}; {RANKED_TABLE} version {written}; "
        f"{time.time() - started:.1f}s"
    )
    return 0
