"""`run`: generate the tables and publish each as one new version of its lake table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time

from pyspark.sql import functions as F

from recsys_spark.errors import UsageError
from recsys_spark.generate.config import GenerateConfig, expected_events
from recsys_spark.generate.landing import land_events
from recsys_spark.generate.tables import TABLES, generate_tables

log = logging.getLogger(__name__)


def run(cfg: GenerateConfig, spark, lake) -> int:
    """Write items, users, truth_items, truth_users and events (overwriting them); returns 0."""
    try:
        tables = generate_tables(spark, cfg)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    settings = {
        k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("lake", "master", "engine", "log_level")
    }
    metadata = {"recsys.generate.config": json.dumps(settings, default=str, sort_keys=True)}
    log.info("generate: about %.0f events expected for %s", expected_events(cfg), settings)
    counts: dict[str, int] = {}
    started = time.time()
    if cfg.land_days:
        first_landed = cfg.start_date + dt.timedelta(days=cfg.days - cfg.land_days)
        events = tables["events"]
        landed = land_events(events.filter(F.col("dt") >= F.lit(first_landed)), lake)
        print(
            f"generate: landed {len(landed)} event files from {first_landed} on in {lake.path('_landing', 'events')}"
        )
        tables = {**tables, "events": events.filter(F.col("dt") < F.lit(first_landed))}
    for name in TABLES:
        t0 = time.time()
        version = lake.overwrite(name, tables[name], metadata=metadata)
        elapsed = time.time() - t0
        # Counting the written table reads Parquet footers only; counting the DataFrame would regenerate it.
        counts[name] = lake.read(name).count()
        log.info("generate: %s version %s: %d rows in %.1fs", name, version, counts[name], elapsed)
        if name == "events":
            rate = counts[name] / max(elapsed, 1e-9)
            print(f"generate: events {counts[name]:,} rows in {elapsed:.1f}s ({rate:,.0f} events/s)")
        else:
            print(f"generate: {name} {counts[name]:,} rows in {elapsed:.1f}s")
    print(f"generate: done in {time.time() - started:.1f}s, lake {lake.root}")
    return 0
