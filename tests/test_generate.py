"""The synthetic data generator: determinism, contracts, and every planted structure, each by a statistic."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import os
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from recsys_spark.generate import (
    TABLES,
    GenerateConfig,
    config_for_events,
    expected_events,
    generate_tables,
    run,
)
from recsys_spark.lake.tables import EVENT_TYPES, table_schema

SMALL = GenerateConfig(users=300, items=200, days=3, clusters=10, seed=7)
START = dt.datetime(2026, 11, 1)
ACTIONS = ["like", "share", "comment", "follow", "purchase"]


@pytest.fixture(scope="module")
def tables(spark):
    return generate_tables(spark, SMALL)


@pytest.fixture(scope="module")
def frames(tables):
    """The small data set in pandas, with each impression's planted cluster and the user's tastes."""
    out = {name: df.toPandas() for name, df in tables.items()}
    events = out["events"].merge(out["truth_items"][["item_id", "cluster", "quality"]], on="item_id")
    tastes = out["truth_users"].set_index("user_id")["clusters"].map(lambda cs: set(int(c) for c in cs))
    events["preferred"] = [c in tastes[u] for u, c in zip(events["user_id"], events["cluster"], strict=True)]
    out["events"] = events.sort_values(["session_id", "ts", "event"]).reset_index(drop=True)
    return out


def _rows(tables):
    """Every row of every table as (table, JSON): one DataFrame, so comparing all five is two jobs."""
    out = None
    for name in TABLES:
        df = tables[name]
        rows = df.select(F.lit(name).alias("table"), F.to_json(F.struct(*df.columns)).alias("row"))
        out = rows if out is None else out.unionByName(rows)
    return out


def _differing_tables(a, b) -> set[str]:
    left, right = _rows(a), _rows(b)
    diff = left.exceptAll(right).unionByName(right.exceptAll(left))
    return {r["table"] for r in diff.select("table").distinct().collect()}


TINY = GenerateConfig(users=80, items=60, days=2, clusters=6, seed=3)


@pytest.fixture(scope="module")
def tiny(spark):
    tables = {name: df.cache() for name, df in generate_tables(spark, TINY).items()}
    yield tables
    for df in tables.values():
        df.unpersist()


# -- determinism ---------------------------------------------------------------------------------
def test_same_seed_gives_identical_tables_whatever_the_partitioning(spark, tiny):
    # Generated again, with other task and shuffle partition counts, and shuffled: still the same rows.
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        again = generate_tables(spark, dataclasses.replace(TINY, partitions=5))
        assert again["events"].rdd.getNumPartitions() != tiny["events"].rdd.getNumPartitions()
        assert _differing_tables(tiny, {name: df.repartition(3) for name, df in again.items()}) == set()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)


def test_a_different_seed_gives_different_tables(spark, tiny):
    other = generate_tables(spark, dataclasses.replace(TINY, seed=4))
    assert _differing_tables(tiny, other) == set(TABLES)


# -- contracts ----------------------------------------------------------------------------------
def test_tables_match_their_contracts(tables):
    for name in TABLES:
        schema = table_schema(name)
        assert tables[name].columns == schema.column_names, name
        conformed = schema.conform(tables[name]).schema
        assert [f.dataType for f in conformed] == [f.dataType for f in tables[name].schema], name


def test_events_satisfy_the_events_contract(frames):
    events = frames["events"]
    assert set(events["event"]) == set(EVENT_TYPES)
    assert events[["user_id", "item_id", "event", "ts", "session_id", "dt"]].notna().all().all()
    assert events["ts"].min() >= START and events["ts"].max() < START + dt.timedelta(days=SMALL.days)
    assert (events["ts"].dt.date == events["dt"]).all()
    clicks = events["event"] == "click"
    assert events.loc[clicks, "dwell_ms"].notna().all() and (events.loc[clicks, "dwell_ms"] >= 0).all()
    assert events.loc[~clicks, "dwell_ms"].isna().all()
    assert set(events["user_id"]) <= set(frames["users"]["user_id"])
    assert set(events["item_id"]) <= set(frames["items"]["item_id"])


def test_side_tables_have_one_row_per_id(frames):
    for name, key, n in (("items", "item_id", 200), ("truth_items", "item_id", 200)):
        assert frames[name][key].is_unique and len(frames[name]) == n, name
    for name in ("users", "truth_users"):
        assert frames[name]["user_id"].is_unique and len(frames[name]) == SMALL.users, name
    assert set(frames["items"]["item_id"]) == set(frames["truth_items"]["item_id"])


def test_event_count_is_near_the_expected_count(frames):
    expected = expected_events(SMALL)
    assert abs(len(frames["events"]) - expected) < 0.25 * expected, (len(frames["events"]), expected)


def test_config_for_events_targets_the_requested_size():
    for target in (1_000_000, 10_000_000):
        cfg = config_for_events(target, seed=1)
        assert abs(expected_events(cfg) - target) < 0.01 * target
        assert cfg.items >= 100 and cfg.seed == 1


# -- planted structure --------------------------------------------------------------------------
def _impressions(frames):
    events = frames["events"]
    return events[events["event"] == "impression"]


def test_item_popularity_is_a_power_law(frames):
    counts = _impressions(frames)["item_id"].value_counts()
    top = counts.iloc[: len(frames["items"]) // 10].sum()
    assert top / counts.sum() > 0.4  # uniform popularity would give 0.1
    # Inside a cluster, popularity falls with the planted rank.
    by_rank = _impressions(frames).merge(frames["truth_items"][["item_id", "popularity_rank"]], on="item_id")
    per_rank = by_rank["popularity_rank"].value_counts().sort_index()
    assert per_rank.iloc[0] > 2 * per_rank.iloc[3] > 0


def test_item_ids_do_not_reveal_the_cluster(frames):
    truth = frames["truth_items"].assign(n=lambda d: d["item_id"].str[1:].astype(int)).sort_values("n")
    # Ids in order: neighbours share a cluster about as often as random pairs (1 / clusters).
    same = (truth["cluster"].to_numpy()[1:] == truth["cluster"].to_numpy()[:-1]).mean()
    assert same < 0.3


def test_sessions_stay_in_a_cluster(frames):
    imps = _impressions(frames).sort_values(["session_id", "ts"])
    same_session = imps["session_id"].eq(imps["session_id"].shift())
    same_cluster = imps["cluster"].eq(imps["cluster"].shift())
    share = same_cluster[same_session].mean()
    assert share > 0.6, share  # random clusters would give about 1 / clusters = 0.1
    assert imps.groupby("session_id")["ts"].apply(lambda t: t.is_monotonic_increasing).all()


def test_clicks_follow_tastes_and_quality(frames):
    imps = _impressions(frames)
    clicked = imps.merge(
        frames["events"]
        .loc[frames["events"]["event"] == "click", ["session_id", "item_id", "user_id"]]
        .drop_duplicates()
        .assign(clicked=1),
        on=["session_id", "item_id", "user_id"],
        how="left",
    ).fillna({"clicked": 0})
    ctr = clicked.groupby("preferred")["clicked"].mean()
    assert ctr[True] > 3 * ctr[False], ctr
    assert imps["preferred"].mean() > 0.8  # users are mostly shown their own clusters
    good = clicked["quality"] > clicked["quality"].median()
    assert clicked.loc[good, "clicked"].mean() > clicked.loc[~good, "clicked"].mean()


def test_actions_are_subsets_of_clicks_and_come_after_them(frames):
    events = frames["events"]
    clicks = events[events["event"] == "click"][["user_id", "item_id", "session_id", "ts"]]
    actions = events[events["event"].isin(ACTIONS)]
    assert len(actions) > 0
    joined = actions.reset_index().merge(
        clicks, on=["user_id", "item_id", "session_id"], how="left", suffixes=("", "_click")
    )
    assert joined["ts_click"].notna().all()
    # The same item may be clicked twice in a session: each action follows at least one of its clicks.
    assert (joined["ts"] > joined["ts_click"]).groupby(joined["index"]).any().all()
    imps = events[events["event"] == "impression"][["user_id", "item_id", "session_id", "ts"]]
    with_imp = clicks.reset_index().merge(
        imps, on=["user_id", "item_id", "session_id"], suffixes=("", "_imp")
    )
    assert with_imp["index"].nunique() == len(clicks)
    assert (with_imp["ts_imp"] < with_imp["ts"]).groupby(with_imp["index"]).any().all()


def test_activity_follows_a_daily_cycle(frames):
    hours = _impressions(frames)["ts"].dt.hour.value_counts().reindex(range(24), fill_value=0)
    evening, small_hours = hours[18:23].mean(), hours[3:6].mean()
    assert evening > 5 * max(small_hours, 1), hours.to_dict()
    assert hours[12] > hours[3]  # the lunch bump


def test_user_activity_is_heavy_tailed(frames):
    sessions = frames["events"].groupby("user_id")["session_id"].nunique()
    sessions = sessions.reindex(frames["users"]["user_id"], fill_value=0).sort_values(ascending=False)
    top = sessions.iloc[: len(sessions) // 10].sum() / sessions.sum()
    assert top > 0.25, top  # equal activity would give about 0.13 here
    activity = frames["truth_users"].set_index("user_id")["activity"]
    assert sessions.corr(activity.reindex(sessions.index)) > 0.7


def test_new_items_appear_over_time_and_never_before_they_exist(frames):
    items = frames["items"][["item_id", "created_ts"]]
    shown = _impressions(frames).merge(items, on="item_id")
    assert (shown["ts"] >= shown["created_ts"]).all()
    new = items[items["created_ts"] >= START]
    assert 0.03 < len(new) / len(items) < 0.2  # new_item_fraction = 0.1 of the non-head items
    assert shown["item_id"].isin(new["item_id"]).any()


def test_users_sign_up_before_their_first_event(frames):
    first = frames["events"].groupby("user_id")["ts"].min().rename("first")
    users = frames["users"].set_index("user_id").join(first, how="inner")
    assert (users["signup_ts"] < users["first"]).all()
    assert users["gender"].isin(["f", "m", "u"]).all() and users["age_bucket"].notna().all()


def test_items_categories_follow_clusters(frames):
    items = frames["items"].merge(frames["truth_items"], on="item_id")
    purity = items.groupby("cluster")["category"].agg(lambda c: c.value_counts().iloc[0] / len(c))
    assert purity.mean() > 0.6
    assert items["tags"].map(len).between(1, 3).all()
    authors = items.groupby("author_id")["cluster"].nunique()
    assert (authors == 1).all()


def test_user_tastes_are_well_formed(frames):
    truth = frames["truth_users"]
    assert truth["clusters"].map(len).between(1, SMALL.tastes).all()
    assert truth["clusters"].map(lambda cs: len(set(cs)) == len(cs)).all()
    assert truth["weights"].map(lambda w: abs(sum(w) - 1) < 1e-9 and list(w) == sorted(w, reverse=True)).all()
    assert (truth["activity"] > 0).all()


# -- the job ------------------------------------------------------------------------------------
def test_run_writes_every_table_to_the_lake(spark, lake):
    from deltalake import DeltaTable

    cfg = GenerateConfig(lake=lake.root, users=60, items=40, days=2, clusters=4)
    assert run(cfg, spark, lake) == 0
    assert set(TABLES) <= set(lake.tables())
    delta = DeltaTable(lake.uri("events"))
    assert delta.metadata().partition_columns == ["dt"]
    assert len(delta.file_uris()) >= 2 and lake.read("events").count() > 0
    days = {r[0] for r in lake.read("events").select(F.col("dt").cast("string")).distinct().collect()}
    assert days == {"2026-11-01", "2026-11-02"}


def test_cli_generates_into_a_lake(tmp_path):
    path = str(tmp_path / "cli-lake")
    env = {**os.environ, "RECSYS_DRIVER_MEMORY": "2g", "SPARK_MASTER": "local[1]"}
    args = ["--lake", path, "--users", "200", "--items", "100", "--days", "2", "--clusters", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "recsys_spark.cli", "generate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "events/s" in done.stdout
    from deltalake import DeltaTable

    for name in TABLES:
        assert DeltaTable(os.path.join(path, name)).version() == 0, name


def test_bad_options_are_a_usage_error(spark, tmp_path):
    from recsys_spark.cli import main

    assert main(["generate", "--lake", str(tmp_path), "--users", "0"], spark=spark) == 2
    assert main(["generate", "--lake", str(tmp_path), "--base-ctr", "1.5"], spark=spark) == 2


def test_generator_code_has_no_udf_rand_or_collect():
    # The generator itself never brings data to the driver: no toPandas / collect in its code.
    import inspect

    import recsys_spark.generate.tables as gen_tables

    source = inspect.getsource(gen_tables)
    assert "collect(" not in source and "toPandas" not in source and "F.udf" not in source
    assert "rand(" not in source and "randn(" not in source


# The options of the hand-made truth of `_truth_frames`.
TRUTH_CFG = GenerateConfig(
    items=5, clusters=2, explore=0.1, base_ctr=0.1, taste_boost=3.0, popularity_exponent=1.2
)


@contextlib.contextmanager
def _utc(spark):
    """The session in UTC for the block (created_ts of `_truth_frames` are UTC wall times)."""
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    try:
        yield
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)


def _truth_frames(spark):
    """Two clusters of a 5-item catalogue (cluster c holds items i ≡ c mod 2) and two users."""
    items = [("i0", 0, 0, 1.0), ("i1", 1, 0, 1.2), ("i2", 0, 1, 0.8), ("i3", 1, 1, 1.0), ("i4", 0, 2, 1.5)]
    truth_items = spark.createDataFrame(
        items, "item_id string, cluster int, popularity_rank int, quality double"
    )
    truth_users = spark.createDataFrame(
        [("u0", [0], [1.0], 1.0), ("u1", [1, 0], [0.7, 0.3], 1.0)],
        "user_id string, clusters array<int>, weights array<double>, activity double",
    )
    day = dt.date(2026, 11, 3)
    midnight = dt.datetime.combine(day, dt.time())
    created = {"i4": midnight + dt.timedelta(hours=12), "i3": midnight + dt.timedelta(days=1, hours=1)}
    catalogue = spark.createDataFrame(
        [(i, created.get(i, midnight - dt.timedelta(days=5))) for i, *_ in items],
        "item_id string, created_ts timestamp",
    )
    return items, truth_items, truth_users, catalogue, day


def test_expected_clicks_follow_the_generators_formula(spark):
    from recsys_spark.generate.truth import expected_clicks

    cfg = TRUTH_CFG
    with _utc(spark):
        items, truth_items, truth_users, catalogue, day = _truth_frames(spark)
        got = {
            (r.user_id, r.item_id): r.score
            for r in expected_clicks(
                truth_users.select("user_id"), truth_items, truth_users, catalogue, cfg, day, 10
            ).collect()
        }
    # Reference from the formula: P(segment) · P(rank | n) · ctr · live share of the day.
    sizes = {c: sum(1 for _, cc, _, _ in items if cc == c) for c in (0, 1)}
    live = {"i4": 0.5, "i3": 0.0}
    tastes = {"u0": {0: 1.0}, "u1": {1: 0.7, 0: 0.3}}
    a = 1.2
    want = {}
    for user, weights in tastes.items():
        for item, c, rank, quality in items:
            if live.get(item, 1.0) == 0:
                continue
            segment = 0.9 * weights.get(c, 0.0) + 0.1 / 2
            p_rank = ((rank + 2) ** (1 - a) - (rank + 1) ** (1 - a)) / ((sizes[c] + 1) ** (1 - a) - 1)
            ctr = min(0.95, 0.1 * quality * (3.0 if c in weights else 1.0))
            want[(user, item)] = segment * p_rank * ctr * live.get(item, 1.0)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_label_probabilities_follow_the_generators_formula(spark):
    from recsys_spark.generate.truth import label_probabilities

    cfg = TRUTH_CFG
    with _utc(spark):
        items, truth_items, truth_users, catalogue, day = _truth_frames(spark)
        shown = [("u0", "i0", 1), ("u0", "i1", 3), ("u1", "i4", 2), ("u1", "i2", 1), ("u9", "i0", 1)]
        rows = spark.createDataFrame(shown, "user_id string, item_id string, impressions int")
        got = {
            (r.user_id, r.item_id): r
            for r in label_probabilities(
                rows, truth_items, truth_users, cfg, ["click", "like"], catalogue, day
            ).collect()
        }
    # Reference from the formulas of generate.truth, written out for each pair.
    tastes, activity, a = {"u0": {0: 1.0}, "u1": {1: 0.7, 0: 0.3}}, 1.0, 1.2
    sizes = {c: sum(1 for _, cc, _, _ in items if cc == c) for c in (0, 1)}
    by_item = {i: (c, rank, quality) for i, c, rank, quality in items}
    live = {"i4": 0.5}
    for user, item, n in shown[:-1]:
        c, rank, quality = by_item[item]
        preferred = c in tastes[user]
        click = min(0.95, 0.1 * quality * (3.0 if preferred else 1.0))
        like = click * min(1.0, (1.5 if preferred else 0.5) * cfg.like_rate)
        segment = 0.9 * tastes[user].get(c, 0.0) + 0.1 / 2
        p_rank = ((rank + 2) ** (1 - a) - (rank + 1) ** (1 - a)) / ((sizes[c] + 1) ** (1 - a) - 1)
        lam = activity * cfg.session_length * segment * p_rank * live.get(item, 1.0)
        row = got[(user, item)]
        for task, p in (("click", click), ("like", like)):
            assert row[f"oracle_{task}"] == pytest.approx(1 - (1 - p) ** n, rel=1e-9), (user, item)
            serving = (1 - math.exp(-lam * p)) / (1 - math.exp(-lam))
            assert row[f"oracle_serving_{task}"] == pytest.approx(serving, rel=1e-9), (user, item)
    # A user without truth (ingested) gets no limit.
    assert got[("u9", "i0")]["oracle_click"] is None and got[("u9", "i0")]["oracle_serving_click"] is None


def test_true_probabilities_are_calibrated_on_generated_events(spark, tables):
    """The oracle's numbers are the generator's own: they predict the day's clicks and labels."""
    from recsys_spark.evaluate.metrics import auc
    from recsys_spark.generate.truth import expected_clicks, label_probabilities
    from recsys_spark.samples.ranking import rank_examples

    events = tables["events"]
    day = events.agg(F.max("dt")).first()[0]
    of_day = events.filter(F.col("dt") == day)
    truth = (tables["truth_items"], tables["truth_users"])
    rows = label_probabilities(rank_examples(of_day), *truth, SMALL, ["click", "like"]).toPandas()
    assert rows["oracle_click"].mean() == pytest.approx(rows["label_click"].mean(), rel=0.05)
    assert rows["oracle_like"].mean() == pytest.approx(rows["label_like"].mean(), rel=0.15)
    assert auc(rows["label_click"].to_numpy(), rows["oracle_click"].to_numpy()) > 0.75
    # Without D's impression counts the limit is lower but still the day's click rate, up to the
    # Poisson approximation of how often a pair is shown (clumped segments make counts overdispersed).
    serving = rows["oracle_serving_click"].to_numpy()
    assert serving.mean() == pytest.approx(rows["label_click"].mean(), rel=0.15)
    assert (
        0.55
        < auc(rows["label_click"].to_numpy(), serving)
        < auc(rows["label_click"].to_numpy(), rows["oracle_click"].to_numpy())
    )
    # Expected clicks per impression × each user's impressions of D ≈ the clicks of D.
    users = tables["users"].select("user_id")
    scores = expected_clicks(users, *truth, tables["items"], SMALL, day, SMALL.items)
    shown = of_day.filter(F.col("event") == "impression").groupBy("user_id").count()
    predicted = scores.join(shown, "user_id").agg(F.sum(F.col("score") * F.col("count"))).first()[0]
    clicks = of_day.filter(F.col("event") == "click").count()
    assert predicted == pytest.approx(clicks, rel=0.1)
