"""Recall: every channel's candidates for the active users, each cut at its quota, merged per (user, item).

Lists for `dt = D` use data up to and including D (served on D + 1). The per-channel builders are the
ones evaluation scores (`candidates.lists`); this module only prepares their inputs (who is active,
each user's recent items, user vectors of the embedding channels) and merges their outputs:

    recall_candidates(u, i) = { c : i ∈ top_{quota(c)}(c, u) }   for every channel c that ran,

one row per (u, i) with `channels` (sorted), `channel_scores[c]` and `channel_ranks[c]` of every
channel that recalled it. A channel's score and rank are its own (not comparable across channels);
the ranker downstream combines them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.catalog import WALK_METHODS
from recsys_spark.errors import UsageError
from recsys_spark.events import clicks_in_window
from recsys_spark.samples.features import last_n_clicks

# The recall channels, in the order they run (and are documented); names as in evaluation's report.
CHANNELS = (
    "itemcf",
    "swing",
    "usercf",
    *WALK_METHODS,
    "two_tower",
    "session",
    "profile",
    "cohort",
    "popularity",
)
ITEM_TO_ITEM = ("itemcf", "swing")
VECTOR_CHANNELS = (*WALK_METHODS, "two_tower")
MERGED_COLUMNS = ("user_id", "item_id", "channels", "channel_scores", "channel_ranks")


def parse_quotas(specs: Iterable[str], default: int, channels: Sequence[str] = CHANNELS) -> dict[str, int]:
    """`{channel: quota}` from `name=n` options; channels not named get `default`.

    Parameters
    ----------
    specs : iterable of str
        E.g. `["swing=200", "itemcf=150"]`.
    default : int
        Quota of the channels not named, >= 1.
    channels : sequence of str
        The known channel names.

    Returns
    -------
    dict of str to int
        One quota (>= 1) per channel.

    Raises
    ------
    UsageError
        On an unknown channel, a malformed spec or a quota < 1.
    """
    if default < 1:
        raise UsageError(f"--default-quota must be >= 1, got {default}")
    quotas = dict.fromkeys(channels, default)
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or name not in quotas or not value.strip().lstrip("-").isdigit():
            raise UsageError(f"bad --quota {spec!r}: want NAME=N with NAME one of {list(channels)}")
        if int(value) < 1:
            raise UsageError(f"bad --quota {spec!r}: a quota is >= 1")
        quotas[name] = int(value)
    return quotas


def active_users(events: DataFrame, day: dt.date, active_days: int) -> DataFrame:
    """`(user_id)`: users with any event (impressions included) in the `active_days` days ending at `day`.

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date
        Last day of the window (inclusive).
    active_days : int
        Window length, >= 1.

    Returns
    -------
    DataFrame
        Distinct `user_id`, shape (users, 1).
    """
    if active_days < 1:
        raise UsageError(f"--active-days must be >= 1, got {active_days}")
    first = day - dt.timedelta(days=active_days - 1)
    window = (F.col("dt") >= F.lit(first)) & (F.col("dt") <= F.lit(day))
    return events.filter(window).select("user_id").distinct()


def new_users(events: DataFrame, users: DataFrame | None, day: dt.date, new_user_days: int) -> DataFrame:
    """`(user_id)`: the users new in the `new_user_days` ending at `day` (user cold start).

    A user is new when their first event (any, impressions included) falls in the window, or, for a
    user of the `users` table with no event up to `day` at all, when their `signup_ts` does (signed up,
    never seen: recall lists them although they are not active).

    Parameters
    ----------
    events : DataFrame
        The `events` table (rows after `day` are ignored).
    users : DataFrame or None
        The `users` table (`user_id`, `signup_ts`), or None when the lake has none.
    day : datetime.date
        Last day of the window (inclusive).
    new_user_days : int
        Window length, >= 1.

    Returns
    -------
    DataFrame
        Distinct `user_id`, shape (users, 1).
    """
    if new_user_days < 1:
        raise UsageError(f"--new-user-days must be >= 1, got {new_user_days}")
    first = day - dt.timedelta(days=new_user_days - 1)
    known = events.filter(F.col("dt") <= F.lit(day)).groupBy("user_id").agg(F.min("dt").alias("_first"))
    fresh = known.filter(F.col("_first") >= F.lit(first)).select("user_id")
    if users is None:
        return fresh
    start = dt.datetime.combine(first, dt.time(), dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    signed_up = users.filter((F.col("signup_ts") >= F.lit(start)) & (F.col("signup_ts") < F.lit(end))).select(
        "user_id"
    )
    never_seen = signed_up.join(known, "user_id", "left_anti")
    return fresh.unionByName(never_seen).distinct()


def session_neighbours(cooccurrence: DataFrame) -> DataFrame:
    """`(item_id, sim_item_id, score)`: `stream_cooccurrence` rows summed over their days.

    The stream's co-occurrence counts (consecutive positive interactions in one session, both orders)
    as an item-to-item table, so a new user's first-session items recall their neighbours the same
    day, before the nightly ItemCF/Swing tables hold them.

    Parameters
    ----------
    cooccurrence : DataFrame
        `stream_cooccurrence` rows (`item_id`, `other_item_id`, `count`) of the days wanted.

    Returns
    -------
    DataFrame
        `(item_id, sim_item_id, score double)`, one row per ordered pair.
    """
    return cooccurrence.groupBy("item_id", F.col("other_item_id").alias("sim_item_id")).agg(
        F.sum("count").cast("double").alias("score")
    )


def recent_history(
    events: DataFrame, day: dt.date, n: int, lookback_days: int, users: DataFrame
) -> DataFrame:
    """`(user_id, item_id, weight)`: each user's last `n` distinct clicked items up to and including `day`.

    The seed of the item-to-item channels and of the embedding users (weight 1 each), the same
    history the two-tower's `hist` feature and evaluation use (`samples.features.last_n_clicks`).

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date
        Last day counted (inclusive).
    n : int
        History length.
    lookback_days : int
        Days ending at `day` scanned.
    users : DataFrame
        `(user_id)`: the users to keep.

    Returns
    -------
    DataFrame
        `(user_id, item_id, weight double)`, at most n rows per user, shape (≤ users · n, 3).
    """
    after = day + dt.timedelta(days=1)  # last_n_clicks counts clicks strictly before its day
    hist = last_n_clicks(events, after, n, lookback_days).join(users, "user_id", "left_semi")
    return hist.select("user_id", F.explode("hist").alias("item_id"), F.lit(1.0).alias("weight"))


def history_vectors(history: DataFrame, item_vectors: DataFrame) -> DataFrame:
    """`(user_id, vector)`: the mean of the L2-normalised vectors of the user's history items.

    Cosine, as word2vec similarity is read: raw skip-gram norms grow with frequency and would rank
    every list by popularity. Items without a vector are skipped; a user with none gets no row.
    Built-ins only: per (user, dimension) averages, reassembled in dimension order.

    Parameters
    ----------
    history : DataFrame
        `(user_id, item_id, ...)`, shape (rows, ≥ 2).
    item_vectors : DataFrame
        `(item_id, vector array<float>)` of one embedding version.

    Returns
    -------
    DataFrame
        `(user_id, vector array<double>)`, shape (users, 2), vectors of length d.
    """
    norm = F.sqrt(F.aggregate("vector", F.lit(0.0).cast("double"), lambda acc, x: acc + x * x))
    unit = item_vectors.select(
        "item_id",
        F.transform("vector", lambda x: x / F.greatest(norm, F.lit(1e-12))).alias("vector"),
    )
    per_dim = (
        history.select("user_id", "item_id")
        .join(unit, "item_id")
        .select("user_id", F.posexplode("vector").alias("d", "x"))
        .groupBy("user_id", "d")
        .agg(F.avg("x").alias("x"))
    )
    return per_dim.groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("d", "x"))), lambda s: s["x"]).alias("vector")
    )


def with_seen(user_vectors: DataFrame, seen: DataFrame | None) -> DataFrame:
    """`(user_id, vector, seen array<string>)`: each user's seen items beside the vector (null: none).

    Parameters
    ----------
    user_vectors : DataFrame
        `(user_id, vector)`.
    seen : DataFrame or None
        `(user_id, item_id)` pairs to exclude; None: nothing excluded.

    Returns
    -------
    DataFrame
        `(user_id, vector, seen)`, one row per user of `user_vectors`.
    """
    if seen is None:
        return user_vectors.select("user_id", "vector", F.lit(None).cast("array<string>").alias("seen"))
    lists = seen.groupBy("user_id").agg(F.collect_list("item_id").alias("seen"))
    return user_vectors.select("user_id", "vector").join(lists, "user_id", "left")


def click_counts(events: DataFrame, day: dt.date, days: int) -> DataFrame:
    """`(item_id, count)`: clicks in the `days` days ending at `day` (the popularity channel's score).

    Parameters
    ----------
    events : DataFrame
        The `events` table.
    day : datetime.date
        Last day counted (inclusive).
    days : int
        Window length, >= 1.

    Returns
    -------
    DataFrame
        `(item_id, count long)`, shape (items, 2).
    """
    return clicks_in_window(events, day, days).groupBy("item_id").agg(F.count(F.lit(1)).alias("count"))


def merge_channels(lists: Mapping[str, DataFrame]) -> DataFrame:
    """Merge per-channel candidates on (user, item), keeping every channel's score and rank.

    Parameters
    ----------
    lists : Mapping[str, DataFrame]
        Channel name -> `(user_id, item_id, score, rank)` (each already cut at its quota), at least
        one.

    Returns
    -------
    DataFrame
        `(user_id, item_id, channels array<string> (sorted), channel_scores map<string,double>,
        channel_ranks map<string,int>)`, one row per distinct (user, item), shape (pairs, 5).
    """
    if not lists:
        raise ValueError("merge_channels needs at least one channel")
    frames = [
        df.select(
            "user_id",
            "item_id",
            F.lit(name).alias("channel"),
            F.col("score").cast("double").alias("score"),
            F.col("rank").cast("int").alias("rank"),
        )
        for name, df in lists.items()
    ]
    rows = frames[0]
    for more in frames[1:]:
        rows = rows.unionByName(more)
    # A channel lists an item once per user; dedup anyway so a map never sees a duplicate key.
    rows = rows.dropDuplicates(["user_id", "item_id", "channel"])
    entries = F.array_sort(F.collect_list(F.struct("channel", "score", "rank")))  # by channel name
    merged = rows.groupBy("user_id", "item_id").agg(entries.alias("_e"))
    return merged.select(
        "user_id",
        "item_id",
        F.transform("_e", lambda e: e["channel"]).alias("channels"),
        F.map_from_entries(F.transform("_e", lambda e: F.struct(e["channel"], e["score"]))).alias(
            "channel_scores"
        ),
        F.map_from_entries(F.transform("_e", lambda e: F.struct(e["channel"], e["rank"]))).alias(
            "channel_ranks"
        ),
    )
