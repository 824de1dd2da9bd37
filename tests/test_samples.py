"""Training sets (`recsys-spark samples`): every rule against a pure-Python reference.

Two small hand-made lakes share the same events before day D and differ wildly on D and D+1; the
features of D must not see the difference (no leakage). Every sampled set (positives, easy and hard
negatives, ranking rows, behaviour sequences) is recomputed in plain Python from the events and
compared exactly; the only Spark values a reference borrows are the per-row hash uniforms.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys_spark import cli
from recsys_spark.events import DEFAULT_WEIGHTS
from recsys_spark.lake import Lake
from recsys_spark.lake.tables import EVENT_TYPES, table_schema
from recsys_spark.samples.features import ITEM_DENSE, PAIR_DENSE, USER_DENSE, last_n_clicks
from recsys_spark.samples.job import SamplesConfig, build_samples, pair_features
from recsys_spark.samples.ranking import TASK_EVENTS
from recsys_spark.samples.recall import draw_items, easy_negatives, hard_negatives, hash_uniform
from recsys_spark.stats import daily_counts_for

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
FIRST = dt.date(2026, 11, 1)
DAYS = [FIRST + dt.timedelta(days=k) for k in range(10)]  # 2026-11-01 .. 2026-11-10
D = dt.date(2026, 11, 9)  # the sample day; D+1 = 2026-11-10 is in the lake too
PREV = D - dt.timedelta(days=1)
NEXT = D + dt.timedelta(days=1)
PRIOR = 20.0  # StatsConfig.prior_strength default
CFG = SamplesConfig()  # the job's defaults, used by the references
N_USERS, N_ITEMS, CLUSTERS = 60, 48, 4


class Ev(NamedTuple):
    user_id: str
    item_id: str
    event: str
    ts: dt.datetime
    session_id: str | None
    dwell_ms: int | None
    dt: dt.date


# -- hand-made lakes -------------------------------------------------------------------------------
def _at(day: dt.date, minutes: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=UTC) + dt.timedelta(minutes=minutes)


def _user_day(rng: random.Random, user: str, cluster: int, day: dt.date, items: list[str]) -> list[Ev]:
    """A few sessions: impressions of one cluster's items, some clicks (ties in ts on purpose: whole
    minutes), engagements after a click, and now and then an engagement with no impression at all."""
    out: list[Ev] = []
    for s in range(rng.randint(1, 3)):
        sid = f"{user}-{day}-{s}"
        start = rng.randrange(0, 24 * 60 - 20)
        c = cluster if rng.random() < 0.75 else rng.randrange(CLUSTERS)
        pool = [i for k, i in enumerate(items) if k % CLUSTERS == c]
        for j, item in enumerate(rng.sample(pool, k=rng.randint(2, 5))):
            for _ in range(rng.choice([1, 1, 2])):
                out.append(Ev(user, item, "impression", _at(day, start + j), sid, None, day))
            if rng.random() < 0.35:
                t = _at(day, start + rng.randint(0, 3))  # same minute for several items: ts ties
                out.append(Ev(user, item, "click", t, sid, rng.randrange(1000, 60000), day))
                for event, p in (
                    ("like", 0.3),
                    ("share", 0.1),
                    ("comment", 0.1),
                    ("follow", 0.05),
                    ("purchase", 0.05),
                ):
                    if rng.random() < p:
                        out.append(Ev(user, item, event, t + dt.timedelta(seconds=30), sid, None, day))
        if rng.random() < 0.1:  # a Taobao-style engagement without a logged impression
            out.append(
                Ev(
                    user,
                    rng.choice(pool),
                    rng.choice(["like", "click"]),
                    _at(day, start + 10),
                    sid,
                    None,
                    day,
                )
            )
    return out


def make_events(seed: int, days: Iterable[dt.date]) -> list[Ev]:
    rng = random.Random(seed)
    items = [f"i{k:02d}" for k in range(N_ITEMS + 1)]  # i48 has events but no profile row
    users = [f"u{k:02d}" for k in range(N_USERS)] + ["ux"]  # ux has events but no profile row
    out: list[Ev] = []
    for day in days:
        for k, user in enumerate(users):
            if rng.random() < 0.7:
                out += _user_day(rng, user, k % CLUSTERS, day, items)
        if day == D:
            # A brand-new user (no profile, no history) on a brand-new item (no profile, no stats).
            out.append(Ev("unew", "i49", "impression", _at(day, 600), None, None, day))
            out.append(Ev("unew", "i49", "click", _at(day, 601), None, 5000, day))
            out.append(Ev("unew", "i00", "impression", _at(day, 602), None, None, day))
    return out


def events_a() -> list[Ev]:
    return make_events(11, DAYS)


def events_b(before: list[Ev]) -> list[Ev]:
    """Same events before D; day D thinned to half plus clicks by other users on other items; D+1 new."""
    rng = random.Random(99)
    out = [e for e in before if e.dt < D]
    out += [e for e in before if e.dt == D and rng.random() < 0.5]
    for k in range(40):
        user = f"u{rng.randrange(N_USERS):02d}" if k % 2 else f"ub{k}"
        item = f"i{rng.randrange(N_ITEMS):02d}"
        for event in ("click", "like", "share"):
            out.append(Ev(user, item, event, _at(D, rng.randrange(24 * 60)), None, None, D))
    out += make_events(12345, [NEXT])
    return out


def item_created(k: int) -> dt.datetime | None:
    special = {
        40: _at(DAYS[4], 12 * 60),  # created mid-period
        44: _at(D, 0),  # created at the first instant of D: age 0
        45: _at(D, 15 * 60),  # created later on D: age clamped to 0, never negative
        47: None,
    }
    return special[k] if k in special else _at(dt.date(2026, 10, 1), 0)


def make_sim() -> list[tuple[str, str, float, int]]:
    """A stand-in for swing_sim: 25 neighbours per item, mostly its own cluster, dyadic scores (exact
    sums in any order, many ties) ranked by score then id, so the hard-negative reference is exact."""
    rng = random.Random(4)
    items = [f"i{k:02d}" for k in range(N_ITEMS + 1)]
    rows = []
    for i in items:
        same = [j for j in items if j != i and int(j[1:]) % CLUSTERS == int(i[1:]) % CLUSTERS]
        other = [j for j in items if int(j[1:]) % CLUSTERS != int(i[1:]) % CLUSTERS]
        scored = [(j, rng.randint(4, 16) / 16) for j in rng.sample(same, 9)]
        scored += [(j, rng.randint(1, 8) / 16) for j in rng.sample(other, 16)]
        ranked = sorted(scored, key=lambda t: (-t[1], t[0]))
        rows += [(i, j, score, rank) for rank, (j, score) in enumerate(ranked, start=1)]
    return rows


def write_lake(spark: SparkSession, root: str, events: list[Ev]) -> Lake:
    lake = Lake(spark, root)
    users = [
        (f"u{k:02d}", "mf"[k % 2], ["18-24", "25-34", "35-44"][k % 3], f"r{k % 5}", _at(FIRST, -k))
        for k in range(N_USERS)
    ] + [("uidle", "f", "55+", "r9", None)]
    items = [
        (f"i{k:02d}", f"cat{k % CLUSTERS}", f"a{k % 7}", [f"t{k % 3}"], item_created(k))
        for k in range(N_ITEMS)
    ]
    for table, rows in (("users", users), ("items", items), ("events", events)):
        schema = table_schema(table)
        assert schema is not None
        lake.overwrite(table, spark.createDataFrame(rows, schema.spark_schema()))
    return lake


def run(*args: str, spark: SparkSession) -> int:
    return cli.main(list(args), spark=spark)


@pytest.fixture(scope="module")
def ev_a() -> list[Ev]:
    return events_a()


@pytest.fixture(scope="module")
def ev_b(ev_a: list[Ev]) -> list[Ev]:
    return events_b(ev_a)


@pytest.fixture(scope="module")
def lake_a(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, ev_a: list[Ev]) -> Lake:
    """Stats stored for D-1 (the daily run's usual state), a swing_sim, samples of D-1 and D."""
    root = str(tmp_path_factory.mktemp("samples_a") / "lake")
    lake = write_lake(spark, root, ev_a)
    assert run("stats", "--lake", root, "--date", str(PREV), spark=spark) == 0
    sim = spark.createDataFrame(make_sim(), "item_id string, sim_item_id string, score double, rank int")
    lake.overwrite("swing_sim", sim, metadata={"date": str(PREV)})  # built the day before D
    assert run("samples", "--lake", root, "--date", str(PREV), spark=spark) == 0
    assert run("samples", "--lake", root, "--date", str(D), spark=spark) == 0
    return lake


@pytest.fixture(scope="module")
def lake_b(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, lake_a: Lake, ev_b: list[Ev]
) -> Lake:
    """Lake A with day D and D+1 rewritten (events and daily_counts, as `stats --date D+1` would leave
    them) and no user_stats/item_stats at all: the samples roll D-1 up from daily_counts themselves."""
    root = str(tmp_path_factory.mktemp("samples_b") / "lake")
    shutil.copytree(lake_a.root, root)
    for table in ("user_stats", "item_stats", "recall_samples", "rank_samples"):
        shutil.rmtree(Path(root) / table)
    lake = Lake(spark, root)
    rewritten = spark.createDataFrame([e for e in ev_b if e.dt >= D], table_schema("events").spark_schema())
    lake.overwrite_dates("events", rewritten, [D, NEXT])
    counts = daily_counts_for(rewritten, D).unionByName(daily_counts_for(rewritten, NEXT))
    lake.overwrite_dates("daily_counts", counts, [D, NEXT])
    assert {r.dt for r in lake.read("daily_counts").select("dt").distinct().collect()} == set(DAYS)
    assert run("samples", "--lake", root, "--date", str(D), spark=spark) == 0
    return lake


@pytest.fixture(params=["a", "b"])
def day_d(
    request: pytest.FixtureRequest, lake_a: Lake, lake_b: Lake, ev_a: list[Ev], ev_b: list[Ev]
) -> tuple[Lake, list[Ev]]:
    """Each lake with its own events: the checks of day D's samples run on both."""
    return (lake_a, ev_a) if request.param == "a" else (lake_b, ev_b)


def rows_of(lake: Lake, table: str, day: dt.date) -> list[Any]:
    return lake.read(table).filter(F.col("dt") == F.lit(day)).collect()


# -- pure-Python references ------------------------------------------------------------------------
def micros(ts: dt.datetime) -> int:
    return (ts - EPOCH) // dt.timedelta(microseconds=1)


def window_counts(events: list[Ev], key: str, last: dt.date, days: int) -> dict[str, Counter]:
    """Per entity: counts of each event type, and `active_days`, over the `days` days ending at `last`."""
    first = last - dt.timedelta(days=days - 1)
    out: dict[str, Counter] = defaultdict(Counter)
    active: dict[str, set] = defaultdict(set)
    for e in events:
        if first <= e.dt <= last and e.event in EVENT_TYPES:
            entity = getattr(e, key)
            out[entity][e.event] += 1
            active[entity].add(e.dt)
    for entity, seen in active.items():
        out[entity]["active_days"] = len(seen)
    return out


def smoothed(counts: dict[str, Counter], num: str, den: str) -> dict[str, float]:
    """The Bayesian-smoothed rate of docs/stats.md over the entities with a stats row."""
    n_tot = sum(c[num] for c in counts.values())
    d_tot = sum(c[den] for c in counts.values())
    g = n_tot / d_tot if d_tot else 0.0
    return {k: (c[num] + PRIOR * g) / (c[den] + PRIOR) for k, c in counts.items()}


def ref_dense(events: list[Ev], day: dt.date, key: str) -> dict[str, list[float]]:
    """USER_DENSE (key user_id) or ITEM_DENSE without the age (key item_id) from events before `day`."""
    prev = day - dt.timedelta(days=1)
    c30 = window_counts(events, key, prev, 30)
    w7 = window_counts(events, key, prev, 7)
    c7 = {k: w7.get(k, Counter()) for k in c30}  # one stats row per entity of the longest window
    ctr7, ctr30 = smoothed(c7, "click", "impression"), smoothed(c30, "click", "impression")
    like30, share30 = smoothed(c30, "like", "click"), smoothed(c30, "share", "click")
    out = {}
    for k in c30:
        a, b = c7[k], c30[k]
        if key == "user_id":
            out[k] = [
                math.log1p(a["impression"]),
                math.log1p(a["click"]),
                ctr7[k],
                math.log1p(b["impression"]),
                math.log1p(b["click"]),
                ctr30[k],
                like30[k],
                a["active_days"] / 7,
                b["active_days"] / 30,
                0.0,
            ]
        else:
            out[k] = [
                math.log1p(a["impression"]),
                math.log1p(a["click"]),
                ctr7[k],
                math.log1p(b["click"]),
                ctr30[k],
                like30[k],
                share30[k],
                0.0,  # age: filled in by ref_item_dense
                0.0,
            ]
    return out


def ref_user_dense(dense: dict[str, list[float]], user: str) -> list[float]:
    """`dense` = ref_dense(events, day, "user_id"); a user without a stats row is new (zeros, is_new 1)."""
    return dense.get(user, [0.0] * (len(USER_DENSE) - 1) + [1.0])


def ref_item_dense(dense: dict[str, list[float]], day: dt.date, item: str) -> list[float]:
    """`dense` = ref_dense(events, day, "item_id"), plus the age at the start of `day` from the profile."""
    out = list(dense.get(item, [0.0] * (len(ITEM_DENSE) - 1) + [1.0]))
    created = item_created(int(item[1:])) if int(item[1:]) < N_ITEMS else None
    if created is not None:
        age = (dt.datetime.combine(day, dt.time(), tzinfo=UTC) - created).total_seconds() / 86400
        out[ITEM_DENSE.index("log1p_age_days")] = math.log1p(max(age, 0.0))
    return out


def ref_last_n(events: list[Ev], day: dt.date, n: int, lookback: int) -> dict[str, list[str]]:
    """Distinct clicked items of the `lookback` days before `day`, latest click first, ties by item."""
    first = day - dt.timedelta(days=lookback)
    latest: dict[tuple[str, str], dt.datetime] = {}
    for e in events:
        if e.event == "click" and first <= e.dt < day:
            key = (e.user_id, e.item_id)
            latest[key] = max(latest.get(key, e.ts), e.ts)
    per_user: dict[str, list[tuple[dt.datetime, str]]] = defaultdict(list)
    for (u, i), ts in latest.items():
        per_user[u].append((ts, i))
    return {
        u: [i for _, i in sorted(v, key=lambda t: (-micros(t[0]), t[1]))[:n]] for u, v in per_user.items()
    }


def ref_positives(events: list[Ev], day: dt.date) -> dict[tuple[str, str], float]:
    r: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.dt == day:
            r[(e.user_id, e.item_id)] += DEFAULT_WEIGHTS.get(e.event, 0.0)
    return {k: v for k, v in r.items() if v > 0}


def ref_touched(events: list[Ev], day: dt.date) -> set[tuple[str, str]]:
    return {(e.user_id, e.item_id) for e in events if e.dt == day}


def ref_rank(events: list[Ev], day: dt.date) -> dict[tuple[str, str], tuple]:
    """(impressions, first ts in micros, label per task) for every pair with any event on `day`."""
    acc: dict[tuple[str, str], list[Ev]] = defaultdict(list)
    for e in events:
        if e.dt == day:
            acc[(e.user_id, e.item_id)].append(e)
    return {
        k: (
            sum(e.event == "impression" for e in v),
            min(micros(e.ts) for e in v),
            tuple(int(any(e.event == t for e in v)) for t in TASK_EVENTS),
        )
        for k, v in acc.items()
    }


def ref_draw(item_ids: list[str], weights: list[float], u: float) -> str | None:
    """Inverse CDF over the items sorted by id: the item whose cumulative slice holds u * total."""
    order = sorted(range(len(item_ids)), key=lambda k: item_ids[k])
    ids = [item_ids[k] for k in order if weights[k] > 0]
    cum = np.cumsum([weights[k] for k in order if weights[k] > 0])
    k = int(np.searchsorted(cum, u * cum[-1], side="right"))
    return ids[k] if k < len(ids) else None


def ref_hard(
    positives_per_user: dict[str, int],
    hist: dict[str, list[str]],
    sim: list[tuple[str, str, float, int]],
    exclude: set[tuple[str, str]],
    per_positive: int,
    skip_top: int,
    max_rank: int,
    h: Callable[[str, str], float],
) -> set[tuple[str, str]]:
    """The hard_negatives docstring, literally."""
    neighbours: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for i, j, score, rank in sim:
        if rank <= max_rank:
            neighbours[i].append((j, score))
    out = set()
    for u, n_pos in positives_per_user.items():
        history = hist.get(u, [])
        score: dict[str, float] = defaultdict(float)
        for i in history:
            for j, s in neighbours[i]:
                score[j] += s
        ranked = sorted(
            ((j, s) for j, s in score.items() if j not in history and (u, j) not in exclude),
            key=lambda t: (-t[1], t[0]),
        )
        pool = sorted((j for j, _ in ranked[skip_top:]), key=lambda j: (h(u, j), j))
        out |= {(u, j) for j in pool[: n_pos * per_positive]}
    return out


def hashes(spark: SparkSession, seed: int, rows: list[tuple], schema: str) -> dict[tuple, float]:
    """Spark's `hash_uniform(seed, *columns)` for each row (the only Spark value references borrow)."""
    df = spark.createDataFrame(rows, schema)
    out = df.select(*df.columns, hash_uniform(seed, *df.columns).alias("_h")).collect()
    return {tuple(r[:-1]): r["_h"] for r in out}


def by_key(rows: list[Any], key: str, column: str) -> dict[str, Any]:
    """{key: value} asserting that each key has a single value across the rows."""
    out: dict[str, Any] = {}
    for r in rows:
        value = list(r[column])
        assert out.setdefault(r[key], value) == value, (key, r[key], column)
    return out


def assert_dense(actual: list[float], expected: list[float], names: tuple[str, ...], what: str) -> None:
    assert len(actual) == len(names) == len(expected), what
    for name, a, e in zip(names, actual, expected):
        assert a == pytest.approx(e, rel=1e-6, abs=1e-6), (what, name, a, e)


# -- 1. no leakage ---------------------------------------------------------------------------------
def test_lakes_differ_on_and_after_d_only(ev_a: list[Ev], ev_b: list[Ev]) -> None:
    """Guard of the leakage test itself: identical before D, very different from D on."""
    assert Counter(e for e in ev_a if e.dt < D) == Counter(e for e in ev_b if e.dt < D)
    for day in (D, NEXT):
        a, b = ref_touched(ev_a, day), ref_touched(ev_b, day)
        assert len(a ^ b) > len(a) / 3, day
    assert ref_positives(ev_a, D) != ref_positives(ev_b, D)


def test_no_feature_uses_day_d_or_later(lake_a: Lake, lake_b: Lake, ev_a: list[Ev]) -> None:
    a = rows_of(lake_a, "recall_samples", D) + rows_of(lake_a, "rank_samples", D)
    b = rows_of(lake_b, "recall_samples", D) + rows_of(lake_b, "rank_samples", D)
    assert a and b
    for r in a + b:
        assert r.dt == D and r.features_dt == D - dt.timedelta(days=1)
    for key, column in (("user_id", "user_dense"), ("user_id", "hist"), ("item_id", "item_dense")):
        fa, fb = by_key(a, key, column), by_key(b, key, column)
        common = set(fa) & set(fb)
        assert len(common) >= 20, (column, len(common))
        assert {k: fa[k] for k in common} == {k: fb[k] for k in common}, column
    # The shared features are the ones a model serving on D could know, recomputed from events < D.
    before = [e for e in ev_a if e.dt < D]
    hist = ref_last_n(before, D, CFG.history_length, CFG.history_days)
    users, items = ref_dense(before, D, "user_id"), ref_dense(before, D, "item_id")
    for rows, lake in ((a, "a"), (b, "b")):
        for user, dense in by_key(rows, "user_id", "user_dense").items():
            assert_dense(dense, ref_user_dense(users, user), USER_DENSE, f"lake {lake} user {user}")
        for item, dense in by_key(rows, "item_id", "item_dense").items():
            assert_dense(dense, ref_item_dense(items, D, item), ITEM_DENSE, f"lake {lake} item {item}")
        assert by_key(rows, "user_id", "hist") == {u: hist.get(u, []) for u in {r.user_id for r in rows}}


def test_profile_features_use_no_day_d_or_later(lake_a: Lake, lake_b: Lake, ev_a: list[Ev]) -> None:
    """`pair_dense` comes from the profiles of D-1 (computed here: neither lake has user_profiles)
    and the pair's events of the 7 days before D, so the pairs both lakes' rank_samples hold match
    exactly although D and D+1 differ."""
    pairs = {}
    for lake in (lake_a, lake_b):
        rows = rows_of(lake, "rank_samples", D)
        pairs[lake.root] = {(r.user_id, r.item_id): list(r.pair_dense) for r in rows}
        assert all(
            len(v) == len(PAIR_DENSE) and all(0.0 <= x <= 1.0 + 1e-6 for x in v[:3])
            for v in pairs[lake.root].values()
        )
    fa, fb = pairs[lake_a.root], pairs[lake_b.root]
    common = set(fa) & set(fb)
    assert len(common) >= 20
    assert {k: fa[k] for k in common} == {k: fb[k] for k in common}
    # The exposure values, counted from their definition: dt in [D-7, D-1] (the lake starts at D-8).
    window = [e for e in ev_a if D - dt.timedelta(days=7) <= e.dt < D]
    assert any(e.dt < D - dt.timedelta(days=7) for e in ev_a)
    for pair, values in fa.items():
        shown = sum(1 for e in window if (e.user_id, e.item_id) == pair and e.event == "impression")
        clicked = sum(1 for e in window if (e.user_id, e.item_id) == pair and e.event == "click")
        assert_dense(values[3:], [math.log1p(shown), math.log1p(clicked)], PAIR_DENSE[3:], str(pair))
    # Guard: the features are not trivially zero, each of the three is informative somewhere.
    for k in range(len(PAIR_DENSE)):
        assert any(fa[p][k] > 0 for p in common) and any(fa[p][k] == 0 for p in fa), PAIR_DENSE[k]
    unew = [v for (u, _), v in fa.items() if u == "unew"]
    assert unew and all(v == [0.0] * len(PAIR_DENSE) for v in unew)  # no profile before D


def test_pair_features_match_reference_on_a_stored_profile(spark: SparkSession, tmp_path: Path) -> None:
    """The pair features, recomputed from their definitions on a hand-made profile of D-1 and events;
    the stored partition of D (what a leaky reader would use) and D's events must play no part."""
    lake = Lake(spark, str(tmp_path / "lake"))
    items = [
        ("i1", "cat0", "a0", ["t0", "t1", "t1"], None),  # t1 repeated: counts once
        ("i2", "cat1", "a1", ["t2"], None),
        ("i3", None, "a0", [], None),  # no category, no tags
    ]
    lake.overwrite("items", spark.createDataFrame(items, table_schema("items").spark_schema()))
    prof = {  # (user, kind, key) -> weight of D-1
        ("u1", "category", "cat0"): 0.75,
        ("u1", "category", "cat1"): 0.25,
        ("u1", "author", "a0"): 1.0,
        ("u1", "tag", "t0"): 0.5,
        ("u1", "tag", "t1"): 0.125,
        ("u1", "tag", "t2"): 0.375,
        ("u2", "category", "cat1"): 1.0,
        ("u2", "tag", "t1"): 1.0,
    }
    rows = [(u, kind, key, 1.0, w, 1, PREV) for (u, kind, key), w in prof.items()]
    rows += [(u, kind, key, 1.0, 1.0, 1, D) for u in ("u1", "u2", "u3") for kind, key in [("author", "a1")]]
    schema = table_schema("user_profiles").spark_schema()
    lake.overwrite_dates("user_profiles", spark.createDataFrame(rows, schema), [PREV, D])
    # Exposure of the 7 days before D: D itself and D-8 do not count, other events than these two do not.
    shown = {("u1", "i1"): [D - dt.timedelta(days=k) for k in (0, 1, 1, 7, 8)], ("u2", "i9"): [PREV]}
    events = [
        (u, i, "impression", _at(day, 1), None, None, day) for (u, i), days in shown.items() for day in days
    ]
    events += [("u1", "i1", e, _at(PREV, 2), None, 1000, PREV) for e in ("click", "like")]
    events += [("u1", "i2", "click", _at(D, 3), None, 1000, D)]
    lake.overwrite("events", spark.createDataFrame(events, table_schema("events").spark_schema()))
    exposure = {("u1", "i1"): [math.log1p(3), math.log1p(1)], ("u2", "i9"): [math.log1p(1), 0.0]}
    wanted = [(u, i) for u in ("u1", "u2", "u3") for i in ("i1", "i2", "i3", "i9")]  # i9: not in items
    pairs = spark.createDataFrame(wanted, "user_id string, item_id string")
    got = {(r.user_id, r.item_id): list(r.pair_dense) for r in pair_features(lake, D, pairs).collect()}
    catalogue = {i: (c, a, set(t)) for i, c, a, t, _ in items}
    expected = {}
    for u, i in wanted:
        c, a, tags = catalogue.get(i, (None, None, set()))
        expected[(u, i)] = [
            prof.get((u, "category", c), 0.0),
            prof.get((u, "author", a), 0.0),
            sum(prof.get((u, "tag", t), 0.0) for t in tags),
            *exposure.get((u, i), [0.0, 0.0]),
        ]
    assert got.keys() == expected.keys()
    for pair, values in expected.items():
        assert_dense(got[pair], values, PAIR_DENSE, str(pair))
    assert expected[("u1", "i1")][:3] == [0.75, 1.0, 0.625] and expected[("u2", "i2")][1] == 0.0


def test_new_ids_get_is_new_and_zeros(lake_a: Lake) -> None:
    """A user with no profile and no statistics before D, on an item with neither: defined features."""
    rows = [r for r in rows_of(lake_a, "rank_samples", D) if r.user_id == "unew"]
    assert {r.item_id for r in rows} == {"i49", "i00"}
    for r in rows:
        assert list(r.user_dense) == [0.0] * (len(USER_DENSE) - 1) + [1.0]
        assert r.hist == [] and r.gender is None
    (new_item,) = [r for r in rows if r.item_id == "i49"]
    assert list(new_item.item_dense) == [0.0] * (len(ITEM_DENSE) - 1) + [1.0]
    assert new_item.category is None


def test_item_age_never_negative(lake_a: Lake) -> None:
    rows = rows_of(lake_a, "rank_samples", D) + rows_of(lake_a, "recall_samples", D)
    age = ITEM_DENSE.index("log1p_age_days")
    dense = by_key(rows, "item_id", "item_dense")
    assert all(v[age] >= 0 for v in dense.values())
    assert dense["i44"][age] == 0.0 and dense["i45"][age] == 0.0  # created at 00:00 and 15:00 on D
    assert dense["i47"][age] == 0.0  # no created_ts
    assert dense["i40"][age] == pytest.approx(math.log1p(3.5))  # created 3.5 days before D


# -- 2. recall positives and the exposed-but-not-clicked rule ---------------------------------------
def test_recall_positives_and_negatives(day_d: tuple[Lake, list[Ev]]) -> None:
    lake, events = day_d
    rows = rows_of(lake, "recall_samples", D)
    touched = ref_touched(events, D)
    positives = ref_positives(events, D)
    got_pos = {(r.user_id, r.item_id): r.weight for r in rows if r.label == 1}
    assert got_pos == positives  # exact weights r_ui, exactly the r > 0 pairs
    assert all(r.sample_type == "positive" for r in rows if r.label == 1)
    negatives = [r for r in rows if r.label == 0]
    assert {r.sample_type for r in negatives} == {"easy_negative", "hard_negative"}
    shown_not_clicked = touched - set(positives)
    assert shown_not_clicked, "the lake must hold exposed-but-not-clicked pairs for this test to bite"
    for r in negatives:
        assert (r.user_id, r.item_id) not in touched, r
        assert r.weight == 1.0
    keys = [(r.user_id, r.item_id, r.sample_type) for r in rows]
    assert len(keys) == len(set(keys))


def test_easy_negatives_end_to_end_exact(spark: SparkSession, day_d: tuple[Lake, list[Ev]]) -> None:
    """The written easy negatives = the reference draws (hash u per (user, positive, k)) minus touched pairs."""
    lake, ev = day_d
    clicks = window_counts([e for e in ev if e.dt < D], "item_id", PREV, 30)
    items = sorted(i for i, c in clicks.items() if c["click"] > 0)
    weights = [float(clicks[i]["click"]) ** CFG.negative_power for i in items]
    positives = sorted(ref_positives(ev, D))
    triples = [(u, i, k) for u, i in positives for k in range(1, CFG.easy_negatives + 1)]
    u_of = hashes(spark, CFG.seed, triples, "user_id string, _pos string, k int")
    touched = ref_touched(ev, D)
    expected = {(u, ref_draw(items, weights, u_of[(u, i, k)])) for u, i, k in triples}
    expected = {p for p in expected if p not in touched}
    got = {
        (r.user_id, r.item_id) for r in rows_of(lake, "recall_samples", D) if r.sample_type == "easy_negative"
    }
    assert got == expected
    # The realised ratio is below the nominal one: touched draws are dropped and repeats collapse.
    assert len(got) <= CFG.easy_negatives * len(positives)


def test_hard_negatives_end_to_end(spark: SparkSession, day_d: tuple[Lake, list[Ev]]) -> None:
    """The written hard negatives = the reference on the lake's own swing_sim, history and day D."""
    lake, ev = day_d
    sim = [(r.item_id, r.sim_item_id, r.score, r.rank) for r in lake.read("swing_sim").collect()]
    hist = ref_last_n([e for e in ev if e.dt < D], D, CFG.history_length, CFG.history_days)
    positives = Counter(u for u, _ in ref_positives(ev, D))
    touched = ref_touched(ev, D)
    got = {
        (r.user_id, r.item_id) for r in rows_of(lake, "recall_samples", D) if r.sample_type == "hard_negative"
    }
    assert got, "swing must yield hard negatives on this lake"
    pairs = sorted({(u, j) for u in positives for j in {s[1] for s in sim}})
    h = hashes(spark, CFG.seed + 1, pairs, "user_id string, item_id string")
    expected = ref_hard(
        dict(positives),
        hist,
        sim,
        touched,
        CFG.hard_negatives,
        CFG.hard_negative_skip,
        CFG.hard_negative_max_rank,
        lambda u, j: h[(u, j)],
    )
    assert got == expected
    for u, j in got:
        assert (u, j) not in touched and j not in hist.get(u, [])


# -- 3. easy-negative sampling is exact -----------------------------------------------------------
def _weights(rng: np.random.Generator, n: int) -> list[float]:
    w = np.exp(rng.uniform(np.log(1e-9), np.log(1e9), size=n))
    w[rng.choice(n, size=n // 20, replace=False)] = 1e-300  # far below one ulp of the running sum
    w[: n // 50] = rng.integers(1, 5, size=n // 50)  # small integers: slice ends on exact values
    return [float(x) for x in w]


def test_draw_items_is_exact_inverse_cdf(spark: SparkSession) -> None:
    """Every draw gets exactly the item np.searchsorted picks, for one bucket or many (multi-bucket slices)."""
    rng = np.random.default_rng(1)
    n = 2000
    ids = [f"i{k}" for k in rng.permutation(n)]  # unpadded: string order, not numeric order
    weights = _weights(rng, n)
    order = sorted(range(n), key=lambda k: ids[k])
    cum = np.cumsum([weights[k] for k in order])
    us = list(rng.uniform(size=3000)) + [0.0, float(np.nextafter(1.0, 0.0))]
    us += [float(cum[k] / cum[-1]) for k in rng.choice(n - 1, size=200)]  # draws on slice edges
    draws = spark.createDataFrame([(k, float(u)) for k, u in enumerate(us)], "draw long, u double")
    items = spark.createDataFrame(list(zip(ids, weights)) + [("zero", 0.0)], "item_id string, w double")
    all_buckets = (1, 3, 64, 1 << 16)
    parts = [draw_items(draws, items, buckets=b).withColumn("buckets", F.lit(b)) for b in all_buckets]
    drawn = functools.reduce(lambda x, y: x.unionByName(y), parts).collect()  # one Spark job for all
    expected = {k: ref_draw(ids, weights, u) for k, u in enumerate(us)}
    expected = {k: v for k, v in expected.items() if v is not None}  # u -> 1 may round onto `total`
    assert len(expected) >= len(us) - 1
    assert len({ref_draw(ids, weights, u) for u in us}) > 200  # the draws spread over the catalogue
    for b in all_buckets:
        rows = [r for r in drawn if r.buckets == b]
        assert len(rows) == len({r.draw for r in rows}), b  # a draw lands in one slice, never two
        assert {r.draw: r.item_id for r in rows} == expected, b


def test_easy_negatives_follow_clicks_to_the_075(spark: SparkSession) -> None:
    clicks = [int(round(2000 ** (k / 39))) for k in range(40)]  # 1 .. 2000, geometric
    items = [f"i{k:02d}" for k in range(40)]
    pos = spark.createDataFrame([(f"u{k}", "p") for k in range(8000)], "user_id string, item_id string")
    exclude = spark.createDataFrame([], "user_id string, item_id string")
    item_clicks = spark.createDataFrame(list(zip(items, clicks)), "item_id string, clicks long")
    drawn = easy_negatives(pos, item_clicks, exclude, per_positive=5, power=0.75, seed=3)
    counts = {r.item_id: r["count"] for r in drawn.groupBy("item_id").count().collect()}
    n = sum(counts.values())
    assert n == 40000
    empirical = np.array([counts.get(i, 0) / n for i in items])

    def law(power: float) -> np.ndarray:
        w = np.array(clicks, dtype=float) ** power
        return w / w.sum()

    def tv(p: np.ndarray, q: np.ndarray) -> float:
        return float(np.abs(p - q).sum() / 2)

    assert tv(law(0.75), law(1.0)) > 0.1  # the two laws are far apart on these counts
    assert tv(empirical, law(0.75)) < 0.03
    assert tv(empirical, law(1.0)) > 0.08


def test_easy_negatives_drop_excluded_draws_exactly(spark: SparkSession) -> None:
    rng = random.Random(5)
    items = [f"i{k}" for k in range(30)]
    clicks = [rng.randint(1, 50) for _ in items]
    positives = [(f"u{k}", f"i{rng.randrange(30)}") for k in range(200)]
    exclude = {(u, i) for u, _ in positives for i in rng.sample(items, 10)}
    drawn = easy_negatives(
        spark.createDataFrame(positives, "user_id string, item_id string"),
        spark.createDataFrame(list(zip(items, clicks)), "item_id string, clicks long"),
        spark.createDataFrame(sorted(exclude), "user_id string, item_id string"),
        per_positive=3,
        power=0.75,
        seed=9,
    )
    triples = [(u, p, k) for u, p in positives for k in (1, 2, 3)]
    u_of = hashes(spark, 9, triples, "user_id string, _pos string, k int")
    weights = [c**0.75 for c in clicks]
    expected = Counter((u, ref_draw(items, weights, u_of[(u, p, k)])) for u, p, k in triples)
    expected = Counter({pair: n for pair, n in expected.items() if pair not in exclude})
    assert Counter((r.user_id, r.item_id) for r in drawn.collect()) == expected
    assert 0 < sum(expected.values()) < len(triples)


# -- 4. hard negatives ------------------------------------------------------------------------------
def test_hard_negatives_match_the_definition(spark: SparkSession) -> None:
    rng = random.Random(7)
    items = [f"i{k:02d}" for k in range(40)]
    users = [f"u{k:02d}" for k in range(30)]
    sim: list[tuple[str, str, float, int]] = []
    for i in items:
        scored = [(j, rng.randint(1, 8) / 8) for j in rng.sample([j for j in items if j != i], 10)]
        for rank, (j, s) in enumerate(sorted(scored, key=lambda t: (-t[1], t[0])), start=1):
            sim.append((i, j, s, rank))  # dyadic scores: exact sums in any order, and many ties
    hist = {u: rng.sample(items, rng.randint(1, 6)) for u in users[:25]}
    positives = {u: rng.randint(1, 3) for u in users[5:]}  # u00-u04: history, no positives
    exclude = {(u, j) for u in users for j in items if rng.random() < 0.3}
    args = {"per_positive": 2, "skip_top": 3, "max_rank": 6, "seed": 17}
    got = hard_negatives(
        spark.createDataFrame(
            [(u, f"p{k}") for u, n in positives.items() for k in range(n)], "user_id string, item_id string"
        ),
        spark.createDataFrame(list(hist.items()), "user_id string, hist array<string>"),
        spark.createDataFrame(sim, "item_id string, sim_item_id string, score double, rank int"),
        spark.createDataFrame(sorted(exclude), "user_id string, item_id string"),
        **args,
    )
    got_pairs = [(r.user_id, r.item_id) for r in got.collect()]
    assert len(got_pairs) == len(set(got_pairs))
    h = hashes(spark, 17, [(u, j) for u in users for j in items], "user_id string, item_id string")
    expected = ref_hard(positives, hist, sim, exclude, 2, 3, 6, lambda u, j: h[(u, j)])
    assert set(got_pairs) == expected
    assert expected and {u for u, _ in expected} <= set(users[5:25])
    # The reference must be sensitive to every rule: dropping one changes the answer.
    assert ref_hard(positives, hist, sim, exclude, 2, 0, 6, lambda u, j: h[(u, j)]) != expected
    assert ref_hard(positives, hist, sim, set(), 2, 3, 6, lambda u, j: h[(u, j)]) != expected
    assert ref_hard(positives, hist, sim, exclude, 2, 3, 10, lambda u, j: h[(u, j)]) != expected


# -- 5. ranking samples -----------------------------------------------------------------------------
def test_rank_samples_match_reference(day_d: tuple[Lake, list[Ev]]) -> None:
    lake, events = day_d
    df = lake.read("rank_samples").filter(F.col("dt") == F.lit(D)).withColumn("_us", F.unix_micros("ts"))
    got = {
        (r.user_id, r.item_id): (r.impressions, r._us, tuple(r[f"label_{t}"] for t in TASK_EVENTS))
        for r in df.collect()
    }
    expected = ref_rank(events, D)
    assert df.count() == len(got)  # one row per pair
    assert got == expected
    assert any(v[0] == 0 for v in expected.values())  # engaged without an impression: still a row
    assert any(v[2][0] == 0 for v in expected.values()) and any(v[2][0] == 1 for v in expected.values())


# -- 6. last_n_clicks -------------------------------------------------------------------------------
def test_last_n_clicks_edge_cases(spark: SparkSession) -> None:
    day = dt.date(2026, 5, 10)

    def ev(user: str, item: str, event: str, d: int, minute: int) -> Ev:
        when = day - dt.timedelta(days=d)
        return Ev(user, item, event, _at(when, minute), None, None, when)

    events = [
        ev("a", "x", "click", 1, 10),
        ev("a", "x", "click", 3, 10),  # repeated: counts once, at its latest click
        ev("a", "y", "click", 2, 5),
        ev("a", "z", "click", 1, 10),  # same ts as x: tie broken by item_id
        ev("a", "w", "click", 0, 1),  # on the sample day: never
        ev("a", "v", "click", -1, 1),  # after it: never
        ev("a", "q", "like", 1, 20),  # not a click
        ev("a", "old", "click", 4, 1),  # beyond a 3-day lookback
        ev("b", "x", "impression", 1, 1),  # no clicks at all: no row
        ev("c", "m", "click", 3, 0),  # first day inside the lookback window
    ]
    df = spark.createDataFrame(events, table_schema("events").spark_schema())
    got = {r.user_id: list(r.hist) for r in last_n_clicks(df, day, n=2, lookback_days=3).collect()}
    assert got == {"a": ["x", "z"], "c": ["m"]}
    assert got == ref_last_n(events, day, 2, 3)
    got10 = {r.user_id: list(r.hist) for r in last_n_clicks(df, day, n=10, lookback_days=10).collect()}
    assert got10 == {"a": ["x", "z", "y", "old"], "c": ["m"]} == ref_last_n(events, day, 10, 10)


def test_last_n_clicks_match_reference(lake_a: Lake, ev_a: list[Ev]) -> None:
    events = lake_a.read("events")
    for n, lookback in ((3, 2), (20, 30)):
        got = {r.user_id: list(r.hist) for r in last_n_clicks(events, D, n, lookback).collect()}
        assert got == ref_last_n(ev_a, D, n, lookback), (n, lookback)
    # Both bounds bite on this lake: the short lookback and the small N each cut some history.
    assert any(len(v) > 3 for v in ref_last_n(ev_a, D, 20, 2).values())
    assert ref_last_n(ev_a, D, 20, 2) != ref_last_n(ev_a, D, 20, 30)


# -- 7. idempotent re-run --------------------------------------------------------------------------
def _partition_files(lake: Lake, table: str, day: dt.date) -> list[str]:
    from deltalake import DeltaTable

    return sorted(DeltaTable(lake.uri(table)).file_uris(partition_filters=[("dt", "=", str(day))]))


def _snapshot(lake: Lake, table: str, day: dt.date) -> list[tuple]:
    return sorted(tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in rows_of(lake, table, day))


def test_rerunning_a_day_is_idempotent(spark: SparkSession, lake_a: Lake) -> None:
    tables = ("recall_samples", "rank_samples")
    before = {(t, d): _snapshot(lake_a, t, d) for t in tables for d in (PREV, D)}
    files_prev = {t: _partition_files(lake_a, t, PREV) for t in tables}
    versions = {t: lake_a.version(t) for t in tables}
    assert all(before.values())
    assert run("samples", "--lake", lake_a.root, "--date", str(D), spark=spark) == 0
    after = {(t, d): _snapshot(lake_a, t, d) for t in tables for d in (PREV, D)}
    assert after == before
    for t in tables:
        assert lake_a.version(t) == versions[t] + 1
        assert _partition_files(lake_a, t, PREV) == files_prev[t]  # D-1 untouched, not rewritten
        assert {r.dt for r in lake_a.read(t).select("dt").distinct().collect()} == {PREV, D}


# -- 8. determinism --------------------------------------------------------------------------------
def _recall_keys(lake: Lake, seeds: tuple[int, ...]) -> dict[int, set[tuple]]:
    """The recall rows `build_samples` computes with each seed (one Spark job for all of them)."""
    parts = [
        build_samples(lake, D, SamplesConfig(date=D, seed=seed))[0]
        .select("user_id", "item_id", "sample_type", "weight")
        .withColumn("seed", F.lit(seed))
        for seed in seeds
    ]
    out: dict[int, set[tuple]] = {seed: set() for seed in seeds}
    for r in functools.reduce(lambda x, y: x.unionByName(y), parts).collect():
        out[r.seed].add((r.user_id, r.item_id, r.sample_type, r.weight))
    return out


def test_same_seed_same_samples_other_seed_other_negatives(lake_a: Lake) -> None:
    stored = {(r.user_id, r.item_id, r.sample_type, r.weight) for r in rows_of(lake_a, "recall_samples", D)}
    again = _recall_keys(lake_a, (CFG.seed, 7))
    assert again[CFG.seed] == stored
    other = again[7]
    assert {k for k in other if k[2] == "positive"} == {k for k in stored if k[2] == "positive"}
    for kind in ("easy_negative", "hard_negative"):
        mine, theirs = {k for k in stored if k[2] == kind}, {k for k in other if k[2] == kind}
        assert mine and theirs and mine != theirs, kind


# -- 9. usage errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--hard-negative-channel", "itemcf"],
            "itemcf_sim does not exist: run `similarity --algo itemcf` first",
        ),
        (["--history-length", "0"], "--history-length must be >= 1"),
        (["--history-days", "0"], "--history-days must be >= 1"),
        (["--easy-negatives", "-1"], "--easy-negatives must be >= 0"),
        (["--negative-power", "-0.5"], "--negative-power must be >= 0"),
        (["--hard-negative-channel", "usercf"], "invalid choice: 'usercf'"),
    ],
)
def test_usage_errors_exit_2(
    spark: SparkSession, lake_a: Lake, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    versions = {t: lake_a.version(t) for t in ("recall_samples", "rank_samples")}
    assert run("samples", "--lake", lake_a.root, "--date", str(D), *extra, spark=spark) == 2
    assert message in capsys.readouterr().err
    assert {t: lake_a.version(t) for t in versions} == versions


def test_missing_statistics_is_a_usage_error(
    spark: SparkSession, lake: Lake, capsys: pytest.CaptureFixture[str], ev_a: list[Ev]
) -> None:
    events = [e for e in ev_a if e.dt in (PREV, D)]
    lake.overwrite("events", spark.createDataFrame(events, table_schema("events").spark_schema()))
    assert (
        run("samples", "--lake", lake.root, "--date", str(D), "--hard-negative-channel", "none", spark=spark)
        == 2
    )
    assert "no daily_counts: run `stats` first" in capsys.readouterr().err
    assert not lake.exists("recall_samples")


def test_docs_list_every_option() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "samples.md").read_text()
    parser, _ = cli.build_parser("samples")
    flags = [a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"]
    assert [f for f in flags if f"`{f}`" not in doc] == []
    for name in (*USER_DENSE, *ITEM_DENSE):
        assert f"`{name}`" in doc, name


# -- 10. every input as of D-1 (Delta time travel), for the daily job and the incremental update ------
def _recall_snapshot(lake: Lake, table: str, day: dt.date, users: set[str]) -> list[tuple]:
    rows = [r for r in rows_of(lake, table, day) if r.user_id in users]
    return sorted(tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in rows)


def test_samples_read_similarities_and_statistics_as_of_the_day_before(
    spark: SparkSession, tmp_path: Path, ev_a: list[Ev]
) -> None:
    """run-daily builds swing_sim of D (with D's events) before the samples of D: they must not see it.

    Day D's events change (new users co-click three items of different clusters, which reshapes Swing's
    lists) and D's statistics and swing_sim are rebuilt; the samples of the users who were there before
    must not move, neither features nor hard negatives."""
    root = str(tmp_path / "lake")
    lake = write_lake(spark, root, ev_a)
    for day in (PREV, D):
        assert run("stats", "--lake", root, "--date", str(day), spark=spark) == 0
        assert run("similarity", "--lake", root, "--algo", "swing", "--date", str(day), spark=spark) == 0
    assert run("samples", "--lake", root, "--date", str(D), spark=spark) == 0
    users = {e.user_id for e in ev_a}
    before = {t: _recall_snapshot(lake, t, D, users) for t in ("recall_samples", "rank_samples")}
    assert any(r[3] == "hard_negative" for r in before["recall_samples"])
    sim_before = sorted(map(tuple, lake.read("swing_sim").collect()))

    extra = [
        Ev(f"uz{k}", item, "click", _at(D, 60 + k), None, None, D)
        for k in range(40)
        for item in ("i01", "i02", "i03", f"i{(4 * k) % N_ITEMS:02d}")
    ]
    lake.append("events", spark.createDataFrame(extra, table_schema("events").spark_schema()))
    assert run("stats", "--lake", root, "--date", str(D), spark=spark) == 0
    assert run("similarity", "--lake", root, "--algo", "swing", "--date", str(D), spark=spark) == 0
    assert sorted(map(tuple, lake.read("swing_sim").collect())) != sim_before  # D's lists did change
    assert run("samples", "--lake", root, "--date", str(D), spark=spark) == 0
    after = {t: _recall_snapshot(lake, t, D, users) for t in before}
    assert after == before
    history = lake.history("recall_samples", limit=1)[0]
    assert history["recsys.features_dt"] == str(PREV)


def test_incremental_period_gets_each_days_own_features(lake_a: Lake) -> None:
    """The incremental update's period can span D-1 and D: a label of D-1 must not see its own click.

    Each event day of the period gets exactly the daily samples of that day (history before it,
    statistics of the day before it), whatever the update's `day`."""
    period = lake_a.read("events").filter(F.col("dt").isin(PREV, D))
    recall, rank = build_samples(lake_a, D, CFG, period_events=period)
    for table, frame in (("recall_samples", recall), ("rank_samples", rank)):
        stored = lake_a.read(table).filter(F.col("dt").isin(PREV, D))
        got = frame.select(*stored.columns)
        key = lambda r: tuple(tuple(v) if isinstance(v, list) else v for v in r)  # noqa: E731
        assert sorted(map(key, got.collect())) == sorted(map(key, stored.collect())), table
