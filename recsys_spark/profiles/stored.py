"""The interest profiles of a day as a reader may see them: stored if written, else computed.

The `profiles` stage writes `user_profiles` of D; a reader (the profile recall channel of D, the ranker
features of samples of D + 1, evaluation of D + 1) may run on a lake where it never ran. All of them
then compute the same rows the job would have written with the defaults, from events up to D only.
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.catalog import USER_PROFILES
from recsys_spark.profiles.interests import ProfileParams, user_profiles

log = logging.getLogger(__name__)


def profiles_as_of(
    lake, day: dt.date, events: DataFrame | None = None, items: DataFrame | None = None
) -> tuple[DataFrame, str]:
    """`user_profiles` rows of `day`: the stored `dt = day` partition if it has rows, else computed.

    Parameters
    ----------
    lake : Lake
        The lake.
    day : datetime.date
        The profiles' day D (their events end with D).
    events : DataFrame, optional
        The `events` to compute from when nothing is stored (rows after D are ignored by the
        formula's window); default the lake's events up to D.
    items : DataFrame, optional
        The `items` table; default the lake's.

    Returns
    -------
    (DataFrame, str)
        The rows `(user_id, kind, key, score, weight, rank, dt)` and where they came from
        ("user_profiles dt=D" or "profiles computed as of D").
    """
    stored = lake.read_as_of(USER_PROFILES, day + dt.timedelta(days=1))
    if stored is not None:
        rows = stored.filter(F.col("dt") == F.lit(day))
        if rows.limit(1).count():
            return rows, f"{USER_PROFILES} dt={day}"
    log.info("no %s of %s: computed with the profile defaults", USER_PROFILES, day)
    if events is None:
        events = lake.read("events").filter(F.col("dt") <= F.lit(day))
    if items is None:
        items = lake.read("items")
    return user_profiles(events, items, day, ProfileParams()), f"profiles computed as of {day}"
