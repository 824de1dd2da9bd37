"""`recsys-spark recommend --date D`: recall -> rank -> rerank in one go; `--user U` prints one list.

The three stages are the ordinary `recall`, `rank` and `rerank` jobs, run in one Spark session with
the options of all three (one config: `RecommendConfig` holds every option of each, same names and
defaults), each gating its table before its commit. A stage that fails stops the run and leaves the
tables after it as they were: `recommendations` of D is only replaced once its inputs of D are.

`recommend --user U [--date D]` runs nothing: it prints U's list from the `recommendations` table
(the partition of D, or the newest one up to D), with each item's rank, score, channels and reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from pyspark.sql import functions as F

from recsys_spark.config import option, params_of
from recsys_spark.errors import UsageError
from recsys_spark.recommend import rank_job, recall_job, rerank_job
from recsys_spark.recommend.rank_job import RankConfig
from recsys_spark.recommend.recall_job import RecallConfig
from recsys_spark.recommend.rerank_job import RerankConfig

log = logging.getLogger(__name__)

STAGES = (
    ("recall", RecallConfig, recall_job.run),
    ("rank", RankConfig, rank_job.run),
    ("rerank", RerankConfig, rerank_job.run),
)


@dataclass
class RecommendConfig(RerankConfig, RankConfig, RecallConfig):
    """Runs recall (every channel in the lake, seen and exposure filters) -> rank (the published
    ranker, fused task scores) -> rerank (diversity and business rules) for --date, writing
    recall_candidates, ranked_candidates and recommendations (dt = D, served on D+1)."""

    user: str | None = option(
        None, "Print this user's published list (of --date or the newest before) and exit."
    )


def print_user_list(lake, user: str, day) -> int:
    """Print `user`'s list from `recommendations` (the newest dt <= day); 1 when there is none."""
    if not lake.exists("recommendations"):
        raise UsageError(f"lake {lake.root} has no recommendations table: run `recsys-spark recommend` first")
    table = lake.read("recommendations")
    dates = table.filter(F.col("dt") <= F.lit(day)).agg(F.max("dt")).first()[0]
    if dates is None:
        raise UsageError(f"no recommendations up to {day}")
    rows = (
        table.filter((F.col("dt") == F.lit(dates)) & (F.col("user_id") == user)).orderBy("rank").collect()
    )  # one user's list: at most --k rows
    if not rows:
        print(f"recommend: user {user} has no list on {dates} (not active in the window, or unknown)")
        return 1
    version = rows[0]["model_version"] or "no ranker (merged recall score)"
    served = dates + dt.timedelta(days=1)
    print(f"recommendations for {user}, computed on {dates} and served on {served} (ranker {version}):")
    print(f"  {'rank':>4}  {'item':<14} {'score':>9}  {'channels':<34} reason")
    for row in rows:
        channels = ",".join(row["channels"] or [])
        print(
            f"  {row['rank']:>4}  {row['item_id']:<14} {row['score']:>9.4f}  {channels:<34} {row['reason']}"
        )
    return 0


def run(cfg: RecommendConfig, spark, lake) -> int:
    if cfg.user is not None:
        return print_user_list(lake, cfg.user, cfg.date)
    started = time.time()
    for number, (name, config_cls, stage_run) in enumerate(STAGES, 1):
        log.info("recommend %s: stage %d/%d %s", cfg.date, number, len(STAGES), name)
        stage_started = time.time()
        code = stage_run(params_of(cfg, config_cls), spark, lake)
        log.info(
            "recommend %s: %s done in %.1fs (exit %s)", cfg.date, name, time.time() - stage_started, code
        )
        if code:
            log.error("recommend %s: %s failed (exit %s); later stages not run", cfg.date, name, code)
            return code
    print(f"recommend {cfg.date}: recall -> rank -> rerank in {time.time() - started:.1f}s")
    return 0
