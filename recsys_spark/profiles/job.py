"""`recsys-spark profiles --date D`: the `user_profiles` partition `dt = D`, replaced on every run.

Reads the window's partitions of `events` (pruned by `dt`) and the current `items`; writes one Delta
version replacing exactly `dt = D` (`Lake.overwrite_dates`), so re-running a day replaces it.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from recsys_spark.catalog import USER_PROFILES
from recsys_spark.config import GatedConfig, params_of
from recsys_spark.errors import UsageError
from recsys_spark.profiles.interests import ProfileParams, user_profiles, validate_params


@dataclass
class ProfilesConfig(ProfileParams, GatedConfig):
    """Per user: category, author and tag interest weights from the events of the --window-days ending at
    --date, each event decayed by 0.5^(age / --half-life-days), tags weighted by their idf over the
    catalogue; weights sum to 1 per user and kind. Formulas in docs/profiles.md."""


def run(cfg: ProfilesConfig, spark, lake) -> int:
    """Write `user_profiles` for `cfg.date` (job entry; see the config's docstring)."""
    from pyspark.sql import functions as F

    params = params_of(cfg, ProfileParams)
    validate_params(params)
    if cfg.date is None:
        raise ValueError("profiles needs a date (the CLI fills in the latest day of events)")
    if not lake.exists("items"):
        raise UsageError(f"profiles needs the items table (categories, authors, tags) in lake {lake.root}")
    day = cfg.date
    started = time.time()
    window = [day - dt.timedelta(days=k) for k in range(params.window_days)]
    events = lake.read("events", dates=window)
    profiles = user_profiles(events, lake.read("items"), day, params)
    meta = {
        "recsys.job": "profiles",
        "recsys.date": str(day),
        "half_life_days": str(params.half_life_days),
        "window_days": str(params.window_days),
        "max_keys": str(params.max_keys),
    }
    version = lake.overwrite_dates(USER_PROFILES, profiles, [day], metadata=meta)
    counts = {
        r["kind"]: (r["rows"], r["users"])
        for r in lake.read(USER_PROFILES, dates=[day])
        .groupBy("kind")
        .agg(F.count("*").alias("rows"), F.countDistinct("user_id").alias("users"))
        .collect()  # at most three rows: one per kind
    }
    took = time.time() - started
    summary = ", ".join(f"{k} {rows} rows / {users} users" for k, (rows, users) in sorted(counts.items()))
    print(f"profiles {day}: {USER_PROFILES} version {version}: {summary or 'no rows'} in {took:.1f}s")
    return 0
