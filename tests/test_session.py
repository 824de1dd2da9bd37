"""Session factory settings that do not need a second JVM."""

from __future__ import annotations

import os
from pathlib import Path

from recsys_spark.session import _delta_jars_configured, delta_available, local_shuffle_partitions


def test_local_sessions_are_sized_to_the_cores(spark):
    assert local_shuffle_partitions(2) == 4
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.ui.enabled") == "false"


def test_delta_jars_are_detected_from_submit_options():
    assert _delta_jars_configured({"spark.jars.packages": "io.delta:delta-spark_2.13:4.0.0"})
    assert _delta_jars_configured({"spark.jars": "/opt/jars/delta-spark_2.13-4.0.0.jar,/opt/x.jar"})
    assert not _delta_jars_configured({"spark.jars": "/opt/x.jar"})


def test_delta_format_is_not_claimed_without_its_jars(spark):
    # No Maven here: the jars are absent, so the lake must fall back to delta-rs.
    assert not delta_available(spark)


def test_single_partition_window_warning_is_quiet_but_other_warnings_stay(spark):
    # Our catalogue-numbering windows made WindowExec log one WARN per plan, ~800 lines per demo run.
    logs = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager
    assert str(logs.getLogger("org.apache.spark.sql.execution.window.WindowExec").getLevel()) == "ERROR"
    assert str(logs.getLogger("org.apache.spark.sql.execution.SparkPlan").getLevel()) != "ERROR"


def test_start_up_noise_is_quieted_unless_the_caller_configured_logging(monkeypatch):
    from recsys_spark.session import QUIET_LOG4J, _quiet_start_up

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    settings: dict[str, str] = {}
    _quiet_start_up(settings, {"spark.driver.extraJavaOptions": "-Xss4m"}, "local[2]")
    assert settings["spark.driver.extraJavaOptions"] == f"-Xss4m -Dlog4j2.configurationFile={QUIET_LOG4J}"
    assert "rootLogger.level = warn" in Path(QUIET_LOG4J).read_text()
    assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1"
    own: dict[str, str] = {}
    _quiet_start_up(own, {"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=/etc/mine"}, "local")
    assert own == {}
