"""`recsys-spark rerank --date D`: `ranked_candidates` of D -> each user's top K in `recommendations`.

Item vectors for the diversity similarity, as they stood at the end of D: the graph embeddings of
`--item-vectors` (item_embeddings at its newest commit dated up to D, that method's rows); when there
are none, the two-tower's item vectors of its newest full version up to D; when neither exists, no
vectors (identity similarity: diversity reduces to the score order, the rules still apply). The
source used is logged. The `dt = D` partition is replaced (idempotent); with `--gate` (default) the
rows pass the `recommendations` suite before the commit.

`--variant-by LAYER` serves an A/B experiment: each user gets the variant of their bucket in that
layer (`experiments.buckets.variant_of`, the same pure function the `buckets` job writes
`ab_buckets` with, under the spec recorded in `ab_buckets`' newest commit, else `--experiments`),
and the lists of a variant named like a diversity method (`none`, `mmr`, `dpp`) use that method;
every other variant (`control`, `holdout`, ...) runs the options as given. Each row's `reason` ends
with `A/B LAYER=VARIANT`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, replace

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.catalog import WALK_METHODS
from recsys_spark.config import GatedConfig, option, params_of
from recsys_spark.errors import UsageError
from recsys_spark.recommend.diversity import METHODS
from recsys_spark.recommend.rank_job import RANKED_TABLE
from recsys_spark.recommend.rerank import RerankParams, recommendations, short_lists

log = logging.getLogger(__name__)

RECOMMENDATIONS_TABLE = "recommendations"
VECTOR_SOURCES = (*WALK_METHODS, "two_tower", "none")


@dataclass
class RerankConfig(RerankParams, GatedConfig):
    """Picks each user's top K of ranked_candidates (dt = D) with MMR or DPP diversity under the list
    rules and writes recommendations (dt = D)."""

    item_vectors: str = option(
        WALK_METHODS[0],
        "Item vectors of the similarity: a graph embedding method, two_tower, or none "
        "(missing ones fall back: embedding -> two_tower -> none).",
        choices=list(VECTOR_SOURCES),
    )
    variant_by: str | None = option(
        None, "A/B: serve each user the variant of their bucket in this experiment layer (e.g. rerank)."
    )
    experiments: str | None = option(
        None, "With --variant-by and no ab_buckets table: the JSON spec (default: that of `buckets`)."
    )
    buckets: int = option(100, "With --variant-by and no ab_buckets table: buckets per layer.", minimum=1)


def validate(cfg: RerankConfig) -> None:
    if cfg.k < 1 or cfg.pool < 1 or cfg.rule_window < 1:
        raise UsageError("--k, --pool and --rule-window must be >= 1")
    if not 0 <= cfg.mmr_lambda <= 1:
        raise UsageError(f"--mmr-lambda must be in [0, 1], got {cfg.mmr_lambda}")
    if not 0 <= cfg.dpp_theta < 1:
        raise UsageError(f"--dpp-theta must be in [0, 1), got {cfg.dpp_theta}")
    if cfg.max_same_category < 0 or cfg.mmr_window < 0:
        raise UsageError("--max-same-category and --mmr-window must be >= 0")


def item_vectors(lake, day: dt.date, source: str) -> tuple[DataFrame | None, str]:
    """`(item_id, vector)` as of the end of `day` from `source` (with the fallbacks), and what was used.

    Parameters
    ----------
    lake : Lake
        The lake.
    day : datetime.date
        The lists' day; nothing built after it is read.
    source : str
        One of `VECTOR_SOURCES`.

    Returns
    -------
    tuple of (DataFrame or None, str)
        The vectors (None: identity similarity) and a description of the source.
    """
    from recsys_spark.train.registry import Registry

    after = day + dt.timedelta(days=1)
    if source in WALK_METHODS:
        embeddings = lake.read_as_of("item_embeddings", after)
        if embeddings is not None:
            rows = embeddings.filter(F.col("method") == source).select("item_id", "vector")
            if rows.limit(1).count():
                return rows, f"item_embeddings[{source}]"
        log.info(
            "rerank %s: no %s item_embeddings up to %s; trying the two-tower's vectors", day, source, day
        )
    if source != "none":
        version = Registry.for_model(lake, "two_tower").full_before(after)
        if version is not None and lake.exists("item_vectors"):
            rows = (
                lake.read("item_vectors")
                .filter(F.col("model_version") == version)
                .select("item_id", "vector")
            )
            if rows.limit(1).count():
                return rows, f"item_vectors[{version}]"
    return None, "none (identity similarity)"


def variant_lists(ranked: DataFrame, items: DataFrame, vectors, params: RerankParams, day, lake, cfg):
    """`recommendations` with each user's lists built by the variant of their bucket (`--variant-by`)."""
    from recsys_spark.experiments.buckets import HOLDOUT, recorded_spec, variant_of

    spec, source = recorded_spec(lake, cfg.experiments, cfg.buckets)
    layer = spec.layer(cfg.variant_by)
    names = [HOLDOUT, *(name for name, _ in layer.variants), layer.default]
    assigned = variant_of(ranked.select("user_id"), spec).filter(F.col("layer") == layer.name)
    log.info("rerank %s: A/B layer %s (spec from %s), variants %s", day, layer.name, source, names)
    parts = []
    for name in dict.fromkeys(names):  # the spec's variants: a handful, never data-sized
        mine = ranked.join(assigned.filter(F.col("variant") == name), "user_id", "left_semi")
        chosen = replace(params, diversity=name) if name in METHODS else params
        tag = F.lit(f"; A/B {layer.name}={name}")
        parts.append(
            recommendations(mine, items, vectors, chosen, day).withColumn("reason", F.concat("reason", tag))
        )
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def run(cfg: RerankConfig, spark, lake) -> int:
    validate(cfg)
    day, started = cfg.date, time.time()
    if not lake.exists(RANKED_TABLE):
        raise UsageError(f"{RANKED_TABLE} does not exist: run `rank --date {day}` first")
    ranked = lake.read(RANKED_TABLE).filter(F.col("dt") == F.lit(day))
    if not ranked.limit(1).count():
        raise UsageError(f"{RANKED_TABLE} has no rows for {day}: run `rank --date {day}` first")
    vectors, source = item_vectors(lake, day, cfg.item_vectors)
    if vectors is None and cfg.diversity != "none":
        log.warning(
            "rerank %s: no item vectors; %s diversity falls back to the score order", day, cfg.diversity
        )
    log.info("rerank %s: diversity %s, item vectors %s", day, cfg.diversity, source)
    params = params_of(cfg, RerankParams)
    items = lake.read("items")
    if cfg.variant_by:
        recs = variant_lists(ranked, items, vectors, params, day, lake, cfg)
    else:
        recs = recommendations(ranked, items, vectors, params, day)
    meta = {
        "recsys.job": "rerank",
        "recsys.date": str(day),
        "recsys.diversity": cfg.diversity,
        "recsys.item_vectors": source,
        "recsys.variant_by": cfg.variant_by or "",
    }
    written = lake.overwrite_dates(RECOMMENDATIONS_TABLE, recs, [day], metadata=meta)
    now = lake.read(RECOMMENDATIONS_TABLE).filter(F.col("dt") == F.lit(day))
    stats = now.agg(F.count(F.lit(1)), F.countDistinct("user_id")).first()
    short = short_lists(now, ranked, cfg.k, cfg.pool)
    if short:
        log.warning(
            "rerank %s: %d users got a list shorter than their candidates allow: no remaining candidate "
            "kept the list rules (--max-same-category %d per %d, adjacent authors)",
            day,
            short,
            cfg.max_same_category,
            cfg.rule_window,
        )
    print(
        f"rerank {day}: {stats[0]:,} recommendations for {stats[1]:,} users (K {cfg.k}, {cfg.diversity}, "
        f"vectors {source}); {RECOMMENDATIONS_TABLE} version {written}; {time.time() - started:.1f}s"
    )
    return 0
