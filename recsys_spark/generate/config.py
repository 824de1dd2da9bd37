"""Options of `recsys-spark generate`, and the expected size of what they produce."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from recsys_spark.config import CommonConfig, option

# Conditional action rates are scaled by taste: a clicked item from a preferred cluster is liked,
# shared... 1.5x as often as the base rate, any other clicked item 0.5x as often.
ACTION_BOOST_PREFERRED = 1.5
ACTION_BOOST_OTHER = 0.5
ACTIONS = ("like", "share", "comment", "follow", "purchase")


@dataclass
class GenerateConfig(CommonConfig):
    """Synthetic events, items and users with planted structure (clusters, power-law popularity,
    tastes, sessions, daily cycles, new items), plus the truth tables `truth_items` and `truth_users`.
    The same options and seed give identical tables on any machine, core count or date.
    Expected events ~ users * days * sessions_per_day * session_length * (1 + CTR * (1 + action rates)).
    """

    users: int = option(10_000, "Number of users (ids u0 .. u<N-1>).")
    items: int = option(5_000, "Number of items (ids i0 .. i<M-1>, a permutation that hides the cluster).")
    days: int = option(7, "Number of days of events, starting at --start-date.")
    seed: int = option(42, "Random seed: every random number is a hash of (seed, purpose, keys).")
    start_date: dt.date = option(
        dt.date(2026, 11, 1),
        "First day of events (UTC); fixed so a seed gives the same data whatever today is.",
    )
    clusters: int = option(20, "Number of latent item clusters (capped at --items).")
    cluster_exponent: float = option(
        0.8, "Skew of cluster popularity: users prefer cluster c with probability ~ (c+1)^-x."
    )
    popularity_exponent: float = option(
        1.2, "Power-law exponent a of item popularity inside a cluster: P(rank k) ~ (k+1)^-a."
    )
    tastes: int = option(3, "Each user prefers 1 .. this many clusters (drawn by cluster popularity).")
    explore: float = option(
        0.1, "Probability that a session segment comes from a uniformly random cluster instead of the tastes."
    )
    sessions_per_day: float = option(2.0, "Mean sessions per user per day (over all users).")
    activity_sigma: float = option(
        1.0, "Log-normal sigma of per-user activity (heavy tail of sessions per day); 0 = equal activity."
    )
    session_length: float = option(12.0, "Mean impressions per session (geometric, at least 1).")
    segment_length: float = option(
        4.0, "Mean impressions per same-cluster segment of a session (a cut after each impression w.p. 1/x)."
    )
    gap_seconds: float = option(20.0, "Mean time between consecutive impressions of a session, in seconds.")
    base_ctr: float = option(0.02, "Click probability of an average-quality item outside the user's tastes.")
    taste_boost: float = option(8.0, "Click probability multiplier for items in one of the user's clusters.")
    quality_sigma: float = option(0.4, "Log-normal sigma of item quality, a multiplier (mean 1) on the CTR.")
    dwell_seconds: float = option(
        20.0, "Median dwell of a click in seconds (log-normal; 1.5x on preferred items)."
    )
    like_rate: float = option(
        0.15, "Probability of a like given a click (x1.5 on preferred clusters, x0.5 else)."
    )
    share_rate: float = option(0.03, "Probability of a share given a click (scaled like --like-rate).")
    comment_rate: float = option(0.05, "Probability of a comment given a click (scaled like --like-rate).")
    follow_rate: float = option(0.02, "Probability of following the author given a click (scaled likewise).")
    purchase_rate: float = option(0.03, "Probability of a purchase given a click (scaled likewise).")
    new_item_fraction: float = option(
        0.1, "Fraction of items created during the generated days (never shown before their created_ts)."
    )
    new_user_fraction: float = option(
        0.05, "Fraction of users signing up during the generated days (active only after signup_ts)."
    )
    categories: int = option(12, "Number of item categories; each cluster has a main category.")
    category_purity: float = option(
        0.85, "Probability that an item's category is its cluster's main category."
    )
    items_per_author: int = option(25, "Mean items per author; authors publish inside one cluster.")
    partitions: int = option(
        0, "Spark tasks generating events (0 = auto, about 1M events each); does not change the data."
    )
    land_days: int = option(
        0,
        "Hold back the last N days of events from the events table and land them instead as JSON-lines "
        "files (one per day and hour) in <lake>/_landing/events/, for `recsys-spark stream` to pick up.",
    )

    def action_rates(self) -> dict[str, float]:
        return {name: float(getattr(self, f"{name}_rate")) for name in ACTIONS}

    def validate(self) -> None:
        """Raise ValueError naming the first option out of range."""
        positive = ("users", "items", "days", "clusters", "tastes", "categories", "items_per_author")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        probabilities = ("explore", "base_ctr", "new_item_fraction", "new_user_fraction", "category_purity")
        for name in probabilities + tuple(f"{a}_rate" for a in ACTIONS):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.land_days < self.days:
            raise ValueError(f"--land-days must be in [0, --days), got {self.land_days}")
        for name in ("session_length", "segment_length"):
            if getattr(self, name) < 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("sessions_per_day", "gap_seconds", "dwell_seconds", "taste_boost"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in (
            "activity_sigma",
            "quality_sigma",
            "popularity_exponent",
            "cluster_exponent",
            "partitions",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.users * self.days >= 2**31 or self.items >= 2**31:
            raise ValueError("--users * --days and --items must stay below 2^31")


def preferred_share(cfg: GenerateConfig) -> float:
    """Expected share of impressions from one of the user's preferred clusters."""
    clusters = min(cfg.clusters, cfg.items)
    mean_tastes = min((1 + cfg.tastes) / 2, clusters)
    return (1 - cfg.explore) + cfg.explore * mean_tastes / clusters


def expected_events(cfg: GenerateConfig) -> float:
    """Expected number of rows of `events` for `cfg` (the data land within a few % of it at scale).

    sessions    = users * days * sessions_per_day * (1 - new_user_fraction / 2)
    impressions = sessions * session_length
    clicks      = impressions * base_ctr * (p * taste_boost + 1 - p),  p = preferred_share(cfg)
    actions     = impressions * base_ctr * sum(rates) * (p * taste_boost * 1.5 + (1 - p) * 0.5)
    """
    p = preferred_share(cfg)
    sessions = cfg.users * cfg.days * cfg.sessions_per_day * (1 - cfg.new_user_fraction / 2)
    impressions = sessions * cfg.session_length
    clicks = cfg.base_ctr * (p * cfg.taste_boost + (1 - p))
    actions = cfg.base_ctr * sum(cfg.action_rates().values())
    actions *= p * cfg.taste_boost * ACTION_BOOST_PREFERRED + (1 - p) * ACTION_BOOST_OTHER
    return impressions * (1 + clicks + actions)


def config_for_events(target_events: int, seed: int = 42, days: int = 7, **overrides: Any) -> GenerateConfig:
    """A config expected to produce about `target_events` events (e.g. 1_000_000 or 10_000_000).

    Users scale with the target (other options as given or default); items are half the users, at
    least 100, so the catalogue grows with the traffic as in a real service.
    """
    items = overrides.pop("items", None)
    base = GenerateConfig(seed=seed, days=days, users=1, items=items or 1_000_000, **overrides)
    users = max(1, round(target_events / expected_events(base)))
    return dataclasses.replace(base, users=users, items=items or max(100, users // 2))


def auto_partitions(cfg: GenerateConfig, parallelism: int) -> int:
    """Tasks for the events: at least one per core, about a million events each, never more than rows."""
    wanted = max(parallelism, math.ceil(expected_events(cfg) / 1_000_000))
    return max(1, min(wanted, cfg.users * cfg.days))
