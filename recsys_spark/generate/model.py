"""The generative model as Spark column expressions: counter-based randomness, items and users.

Every random number is a pure function of (seed, purpose tag, keys), computed with `xxhash64`, so a
row's values never depend on which task computed it, in which order or on how many cores: the data
are identical for any partitioning. `rand()` would not be (its stream is per partition).
Nothing here touches the driver's memory beyond a handful of constants per config.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from recsys_spark.generate.config import GenerateConfig

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_TWO_53 = float(1 << 53)

# Session start hour (UTC) mixture: (weight, mean hour, sd hours); None = uniform over the day.
# An evening peak, a lunch bump and a morning commute over a flat background, as in app traffic.
SESSION_HOURS: tuple[tuple[float, float | None, float | None], ...] = (
    (0.10, None, None),
    (0.15, 8.0, 1.2),
    (0.20, 12.5, 0.8),
    (0.55, 20.5, 1.8),
)
AGE_BUCKETS = (
    ("<18", 0.08),
    ("18-24", 0.22),
    ("25-34", 0.30),
    ("35-44", 0.20),
    ("45-54", 0.12),
    ("55+", 0.08),
)
REGIONS = 12
SIGNUP_HISTORY_DAYS = 730
ITEM_HISTORY_DAYS = 365
TAGS_PER_CLUSTER = 8


Key = Column | str | int  # a column, a column name / SQL expression, or a constant


def col(key: Key) -> Column:
    """The Column of a key given as a Column, a column name / SQL expression, or a constant."""
    if isinstance(key, Column):
        return key
    return F.expr(key) if isinstance(key, str) else F.lit(key)


def uniform(seed: int, tag: str, *keys: Key) -> Column:
    """U[0, 1) with 53 random bits from a hash of (seed, tag, keys): same inputs, same number.

    Keys given by name build the expression as SQL text in one call to the JVM instead of ~20 (the
    expression trees here have hundreds of draws, and building them call by call took seconds).
    """
    if all(isinstance(k, (str, int)) for k in keys):
        args = ", ".join(f"CAST({k} AS BIGINT)" for k in keys)
        return F.expr(
            f"CAST(shiftrightunsigned(xxhash64({int(seed)}L, '{tag}', {args}), 11) AS DOUBLE) / {_TWO_53!r}D"
        )
    hashed = F.xxhash64(F.lit(seed).cast("long"), F.lit(tag), *[col(k).cast("long") for k in keys])
    return F.shiftrightunsigned(hashed, 11).cast("double") / F.lit(_TWO_53)


def normal(seed: int, tag: str, *keys: Key) -> Column:
    """N(0, 1) by Box-Muller from two independent uniforms."""
    u1 = uniform(seed, tag + ":bm1", *keys)
    u2 = uniform(seed, tag + ":bm2", *keys)
    return F.sqrt(F.lit(-2.0) * F.log(F.lit(1.0) - u1)) * F.cos(F.lit(2 * math.pi) * u2)


def lognormal_mean_one(sigma: float, z: Column) -> Column:
    """exp(sigma z - sigma^2 / 2): a heavy-tailed positive multiplier whose mean is exactly 1."""
    return F.exp(F.lit(sigma) * z - F.lit(sigma * sigma / 2))


def power_law_index(u: Column, n: Key, exponent: float) -> Column:
    """Index k in [0, n) with P(k) ~ (k+1)^-a, by the closed-form inverse CDF of a continuous power law.

    x on [1, n+1) has density ~ x^-a; k = floor(x) - 1. Closed form means one uniform per draw and no
    table of probabilities, whatever n is.
    """
    n_col = col(n).cast("double")
    if abs(exponent - 1.0) < 1e-9:
        x = F.exp(u * F.log(n_col + 1))
    else:
        e = 1.0 - exponent
        x = F.pow(F.lit(1.0) + u * (F.pow(n_col + 1, F.lit(e)) - 1), F.lit(1.0 / e))
    return F.least(F.greatest(F.floor(x) - 1, F.lit(0)), n_col - 1).cast("long")


def _coprime_step(n: int, seed: int) -> int:
    """A multiplier coprime to n, so that i -> (i * step + offset) mod n is a permutation of 0..n-1."""
    step = max(1, int(n * (0.5 + 0.4 * ((seed * 0.6180339887) % 1.0))))
    while math.gcd(step, n) != 1:
        step += 1
    return step


@dataclass(frozen=True)
class Model:
    """Constants of one config and the column expressions derived from them."""

    cfg: GenerateConfig
    n_clusters: int
    start_ms: int
    end_ms: int
    item_step: int
    item_offset: int

    @classmethod
    def of(cls, cfg: GenerateConfig) -> Model:
        cfg.validate()
        start = dt.datetime.combine(cfg.start_date, dt.time(), tzinfo=dt.timezone.utc)
        start_ms = int(start.timestamp() * 1000)
        return cls(
            cfg=cfg,
            n_clusters=min(cfg.clusters, cfg.items),
            start_ms=start_ms,
            end_ms=start_ms + cfg.days * DAY_MS,
            item_step=_coprime_step(cfg.items, cfg.seed),
            item_offset=(cfg.seed * 2_654_435_761) % cfg.items,
        )

    def u(self, tag: str, *keys: Key) -> Column:
        return uniform(self.cfg.seed, tag, *keys)

    def z(self, tag: str, *keys: Key) -> Column:
        return normal(self.cfg.seed, tag, *keys)

    # -- items: index i = rank * C + cluster, so cluster and rank are arithmetic, not a lookup --------
    def item_cluster(self, i: Key) -> Column:
        return (col(i) % self.n_clusters).cast("int")

    def item_rank(self, i: Key) -> Column:
        return F.floor(col(i) / self.n_clusters).cast("long")

    def cluster_size(self, cluster: Key) -> Column:
        c = self.n_clusters
        return F.floor((F.lit(self.cfg.items) - col(cluster) + (c - 1)) / c).cast("long")

    def item_index(self, cluster: Key, rank: Key) -> Column:
        return col(rank) * self.n_clusters + col(cluster)

    def item_id(self, i: Key) -> Column:
        # A permutation of the index, so that ids (and their order) say nothing about cluster or rank.
        perm = (col(i) * self.item_step + self.item_offset) % self.cfg.items
        return F.concat(F.lit("i"), perm.cast("string"))

    def item_is_new(self, i: Key) -> Column:
        # The head of each cluster (rank 0) is always old: it is the fallback when a draw is too new.
        return (self.item_rank(i) > 0) & (self.u("item-new", i) < self.cfg.new_item_fraction)

    def item_created_ms(self, i: Key) -> Column:
        u = self.u("item-created", i)
        new_ms = F.lit(self.start_ms) + F.floor(u * (self.cfg.days * DAY_MS))
        old_ms = F.lit(self.start_ms) - F.floor((F.lit(1.0) + u * (ITEM_HISTORY_DAYS - 1)) * DAY_MS)
        return F.when(self.item_is_new(i), new_ms).otherwise(old_ms).cast("long")

    def item_quality(self, i: Key) -> Column:
        return lognormal_mean_one(self.cfg.quality_sigma, self.z("item-quality", i))

    def item_category(self, i: Key) -> Column:
        cfg = self.cfg
        main = (self.item_cluster(i) + cfg.seed % cfg.categories) % cfg.categories
        other = F.floor(self.u("item-category-other", i) * cfg.categories)
        pick = F.when(self.u("item-category", i) < cfg.category_purity, main).otherwise(other)
        return F.concat(F.lit("cat"), pick.cast("long").cast("string"))

    def item_author(self, i: Key) -> Column:
        # Authors publish inside one cluster: author index = slot * C + cluster.
        per_cluster = max(1, self.cfg.items // self.cfg.items_per_author // self.n_clusters)
        slot = F.floor(self.u("item-author", i) * per_cluster)
        return F.concat(F.lit("a"), (slot * self.n_clusters + self.item_cluster(i)).cast("string"))

    def item_tags(self, i: Key) -> Column:
        """1-3 tags, mostly from the cluster's own vocabulary (tag names permuted so they hide it)."""
        vocab = self.n_clusters * TAGS_PER_CLUSTER
        step = _coprime_step(vocab, self.cfg.seed + 1)
        tags = []
        for t in range(3):
            own = self.item_cluster(i) * TAGS_PER_CLUSTER + F.floor(
                self.u(f"item-tag{t}", i) * TAGS_PER_CLUSTER
            )
            anywhere = F.floor(self.u(f"item-tag{t}-any", i) * vocab)
            v = F.when(self.u(f"item-tag{t}-own", i) < 0.8, own).otherwise(anywhere)
            tags.append(F.concat(F.lit("t"), ((v * step + 7) % vocab).cast("long").cast("string")))
        count = (F.floor(self.u("item-tag-count", i) * 3) + 1).cast("int")
        return F.array_distinct(F.slice(F.array(*tags), 1, count))

    # -- users -------------------------------------------------------------------------------------
    def user_id(self, uid: Key) -> Column:
        return F.concat(F.lit("u"), col(uid).cast("string"))

    def user_tastes(self, uid: Key) -> Column:
        """array<struct<w: double, c: int>>: 1..tastes distinct clusters, strongest first, weights sum to 1.

        Clusters are drawn from the skewed cluster popularity (so popular clusters have more fans);
        raw weights are exponential draws, i.e. the normalised weights are Dirichlet(1, ..., 1).
        """
        cfg = self.cfg
        wanted = F.floor(self.u("user-ntastes", uid) * cfg.tastes) + 1
        clusters = [
            power_law_index(self.u(f"user-taste{j}", uid), self.n_clusters, cfg.cluster_exponent).cast("int")
            for j in range(cfg.tastes)
        ]
        keeps, weights = [], []
        for j, c in enumerate(clusters):
            keep = F.lit(j) < wanted
            for earlier in clusters[:j]:
                keep = keep & (c != earlier)
            keeps.append(keep)
            weights.append(-F.log(F.lit(1.0) - self.u(f"user-taste-w{j}", uid)) + F.lit(1e-9))
        total = sum(
            (F.when(k, w).otherwise(F.lit(0.0)) for k, w in zip(keeps, weights, strict=True)), F.lit(0.0)
        )
        # Plain expressions only (no lambdas): higher-order functions run interpreted, 10x slower here.
        entries = [
            F.when(k, F.struct((w / total).alias("w"), c.alias("c")))
            for k, w, c in zip(keeps, weights, clusters, strict=True)
        ]
        # Descending sort_array puts the dropped (null) entries last; the slice cuts them off.
        n_kept = sum((F.when(k, 1).otherwise(0) for k in keeps), F.lit(0))
        return F.slice(F.sort_array(F.array(*entries), asc=False), 1, n_kept)

    def user_activity(self, uid: Key) -> Column:
        """Mean sessions per day: log-normal around sessions_per_day (a few heavy users, many light)."""
        z = self.z("user-activity", uid)
        return F.lit(self.cfg.sessions_per_day) * lognormal_mean_one(self.cfg.activity_sigma, z)

    def user_signup_ms(self, uid: Key) -> Column:
        cfg = self.cfg
        u = self.u("user-signup", uid)
        new_ms = F.lit(self.start_ms) + F.floor(u * (cfg.days * DAY_MS))
        old_ms = F.lit(self.start_ms) - F.floor((F.lit(1.0) + u * (SIGNUP_HISTORY_DAYS - 1)) * DAY_MS)
        is_new = self.u("user-new", uid) < cfg.new_user_fraction
        return F.when(is_new, new_ms).otherwise(old_ms).cast("long")

    def user_gender(self, uid: Key, top_cluster: Column) -> Column:
        # Mildly tied to the strongest taste so that demographics carry some signal for the ranker.
        lean = F.when(top_cluster % 2 == 0, F.lit(0.15)).otherwise(F.lit(-0.15))
        u = self.u("user-gender", uid)
        return F.when(u < 0.05, "u").when(u < F.lit(0.525) + lean, "f").otherwise("m")

    def user_age_bucket(self, uid: Key) -> Column:
        return _categorical(self.u("user-age", uid), AGE_BUCKETS)

    def user_region(self, uid: Key) -> Column:
        region = power_law_index(self.u("user-region", uid), REGIONS, 0.8)
        return F.concat(F.lit("r"), F.lpad(region.cast("string"), 2, "0"))


def _categorical(u: Column, choices: tuple[tuple[str, float], ...]) -> Column:
    total = sum(w for _, w in choices)
    expr = None
    cumulative = 0.0
    for value, weight in choices[:-1]:
        cumulative += weight / total
        expr = F.when(u < cumulative, value) if expr is None else expr.when(u < cumulative, value)
    last = choices[-1][0]
    return F.lit(last) if expr is None else expr.otherwise(last)


def mixture_hour(m: Model, *keys: Key) -> Column:
    """Session start hour in [0, 24) from SESSION_HOURS, as a double."""
    pick = m.u("session-hour-component", *keys)
    z = m.z("session-hour", *keys)
    flat = m.u("session-hour-flat", *keys) * 24.0
    total = sum(w for w, _, _ in SESSION_HOURS)
    expr = None
    cumulative = 0.0
    for weight, mean, sd in SESSION_HOURS:
        cumulative += weight / total
        value = flat if mean is None else F.lit(mean) + F.lit(sd) * z
        expr = F.when(pick < cumulative, value) if expr is None else expr.when(pick < cumulative, value)
    return F.pmod(expr.otherwise(flat), F.lit(24.0))
