"""`recsys-spark rank --date D`: `recall_candidates` of D scored by the published ranker -> `ranked_candidates`.

The ranker is the newest full version trained on a day up to D (`Registry.full_before(D + 1)`): what
is published when the lists of D are computed at the end of D. Features are those of a ranking
sample of D + 1 (`recommend/rank.py`). The `dt = D` partition is replaced (idempotent), and with
`--gate` (default) the rows pass the `ranked_candidates` suite before the commit.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from dataclasses import dataclass

from pyspark.sql import functions as F

from recsys_spark.config import GatedConfig, option, same_as
from recsys_spark.errors import UsageError
from recsys_spark.recommend.rank import FUSION_METHODS, parse_fusion, ranked_candidates
from recsys_spark.recommend.recall import CHANNELS
from recsys_spark.samples.job import SamplesConfig

log = logging.getLogger(__name__)

CANDIDATES_TABLE = "recall_candidates"
RANKED_TABLE = "ranked_candidates"


@dataclass
class RankConfig(GatedConfig):
    """Scores day D's recall candidates with the ranker published by the end of D (features as a
    ranking sample of D+1 carries them) and writes ranked_candidates (dt = D)."""

    fusion: str = option("click:1,like:0.5", "Task weights of the fused score, task:weight,...")
    fusion_method: str = option(
        "rrf",
        "sum: Σ w_t p_t; product: Π p_t^w_t; rrf: Σ_c v_c/(rrf_k + rank_c) + Σ_t w_t/(rrf_k + rank_t), "
        "the channels' ranks fused with the tasks' ranks among the user's candidates.",
        choices=list(FUSION_METHODS),
    )
    channel_weights: str = option(
        "auto",
        "Voter weights of rrf and of the no-ranker score: channel:weight,... (unnamed: 1), or auto: "
        "each channel and task weighs by its NDCG@--auto-weight-k on the ranked_candidates of D-1 "
        "against D's engagements (plain RRF when D-1 has none).",
    )
    auto_weight_power: float = option(
        2.0, "auto: weight = (NDCG / best NDCG) ^ power (0 = plain RRF).", minimum=0
    )
    auto_weight_k: int = option(10, "auto: the cut-off K of that NDCG.", minimum=1)
    rrf_k: float = option(
        60.0,
        "The constant of reciprocal-rank fusion (rrf, and without a ranker: Σ_c v_c / (rrf_k + rank_c)).",
        exclusive_minimum=0,
    )
    history_days: int = same_as("samples", SamplesConfig, "history_days")
    batch_size: int = option(4096, "Rows per forward pass on an executor.", minimum=1)


def validate(cfg: RankConfig) -> tuple[dict[str, float], dict[str, float]]:
    """`(task weights, channel weights)` of a valid config; a UsageError names what is wrong."""
    if cfg.batch_size < 1 or cfg.history_days < 1 or cfg.rrf_k <= 0:
        raise UsageError("--batch-size and --history-days must be >= 1, --rrf-k > 0")
    if cfg.fusion_method not in FUSION_METHODS:
        raise UsageError(f"--fusion-method must be one of {FUSION_METHODS}")
    if cfg.auto_weight_power < 0 or cfg.auto_weight_k < 1:
        raise UsageError("--auto-weight-power must be >= 0 and --auto-weight-k >= 1")
    auto = cfg.channel_weights.strip() == "auto"
    channel_weights = {} if auto else parse_fusion(cfg.channel_weights, "--channel-weights", allow_empty=True)
    unknown = sorted(set(channel_weights) - set(CHANNELS))
    if unknown:
        raise UsageError(f"--channel-weights names unknown channels {unknown}; known {list(CHANNELS)}")
    return parse_fusion(cfg.fusion), channel_weights


def learned_weights(
    lake, day: dt.date, tasks: tuple[str, ...], cfg: RankConfig
) -> tuple[dict[str, float], dict[str, float]] | None:
    """`(channel weights, task quality weights)` fitted on the lists of D−1 and D's engagements.

    None when there are no `ranked_candidates` of D−1 or no events of D (then plain RRF).
    """
    from recsys_spark.recommend.fusion_weights import quality_weights, voter_ndcg
    from recsys_spark.samples.recall import positives

    before = day - dt.timedelta(days=1)
    if not lake.exists(RANKED_TABLE):
        return None
    yesterday = lake.read(RANKED_TABLE).filter(F.col("dt") == F.lit(before))
    if not yesterday.limit(1).count():
        return None
    engaged = positives(lake.read("events").filter(F.col("dt") == F.lit(day)))
    have = {
        r.t for r in yesterday.select(F.explode(F.map_keys("task_scores")).alias("t")).distinct().collect()
    }
    quality = voter_ndcg(yesterday, engaged, tuple(t for t in tasks if t in have), cfg.auto_weight_k)
    if not quality:
        return None
    log.info(
        "rank %s: NDCG@%d of each voter on the lists of %s against %s's engagements: %s",
        day,
        cfg.auto_weight_k,
        before,
        day,
        {v: round(q, 4) for v, q in quality.items()},
    )
    weights = quality_weights(quality, cfg.auto_weight_power)
    channels = {v: w for v, w in weights.items() if not v.startswith("task:")}
    task_weights = {v.removeprefix("task:"): w for v, w in weights.items() if v.startswith("task:")}
    return channels, task_weights


def ranker_scores(spark, lake, candidates, day: dt.date, cfg: RankConfig):
    """`(scores, tasks, version)` of the published ranker on `candidates`; `(None, (), None)` without one."""
    from recsys_spark.lake.commit import read_bytes, remove_dir
    from recsys_spark.samples.job import day_features, pair_features, with_features
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
    hist_len, tasks, pair_dim = model.sizes.hist_len, tuple(model.tasks), model.sizes.pair_dense_dim
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
    # Profile matches as a sample of D + 1 sees them (profiles of D); a ranker saved before they
    # existed (width 0) never reads them, so they are not computed for it.
    matches = pair_features(lake, serve_day, pairs) if pair_dim else None
    rows = with_features(pairs, users, items, hist, serve_day, matches)
    encoded = encode_for_scoring(rows, vocabs, hist_len)
    return score_rows(encoded, checkpoint, tasks, cfg.batch_size), tasks, version


def run(cfg: RankConfig, spark, lake) -> int:
    weights, channel_weights = validate(cfg)
    day, started = cfg.date, time.time()
    if not lake.exists(CANDIDATES_TABLE):
        raise UsageError(f"{CANDIDATES_TABLE} does not exist: run `recall --date {day}` first")
    candidates = lake.read(CANDIDATES_TABLE).filter(F.col("dt") == F.lit(day))
    if not candidates.limit(1).count():
        raise UsageError(f"{CANDIDATES_TABLE} has no rows for {day}: run `recall --date {day}` first")
    scores, tasks, version = ranker_scores(spark, lake, candidates, day, cfg)
    fitted = None
    if cfg.channel_weights.strip() == "auto" and (version is None or cfg.fusion_method == "rrf"):
        fitted = learned_weights(lake, day, tasks, cfg)
        if fitted is None:
            log.warning(
                "rank %s: --channel-weights auto: no ranked_candidates of %s to learn from; plain "
                "reciprocal-rank fusion (every voter weighs 1)",
                day,
                day - dt.timedelta(days=1),
            )
        else:
            channel_weights = dict(fitted[0])
            # A channel yesterday's lists did not have gets the lowest learned weight: it has to earn more.
            today = {
                r.c
                for r in candidates.select(F.explode(F.map_keys("channel_ranks")).alias("c"))
                .distinct()
                .collect()
            }
            floor = min(channel_weights.values(), default=1.0)
            for name in sorted(today - set(channel_weights)):
                channel_weights[name] = floor
            # A task's weight is its --fusion weight times its learned quality weight (unseen: 1).
            weights = {t: w * fitted[1].get(t, 1.0) for t, w in weights.items()}
    if version is None:
        log.warning(
            "rank %s: no ranker version trained on a day up to %s; score = merged recall score "
            "Σ v_c/(%g + channel rank), channel weights %s, model_version null",
            day,
            day,
            cfg.rrf_k,
            channel_weights or "all 1",
        )
    else:
        missing = sorted(set(weights) - set(tasks))
        if missing:
            raise UsageError(
                f"--fusion names {missing}, which ranker {version} has no head for (it has {list(tasks)})"
            )
        log.info(
            "rank %s: ranker %s, tasks %s, fusion %s %s%s",
            day,
            version,
            list(tasks),
            cfg.fusion_method,
            weights,
            f", channel weights {channel_weights or 'all 1'}" if cfg.fusion_method == "rrf" else "",
        )
    ranked = ranked_candidates(
        candidates, scores, tasks, weights, cfg.fusion_method, version, day, cfg.rrf_k, channel_weights
    )
    fusion = {
        "method": cfg.fusion_method if version else "rrf",
        "rrf_k": cfg.rrf_k,
        "task_weights": weights if version else {},
        "channel_weights": channel_weights,
        "learned_from": str(day - dt.timedelta(days=1)) if fitted else None,
    }
    meta = {
        "recsys.job": "rank",
        "recsys.date": str(day),
        "recsys.model_version": version or "",
        "recsys.fusion": json.dumps(fusion, sort_keys=True),
    }
    written = lake.overwrite_dates(RANKED_TABLE, ranked, [day], metadata=meta)
    now = lake.read(RANKED_TABLE).filter(F.col("dt") == F.lit(day))
    stats = now.agg(F.count(F.lit(1)), F.countDistinct("user_id")).first()
    learned = f" (learned from {fusion['learned_from']})" if fitted else ""
    shown = {k: round(v, 3) for k, v in channel_weights.items()} or "all 1"
    print(
        f"rank {day}: {stats[0]:,} candidates of {stats[1]:,} users scored by "
        f"{version or 'the merged recall score (no ranker)'}; fusion {fusion['method']}, channel "
        f"weights {shown}{learned}; {RANKED_TABLE} version {written}; {time.time() - started:.1f}s"
    )
    return 0
