"""Beyond-accuracy metrics, --exclude-seen and the served-list channels (final, ranked) of `evaluate`.

The metric references are written straight from the formulas of docs/evaluate.md (pairs by
itertools.combinations, logs by math.log2), not from the NumPy code. The job test builds a tiny lake by
hand, so every expected list is worked out in the comments.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import random
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from pyspark.sql import functions as F

from recsys_spark.evaluate.metrics import (
    ItemFacts,
    beyond_accuracy_metrics,
    category_diversity,
    coverage,
    intra_list_diversity,
    novelty,
)
from recsys_spark.evaluate.report import evaluation_html, scatter_svg


# -- references from the formulas ---------------------------------------------------------------
def top_k(ranked, k):
    out = []
    for item in ranked:
        if item not in out:
            out.append(item)
    return out[:k]


def ref_coverage(lists, users, catalogue, k):
    listed = set()
    for u in users:
        listed |= set(top_k(lists.get(u, []), k))
    return len(listed) / catalogue


def ref_cos(a, b):
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def ref_ild(lists, users, vectors, k):
    per_user = []
    for u in users:
        items = [i for i in top_k(lists.get(u, []), k) if i in vectors]
        pairs = list(itertools.combinations(items, 2))
        if pairs:
            per_user.append(1 - sum(ref_cos(vectors[a], vectors[b]) for a, b in pairs) / len(pairs))
    return sum(per_user) / len(per_user) if per_user else math.nan


def ref_category_ild(lists, users, categories, k):
    per_user = []
    for u in users:
        items = [i for i in top_k(lists.get(u, []), k) if categories.get(i) is not None]
        pairs = list(itertools.combinations(items, 2))
        if pairs:
            per_user.append(sum(categories[a] != categories[b] for a, b in pairs) / len(pairs))
    return sum(per_user) / len(per_user) if per_user else math.nan


def ref_novelty(lists, users, item_users, n_users, k):
    per_user = []
    for u in users:
        items = top_k(lists.get(u, []), k)
        if items:
            bits = [-math.log2((item_users.get(i, 0) + 1) / (n_users + 1)) for i in items]
            per_user.append(sum(bits) / len(bits))
    return sum(per_user) / len(per_user) if per_user else math.nan


def test_beyond_accuracy_metrics_on_hand_made_lists():
    lists = {"u1": ["a", "b", "a", "c"], "u2": ["b", "d"], "u3": ["e"], "u5": ["z", "y"]}
    users = ["u1", "u2", "u3", "u4"]  # u4 has no list; u5 is not evaluated
    # coverage@2: u1 {a, b}, u2 {b, d}, u3 {e} -> 4 of 10; @3: u1 {a, b, c} -> 5 of 10
    assert coverage(lists, users, 10, 2) == pytest.approx(0.4)
    assert coverage(lists, users, 10, 3) == pytest.approx(0.5)
    assert math.isnan(coverage(lists, users, 0, 3))
    vectors = {"a": [1.0, 0.0], "b": [0.0, 2.0], "c": [1.0, 1.0], "d": [0.0, 0.0], "e": [3.0, 1.0]}
    # u1 @3: pairs (a,b) 0, (a,c) 1/√2, (b,c) 1/√2 -> 1 − √2/3; u2: (b, d) zero vector -> 1; u3 skipped
    assert intra_list_diversity(lists, users, vectors, 3) == pytest.approx(((1 - math.sqrt(2) / 3) + 1) / 2)
    categories = {"a": "x", "b": "x", "c": "y", "d": None, "e": "y"}
    # u1 @3: (a,b) same, (a,c) (b,c) differ -> 2/3; u2: d has no category -> skipped
    assert category_diversity(lists, users, categories, 3) == pytest.approx(2 / 3)
    assert math.isnan(category_diversity(lists, ["u3"], categories, 3))
    item_users, n_users = {"a": 3, "b": 1}, 3
    # u1 @2: −log2(4/4) = 0, −log2(2/4) = 1 -> 0.5; u2: b 1, d −log2(1/4) = 2 -> 1.5; u3: e 2
    assert novelty(lists, users, item_users, n_users, 2) == pytest.approx((0.5 + 1.5 + 2) / 3)
    with pytest.raises(ValueError):
        novelty(lists, users, {"a": 4}, n_users, 2)

    got = beyond_accuracy_metrics(lists, users, (2, 3), ItemFacts(10, vectors, categories, item_users, 3))
    assert list(got) == [
        "coverage@2", "ild@2", "category_ild@2", "novelty@2",
        "coverage@3", "ild@3", "category_ild@3", "novelty@3", "coverage",
    ]  # fmt: skip
    assert got["coverage"] == got["coverage@3"]
    no_side = beyond_accuracy_metrics(lists, users, (2,), ItemFacts(10, None, None, item_users, 3))
    assert set(no_side) == {"coverage@2", "novelty@2", "coverage"}


@pytest.mark.parametrize("seed", [0, 1])
def test_beyond_accuracy_metrics_equal_the_references(seed):
    rng = random.Random(seed)
    items = [f"i{n}" for n in range(30)]
    lists = {f"u{n}": [rng.choice(items) for _ in range(rng.randint(0, 12))] for n in range(40)}
    users = [f"u{n}" for n in range(45)]
    vectors = {i: [rng.uniform(-1, 1) for _ in range(4)] for i in items if rng.random() < 0.8}
    categories = {i: rng.choice("pqr") for i in items if rng.random() < 0.8}
    item_users = {i: rng.randint(0, 20) for i in items if rng.random() < 0.7}
    for k in (1, 3, 10):
        assert coverage(lists, users, 30, k) == pytest.approx(ref_coverage(lists, users, 30, k), abs=1e-12)
        ild, ref = intra_list_diversity(lists, users, vectors, k), ref_ild(lists, users, vectors, k)
        assert (math.isnan(ild) and math.isnan(ref)) if k == 1 else ild == pytest.approx(ref, abs=1e-12)
        cat, ref = (
            category_diversity(lists, users, categories, k),
            ref_category_ild(lists, users, categories, k),
        )
        assert (math.isnan(cat) and math.isnan(ref)) if k == 1 else cat == pytest.approx(ref, abs=1e-12)
        assert novelty(lists, users, item_users, 20, k) == pytest.approx(
            ref_novelty(lists, users, item_users, 20, k), abs=1e-12
        )


def test_scatter_has_one_labelled_point_per_channel():
    points = [("final", 0.4, 0.2), ("ranked", 0.7, 0.1), ("<pop>", 0.1, 0.05)]
    svg = scatter_svg("t", points, "ild@10", "ndcg@10")
    assert svg.count('<g class="point">') == 3 and svg.count("<circle") == 3
    assert "&lt;pop&gt;" in svg and "<pop>" not in svg
    # the point further right has the larger ILD, the higher one the larger NDCG
    cx = {m[0]: float(m[1]) for m in re.findall(r'<title>([^:<]+):[^<]*</title><circle cx="([\d.]+)"', svg)}
    assert cx["ranked"] > cx["final"] > cx["&lt;pop&gt;"]
    # without exclude-seen numbers the page headlines the lists as ranked, and says so
    result = {"date": "2026-11-05", "recall": {"a": {"recall@10": 0.1, "ndcg@10": 0.1, "ild@10": 0.3}}}
    page = evaluation_html("2026-11-05", {**result, "ranking": {}})
    assert "Seen items kept" in page and page.count('<g class="point">') == 1


# -- the job on a hand-made lake ----------------------------------------------------------------
D = dt.date(2026, 11, 5)
P, Q = D - dt.timedelta(days=1), D - dt.timedelta(days=2)
CATEGORIES = {"i1": "A", "i2": "A", "i3": "B", "i4": "B", "i5": "C", "i6": "C", "i7": "A", "i8": "B"}
# Before D: u1 clicked i1, liked i2; u2 clicked i3, i1; u3 clicked i2 and was only shown i5 (r = 0).
# On D: u1 clicks i1 (seen) and i3; u2 clicks i4; u3 clicks i5; u3 is shown i6 (not relevant).
EVENTS = [
    ("u1", "i1", "click", Q), ("u2", "i3", "click", Q), ("u3", "i5", "impression", Q),
    ("u3", "i2", "click", Q), ("u1", "i2", "like", P), ("u2", "i1", "click", P),
    ("u1", "i1", "click", D), ("u1", "i3", "click", D), ("u2", "i4", "click", D),
    ("u3", "i5", "click", D), ("u3", "i6", "impression", D),
]  # fmt: skip
SEEN = {"u1": {"i1", "i2"}, "u2": {"i3", "i1"}, "u3": {"i2"}}
TRUTH = {"u1": {"i1", "i3"}, "u2": {"i4"}, "u3": {"i5"}}
# dt = P holds the lists served on D; the Q and D partitions hold perfect lists that must not be read.
FINAL = {
    P: {"u1": ["i1", "i4", "i3"], "u2": ["i4", "i5", "i6"], "u3": ["i6", "i7", "i8"]},
    Q: {"u1": ["i3", "i1"], "u2": ["i4"], "u3": ["i5"]},
    D: {"u1": ["i3", "i1"], "u2": ["i4"], "u3": ["i5"]},
}
RANKED = {
    P: {"u1": ["i2", "i1", "i5", "i3"], "u2": ["i3", "i6", "i4"], "u3": ["i5", "i2", "i8"]},
    D: {"u1": ["i3"], "u2": ["i4"], "u3": ["i5"]},
}
VECTORS = {f"i{n}": [math.cos(n), math.sin(n), 0.5] for n in range(1, 8)}  # i8 has no vector


def served_rows(lists_by_day, ranked: bool):
    rows = []
    for day, lists in lists_by_day.items():
        for user, items in lists.items():
            for rank, item in enumerate(items, start=1):
                score = 1.0 / rank
                if ranked:
                    rows.append(
                        (user, item, score, rank, {"click": score}, ["swing"], {"swing": score}, "r1", day)
                    )
                else:
                    rows.append((user, item, rank, score, ["swing"], "because", "r1", day))
    return rows


@pytest.fixture
def served_lake(spark, lake):
    ts = lambda day: dt.datetime.combine(day, dt.time(12))  # noqa: E731
    events = [(u, i, e, ts(d), None, None, d) for u, i, e, d in EVENTS]
    lake.overwrite_dates(
        "events",
        spark.createDataFrame(
            events,
            "user_id string, item_id string, event string, ts timestamp, session_id string, "
            "dwell_ms long, dt date",
        ),
        [Q, P, D],
    )
    lake.overwrite(
        "items",
        spark.createDataFrame(
            [(i, c, None, None, None) for i, c in CATEGORIES.items()],
            "item_id string, category string, author_id string, tags array<string>, created_ts timestamp",
        ),
    )
    lake.overwrite(
        "item_embeddings",
        spark.createDataFrame(
            [(i, "deepwalk", v) for i, v in VECTORS.items()],
            "item_id string, method string, vector array<float>",
        ),
        metadata={"date": str(P), "method": "deepwalk"},
    )
    lake.overwrite_dates(
        "recommendations",
        spark.createDataFrame(
            served_rows(FINAL, ranked=False),
            "user_id string, item_id string, rank int, score double, channels array<string>, reason string, "
            "model_version string, dt date",
        ),
        list(FINAL),
    )
    lake.overwrite_dates(
        "ranked_candidates",
        spark.createDataFrame(
            served_rows(RANKED, ranked=True),
            "user_id string, item_id string, score double, rank int, task_scores map<string,double>, "
            "channels array<string>, channel_scores map<string,double>, model_version string, dt date",
        ).withColumn(
            "channel_ranks", F.map_from_arrays("channels", F.transform("channels", lambda _: F.lit(1)))
        ),
        list(RANKED),
    )
    return lake


# u1, u2, u3 hash to buckets 72, 26, 35 of layer rerank: u1 is in the holdout, u2 and u3 in mmr.
AB_SPEC = {"layers": [{"layer": "rerank", "holdout": [[70, 79]], "variants": {"mmr": [[20, 39]]}}]}
AB_VARIANT = {"u1": "holdout", "u2": "mmr", "u3": "mmr"}


def write_ab_buckets(spark, lake):
    """`ab_buckets` as the buckets job of P writes it, then a version of D+1 that D must not use."""
    from recsys_spark.experiments.buckets import parse_spec, variant_of

    spec = parse_spec(AB_SPEC)
    users = spark.createDataFrame([(u,) for u in AB_VARIANT], "user_id string")
    meta = {"experiments": spec.to_json()}
    lake.overwrite("ab_buckets", variant_of(users, spec), metadata={**meta, "date": str(P)})
    later = variant_of(users, spec).withColumn("variant", F.lit("mmr"))
    lake.overwrite("ab_buckets", later, metadata={**meta, "date": str(D + dt.timedelta(days=1))})


class Tables(HTMLParser):
    """Every `<table>` of a page by its class: rows of (the `<tr>`'s attributes, its cells' texts)."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[tuple[dict, list[str]]]] = {}
        self.sections: list[str] = []
        self._rows = self._cell = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "table":
            self._rows = self.tables.setdefault(attrs.get("class"), [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append((attrs, []))
        elif tag in ("td", "th") and self._rows:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._rows[-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._rows = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def number(text: str):
    return None if text == "—" else float(text.replace(",", ""))


def check_ab_and_business(result: dict, page: str) -> None:
    """The A/B readout and the business metrics of the hand-made lake, in the JSON and on the page."""
    ab = result["variants"]
    assert (ab["layer"], ab["spec"], ab["reference"]) == ("rerank", "ab_buckets", "holdout")
    # Served view, K = 2: u1 [i4, i3] for {i3}; u2 [i4, i5] for {i4}; u3 [i6, i7] for {i5}.
    assert ab["by_variant"]["holdout"]["users"] == 1 and ab["by_variant"]["mmr"]["users"] == 2
    assert ab["by_variant"]["holdout"]["metrics"]["ndcg@2"]["mean"] == pytest.approx(1 / math.log2(3))
    assert ab["by_variant"]["mmr"]["metrics"]["recall@2"]["mean"] == pytest.approx(0.5)
    vs = ab["by_variant"]["mmr"]["vs_holdout"]["recall@2"]
    # mmr's resampled means are 0, 1/2 or 1 against the holdout's constant 1: [-1, 0] holds 0.
    assert (vs["diff"], vs["low"], vs["high"], vs["significant"]) == (-0.5, -1.0, 0.0, False)

    # Business metrics of D, hand-computed from EVENTS. Active on D: u1, u2, u3 (4 clicks); shown: u3
    # i6 (1 of 8 items). No day after D is in the lake: retention unknown. The assignment is the
    # ab_buckets version of P (the D+1 one would put u1 in mmr).
    business = result["business"]
    assert (business["date"], business["layer"]) == (str(D), "rerank")
    expected_day = {
        ("all", "all"): (3, 4, 1, 0.125),
        ("rerank", "holdout"): (1, 2, 0, 0.0),
        ("rerank", "mmr"): (2, 2, 1, 0.125),
    }
    got = {(r["layer"], r["variant"]): r for r in business["rows"]}
    assert list(got) == list(expected_day)
    for key, (active, clicks, shown, covered) in expected_day.items():
        row = got[key]
        assert (row["dt"], row["active_users"], row["clicks"], row["items_shown"]) == (
            str(D),
            active,
            clicks,
            shown,
        )
        assert row["coverage"] == pytest.approx(covered) and row["catalog_items"] == 8
        assert row["clicks_per_user"] == pytest.approx(clicks / active) and row["dwell_ms"] == 0
        assert row["retention_1d"] is row["retention_7d"] is row["lt7"] is None
        assert (row["days_after"], row["complete"]) == (0, False)
    # Earlier days: on Q u1, u2, u3 were active, of whom u1 and u2 again on P; on P u1 and u2, both on D.
    expected_earlier = {
        (str(Q), "all", "all"): (3, 2 / 3, 2),
        (str(Q), "rerank", "holdout"): (1, 1.0, 2),
        (str(Q), "rerank", "mmr"): (2, 0.5, 2),
        (str(P), "all", "all"): (2, 1.0, 1),
        (str(P), "rerank", "holdout"): (1, 1.0, 1),
        (str(P), "rerank", "mmr"): (1, 1.0, 1),
    }
    earlier = {(r["dt"], r["layer"], r["variant"]): r for r in business["earlier"]}
    assert list(earlier) == list(expected_earlier)
    for key, (active, retention, after) in expected_earlier.items():
        row = earlier[key]
        assert (row["active_users"], row["days_after"], row["lt7"]) == (active, after, None)
        assert row["retention_1d"] == pytest.approx(retention)

    # The page: both sections, outside "Other result fields", with the numbers of the JSON.
    tables = Tables(page)
    assert {"ab-variants", "business"} <= set(tables.sections)
    facts = {cells[0] for _, cells in tables.tables["facts"]}  # "Run" and "Other result fields"
    assert "users_evaluated" in facts and not facts & {"variants", "business"}
    users = {attrs["data-variant"]: number(cells[1]) for attrs, cells in tables.tables["ab-users"][1:]}
    assert users == {"holdout": 1, "mmr": 2}
    shown = {(a["data-metric"], a["data-variant"]): cells for a, cells in tables.tables["ab-metrics"][1:]}
    assert set(shown) == {(m, v) for m in ("recall@2", "ndcg@2", "hitrate@2") for v in AB_VARIANT.values()}
    for (metric, variant), cells in shown.items():
        cells = cells[-6:]  # the metric's own cell spans the rows of its group
        assert cells[0] == variant
        m = ab["by_variant"][variant]["metrics"][metric]
        assert number(cells[1]) == pytest.approx(m["mean"], abs=5e-5)
        low, high = (number(x) for x in cells[2].strip("[]").split(", "))
        assert (low, high) == (pytest.approx(m["low"], abs=5e-5), pytest.approx(m["high"], abs=5e-5))
        if variant == "holdout":
            assert cells[3:] == ["reference", "—", "—"]
        else:
            d = ab["by_variant"][variant]["vs_holdout"][metric]
            assert number(cells[3]) == pytest.approx(d["diff"], abs=5e-5)
            assert cells[5] == ("✔ significant" if d["significant"] else "not significant")
    day_rows = {(a["data-layer"], a["data-variant"]): cells for a, cells in tables.tables["business-day"][1:]}
    head = tables.tables["business-day"][0][1]
    assert list(day_rows) == list(expected_day)
    for key, cells in day_rows.items():
        row = dict(zip(head, cells))
        assert number(row["active_users"]) == expected_day[key][0]
        assert number(row["coverage"]) == pytest.approx(expected_day[key][3])
        assert row["retention_1d"] == "—"
    head = tables.tables["business-earlier"][0][1]
    before = {
        (a["data-dt"], a["data-layer"], a["data-variant"]): dict(zip(head, cells))
        for a, cells in tables.tables["business-earlier"][1:]
    }
    assert list(before) == list(expected_earlier)
    for key, (active, retention, _) in expected_earlier.items():
        assert number(before[key]["active_users"]) == active
        assert number(before[key]["retention_1d"]) == pytest.approx(retention, abs=5e-5)
        assert before[key]["lt7"] == "—" and before[key]["complete"] == "no"

    # A significant difference is marked as such.
    flipped = json.loads(json.dumps(result))
    flipped["variants"]["by_variant"]["mmr"]["vs_holdout"]["recall@2"]["significant"] = True
    rows = Tables(evaluation_html(str(D), flipped)).tables["ab-metrics"]
    marks = {(a["data-metric"], a["data-variant"]): cells[-1] for a, cells in rows[1:]}
    assert marks["recall@2", "mmr"] == "✔ significant" and marks["ndcg@2", "mmr"] == "not significant"


def test_final_and_ranked_read_the_day_before_and_exclude_seen(spark, served_lake, capsys):
    from recsys_spark import cli
    from recsys_spark.evaluate.job import table_lists

    lake = served_lake
    write_ab_buckets(spark, lake)
    argv = ["evaluate", "--lake", lake.root, "--date", str(D), "--ks", "2", "--channels", "final", "ranked"]
    ab = ["--variant-by", "rerank", "--bootstrap", "200"]
    assert cli.main([*argv, "popularity", *ab], spark=spark) == 0
    with open(lake.path("_reports", "evaluation", f"{D}.json")) as f:
        result = json.load(f)
    # Lists as served (seen kept), K = 2. final: u1 [i1, i4], u2 [i4, i5], u3 [i6, i7];
    # ranked: u1 [i2, i1], u2 [i3, i6], u3 [i5, i2].
    kept = {
        "final": {"u1": ["i1", "i4"], "u2": ["i4", "i5"], "u3": ["i6", "i7"]},
        "ranked": {"u1": ["i2", "i1"], "u2": ["i3", "i6"], "u3": ["i5", "i2"]},
    }
    # Seen removed before the cut, refilled from deeper ranks: final u1 [i4, i3]; ranked u1 [i5, i3],
    # u2 [i6, i4], u3 [i5, i8]. Popularity (clicks before D: i1 2, i2 1, i3 1) keeps K where it can.
    unseen = {
        "final": {"u1": ["i4", "i3"], "u2": ["i4", "i5"], "u3": ["i6", "i7"]},
        "ranked": {"u1": ["i5", "i3"], "u2": ["i6", "i4"], "u3": ["i5", "i8"]},
        "popularity": {"u1": ["i3"], "u2": ["i2"], "u3": ["i1", "i3"]},
    }
    kept["popularity"] = {u: ["i1", "i2"] for u in TRUTH}
    truth_unseen = {u: t - SEEN[u] for u, t in TRUTH.items()}
    assert truth_unseen == {"u1": {"i3"}, "u2": {"i4"}, "u3": {"i5"}}
    assert result["recall"]["final"]["recall@2"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert result["recall"]["ranked"]["recall@2"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert result["recall_exclude_seen"]["final"]["recall@2"] == pytest.approx(2 / 3)
    assert result["recall_exclude_seen"]["ranked"]["recall@2"] == pytest.approx(1.0)
    assert set(result["recall"]) == set(result["recall_exclude_seen"]) == {"final", "ranked", "popularity"}
    assert result["users_evaluated"] == result["users_evaluated_exclude_seen"] == 3
    assert result["sources"]["final"].startswith(f"recommendations dt={P}")
    assert result["sources"]["ranked"].startswith(f"ranked_candidates dt={P}")
    assert result["sources"]["diversity"].startswith("item_embeddings[deepwalk]")  # node2vec absent

    # every beyond-accuracy number, from the references on the hand-worked lists
    n_i = {"i1": 2, "i2": 2, "i3": 1}  # users with r > 0 before D; N = 3
    users = sorted(TRUTH)
    for block, expected in (("recall", kept), ("recall_exclude_seen", unseen)):
        for name, lists in expected.items():
            got = result[block][name]
            assert got["coverage@2"] == got["coverage"] == pytest.approx(ref_coverage(lists, users, 8, 2))
            assert got["ild@2"] == pytest.approx(ref_ild(lists, users, VECTORS, 2), abs=1e-6)
            assert got["category_ild@2"] == pytest.approx(ref_category_ild(lists, users, CATEGORIES, 2))
            assert got["novelty@2"] == pytest.approx(ref_novelty(lists, users, n_i, 3, 2))
    assert result["recall"]["final"]["coverage"] == pytest.approx(5 / 8)

    # the HTML headlines the exclude-seen numbers, and plots one point per channel
    with open(lake.path("_reports", "evaluation", f"{D}.html")) as f:
        page = f.read()
    assert "Seen items excluded" in page and "recall_exclude_seen" in page
    assert page.count('<g class="point">') == 3
    check_ab_and_business(result, page)
    printed = capsys.readouterr().out
    assert "seen items excluded" in printed and "ild@2" in printed
    assert "business rerank/mmr: active users 2" in printed

    # a day whose D−1 has no partition: the channel is skipped, not scored 0
    users_df = spark.createDataFrame([(u,) for u in users], "user_id string")
    assert table_lists(lake, "final", Q, users_df, 2) == (None, None)
    assert table_lists(lake, "ranked", P, users_df, 2) == (None, None)  # ranked has no dt = Q
    # without exclude-seen: the lists as served only
    assert table_lists(lake, "ranked", D, users_df, 2) == (
        (kept["ranked"], None),
        f"ranked_candidates dt={P} (r1)",
    )

    # Over-exposed pairs are withheld like seen ones (recall's rule): u3 was shown i5 once before D, so
    # with --max-exposures 1 i5 leaves u3's truth (now empty: u3 is not scored) and every list of u3.
    assert cli.main([*argv, "--max-exposures", "1"], spark=spark) == 0
    with open(lake.path("_reports", "evaluation", f"{D}.json")) as f:
        exposed = json.load(f)
    assert exposed["users_evaluated"] == 3 and exposed["users_evaluated_exclude_seen"] == 2
    assert exposed["recall"] == {k: v for k, v in result["recall"].items() if k in exposed["recall"]}
    assert exposed["recall_exclude_seen"]["final"]["recall@2"] == pytest.approx(
        1.0
    )  # u1 [i4, i3], u2 [i4, i5]
    assert exposed["recall_exclude_seen"]["ranked"]["recall@2"] == pytest.approx(
        1.0
    )  # u1 [i5, i3], u2 [i6, i4]


# -- A/B readout ------------------------------------------------------------------------------------
def test_bootstrap_interval_matches_the_normal_approximation():
    from recsys_spark.evaluate.variants import bootstrap_means, interval

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    low, high = interval(bootstrap_means(x, 4000, np.random.default_rng(1)))
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # the mean's 95% interval from the CLT
    assert low == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_variant_readout_means_intervals_and_significance():
    from recsys_spark.evaluate.variants import variant_readout

    rng = random.Random(2)
    items = [f"i{n}" for n in range(20)]
    truth, lists, variant = {}, {}, {}
    for n in range(600):
        user = f"u{n}"
        truth[user] = {items[0]}
        arm = ["holdout", "good", "same"][n % 3]
        variant[user] = arm
        # good lists put the relevant item first 80% of the time, the others 30%
        first = rng.random() < (0.8 if arm == "good" else 0.3)
        lists[user] = [items[0], *items[1:5]] if first else items[1:6]
    truth["u_empty"], variant["u_empty"] = set(), "good"  # skipped: nothing relevant
    out = variant_readout(lists, truth, variant, "holdout", [1], resamples=2000, seed=3)
    for arm, entry in out.items():
        mine = [u for u in truth if variant[u] == arm and truth[u]]
        hits = [1.0 if lists[u][0] in truth[u] else 0.0 for u in mine]
        assert entry["users"] == len(mine) == 200
        m = entry["metrics"]["ndcg@1"]
        assert m["mean"] == pytest.approx(sum(hits) / len(hits))
        assert m["low"] < m["mean"] < m["high"]
    assert "vs_holdout" not in out["holdout"]
    assert out["good"]["vs_holdout"]["ndcg@1"]["significant"]  # 0.8 against 0.3, 200 users each
    assert out["good"]["vs_holdout"]["ndcg@1"]["diff"] == pytest.approx(
        out["good"]["metrics"]["ndcg@1"]["mean"] - out["holdout"]["metrics"]["ndcg@1"]["mean"]
    )
    same = out["same"]["vs_holdout"]["recall@1"]
    assert same["low"] < same["diff"] < same["high"]
