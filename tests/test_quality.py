"""Data quality: suites as data, `validate`, drift tolerances, and publish gates (a whole day's gates and
`validate` over every table of its lake are test_pipeline's, on the run-daily lake)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from recsys_spark import cli
from recsys_spark.lake import Lake
from recsys_spark.lake.tables import known_tables, table_schema
from recsys_spark.quality import suites as S
from recsys_spark.quality.gate import QualityGateError, disable_gates, enable_gates
from recsys_spark.quality.validate import validate_frame

# Every table DESIGN.md names, including those the samples and training stages add.
DESIGN_TABLES = {
    "events",
    "items",
    "users",
    "quarantine",
    "daily_counts",
    "user_stats",
    "item_stats",
    "itemcf_sim",
    "swing_sim",
    "usercf_sim",
    "item_graph",
    "walks",
    "item_embeddings",
    "truth_items",
    "truth_users",
    "recall_samples",
    "rank_samples",
    "item_vectors",
}
START = dt.date(2024, 3, 1)  # in the past whatever the clock says, so "not in the future" holds
DAY = START + dt.timedelta(days=1)


def _summary(lake, table: str, day) -> dict:
    return json.loads(Path(lake.path("_reports", "quality", table, f"{day}.json")).read_text())


def _failed(outcome) -> dict[str, str]:
    return {c.name: c.severity for c in outcome.checks if not c.success}


# -- suites as data (no Spark) ----------------------------------------------------------------
def test_every_table_has_a_suite():
    assert DESIGN_TABLES | set(known_tables()) <= set(S.known_suites())


@pytest.mark.parametrize("table", S.known_suites())
def test_suite_loads_and_refers_only_to_real_columns(table):
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    suite = S.load_suite(table)
    assert suite.table == table
    assert any(e["severity"] == "critical" for e in suite.expectations)
    for raw in suite.expectations:  # GE itself accepts each one (type and kwargs)
        ExpectationConfiguration(**raw).to_domain_obj()
    contract = table_schema(table)
    if contract is None:  # recall_samples & co. until their contracts land: keyed on DESIGN's columns
        return
    derived = {d.name for d in suite.derived}
    indicators = set(S.drift_indicator_names(suite))
    known = set(contract.column_names) | derived | indicators
    for raw in suite.expectations:
        assert S.columns_of(raw) <= known, (raw["type"], S.columns_of(raw) - known)
    for item in suite.drift:
        assert item.column is None or item.column in contract.column_names
    for d in suite.derived:
        if d.missing_from:
            assert d.missing_from["column"] in contract.column_names


def test_docs_list_every_suite_with_its_expectations():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "quality.md").read_text()
    for table in S.known_suites():
        section = docs.split(f"#### `{table}`", 1)[1].split("####", 1)[0]
        for raw in S.load_suite(table).expectations:
            assert raw["description"] in section, (table, raw["description"])


def test_validate_help_lists_its_options(capsys):
    assert cli.main(["validate", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--table",
        "--date",
        "--volume-tolerance",
        "--mix-tolerance",
        "--max-future-hours",
        "--only-critical",
    ):
        assert flag in out


def test_malformed_suite_is_refused(tmp_path, monkeypatch):
    (tmp_path / "expectations").mkdir()
    bad = {
        "table": "x",
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, "severity": "fatal"}
        ],
    }
    (tmp_path / "expectations" / "x.json").write_text(json.dumps(bad))
    monkeypatch.setenv("RECSYS_SCHEMAS_DIR", str(tmp_path))
    S.load_suite.cache_clear()
    try:
        with pytest.raises(S.SuiteError, match="severity 'fatal'"):
            S.load_suite("x")
    finally:
        S.load_suite.cache_clear()


def test_drift_bounds_follow_the_tolerances():
    drifts = [S.Drift("row_count"), S.Drift("mix", "event", ("click",), "mix")]
    out = S.drift_expectations(
        drifts, {"row_count": 1000, "share:event_share_click": 0.2}, "dt = x", {"volume": 0.5, "mix": 0.05}
    )
    assert [(e["type"], e["kwargs"]) for e in out] == [
        ("expect_table_row_count_to_be_between", {"min_value": 500, "max_value": 1500}),
        (
            "expect_column_mean_to_be_between",
            {
                "column": "event_share_click",
                "min_value": pytest.approx(0.15),
                "max_value": pytest.approx(0.25),
            },
        ),
    ]
    assert all(e["severity"] == "warning" for e in out)


# -- a small lake: two generated days and one similarity table ---------------------------------
# Gates and `validate` over every table of a whole daily run are test_pipeline's (its run-daily lake
# holds every table); the tests here need events of two days and one derived table.
@pytest.fixture(scope="module")
def good_lake(spark, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("quality") / "lake")
    args = ["--users", "150", "--items", "80", "--days", "2", "--seed", "5", "--start-date", str(START)]
    assert cli.main(["generate", "--lake", root, *args], spark=spark) == 0
    assert cli.main(["similarity", "--lake", root, "--date", str(DAY), "--algo", "swing"], spark=spark) == 0
    return Lake(spark, root)


@pytest.mark.slow
def test_usage_errors_exit_2(spark, good_lake, capsys):
    root = ["--lake", good_lake.root]
    assert cli.main(["validate", *root, "--table", "nope"], spark=spark) == 2
    assert "no expectation suite for table 'nope'" in capsys.readouterr().err
    assert cli.main(["validate", *root, "--table", "events", "--date", "2020-01-01"], spark=spark) == 2
    assert (
        f"events has no rows for dt = 2020-01-01 (days present: {START} .. {DAY})" in capsys.readouterr().err
    )
    assert cli.main(["validate", *root, "--table", "item_vectors"], spark=spark) == 2
    assert "table 'item_vectors' does not exist" in capsys.readouterr().err
    assert cli.main(["validate", *root], spark=spark) == 2
    assert "--table is required" in capsys.readouterr().err


@pytest.mark.slow
def test_volume_drift_only_warns_and_the_tolerance_is_a_flag(spark, good_lake, capsys):
    # Yesterday with a tenth of its events: a warning (exit 0); a wide enough tolerance silences it.
    events = good_lake.read("events")
    baseline = events.filter(F.col("dt") == F.lit(START))
    today = events.filter(F.col("dt") == F.lit(DAY)).limit(int(baseline.count() * 0.1))
    outcome = validate_frame(
        spark,
        today,
        "events",
        lake=None,
        date=DAY,
        baseline=baseline,
        baseline_label="yesterday",
        write_report=False,
        quick=True,
    )
    failed = _failed(outcome)
    assert outcome.success and outcome.status == "warning"
    assert failed["expect_table_row_count_to_be_between"] == "warning"
    assert failed["expect_column_unique_value_count_to_be_between(user_id)"] == "warning"
    relaxed = validate_frame(
        spark,
        today,
        "events",
        lake=None,
        date=DAY,
        baseline=baseline,
        baseline_label="yesterday",
        tolerances={"volume": 0.95, "mix": 1.0},
        write_report=False,
        quick=True,
    )
    assert relaxed.status == "passed", _failed(relaxed)


def test_output_defects_are_named(spark):
    sims = spark.createDataFrame(
        [
            ("a", "b", 0.9, 1),
            ("a", "c", 0.95, 2),  # score rises with rank
            ("b", "b", 0.5, 1),  # self pair
            ("c", "a", 0.4, 1),
            ("c", "b", 0.3, 3),  # rank gap
            ("d", "a", float("nan"), 1),  # NaN score
            ("e", "a", 1.5, 1),  # cosine above 1
        ],
        "item_id string, sim_item_id string, score double, rank int",
    )
    outcome = validate_frame(spark, sims, "itemcf_sim", write_report=False)
    failed = _failed(outcome)
    assert {
        "expect_column_values_to_be_null(rank_out_of_order)",
        "expect_column_values_to_be_null(self_pair)",
        "expect_column_values_to_be_null(rank_gap)",
        "expect_column_values_to_be_null(score_not_finite)",
        "expect_column_values_to_be_between(score)",
    } <= set(failed)
    gap = next(c for c in outcome.checks if c.column == "rank_gap")
    assert "'c rank 3'" in gap.observed
    vectors = spark.createDataFrame(
        [
            ("i1", "deepwalk", [0.1, 0.2]),
            ("i2", "deepwalk", [0.1, 0.2, 0.3]),
            ("i3", "deepwalk", [float("inf"), 0.0, 0.0]),
        ],
        "item_id string, method string, vector array<float>",
    )
    failed = _failed(validate_frame(spark, vectors, "item_embeddings", write_report=False, quick=True))
    assert failed == {
        "expect_column_values_to_be_null(dim_differs)": "critical",
        "expect_column_values_to_be_null(vector_not_finite)": "critical",
    }
    unit, skewed = [0.6, 0.8], [0.6, 0.9]
    item_vectors = spark.createDataFrame(
        [("i1", "full-2024-03-02", unit), ("i2", "full-2024-03-02", skewed)],
        "item_id string, model_version string, vector array<float>",
    )
    failed = _failed(validate_frame(spark, item_vectors, "item_vectors", write_report=False, quick=True))
    assert failed == {"expect_column_values_to_be_null(not_unit_norm)": "critical"}
    day = dt.date(2024, 3, 2)
    samples = spark.createDataFrame(
        [
            ("u1", "i1", 1, "positive", 2.0, [0.1, 0.2], ["i9"], [0.3], day),
            ("u1", "i2", 1, "easy_negative", 1.0, [0.1, 0.2], ["i9"], [0.3, 0.4], day),  # label, item_dense
            ("u2", "i3", 1, "positive", 1.0, [float("nan"), 0.0], [], [0.3], day),  # a NaN feature
        ],
        "user_id string, item_id string, label int, sample_type string, weight double, "
        "user_dense array<float>, hist array<string>, item_dense array<float>, features_dt date",
    ).withColumn("dt", F.lit(day))
    failed = _failed(validate_frame(spark, samples, "recall_samples", write_report=False, quick=True))
    assert failed == {
        "expect_column_values_to_be_null(label_type_mismatch)": "critical",
        "expect_column_mean_to_be_between(label)": "critical",  # every label is 1
        "expect_column_values_to_be_null(dense_not_finite)": "critical",
        "expect_column_unique_value_count_to_be_between(item_dense_dim)": "critical",
        "expect_column_pair_values_a_to_be_greater_than_b(dt, features_dt)": "critical",  # leakage
        "expect_column_values_to_be_null(features_not_previous_day)": "warning",
    }


# -- gates --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gate_blocks_a_bad_publish_and_the_table_keeps_its_version(spark, good_lake, capsys):
    table = "swing_sim"
    version = good_lake.version(table)
    before = sorted(map(tuple, good_lake.read(table).collect()))
    bad = good_lake.read(table).withColumn(
        "score", F.when(F.col("rank") == 1, F.lit(math.nan)).otherwise(F.col("score"))
    )
    enable_gates(good_lake, DAY)
    try:
        with pytest.raises(QualityGateError) as err:
            good_lake.overwrite(table, bad)
    finally:
        disable_gates(good_lake)
    message = str(err.value)
    assert "quality gate blocked publishing swing_sim" in message
    assert "expect_column_values_to_be_null(score_not_finite)" in message
    assert f"stays at version {version}" in message
    assert good_lake.version(table) == version
    assert sorted(map(tuple, good_lake.read(table).collect())) == before
    summary = _summary(good_lake, table, DAY)
    assert summary["mode"] == "gate" and summary["status"] == "failed"
    assert [c["name"] for c in summary["critical_failed"]] == [
        "expect_column_values_to_be_null(score_not_finite)"
    ]
    assert "every score is finite" in Path(summary["data_docs"]).read_text()
    # With the gate off the same lake publishes again: the gate is the only thing that stopped it.
    assert good_lake.overwrite(table, good_lake.read(table)) == version + 1
