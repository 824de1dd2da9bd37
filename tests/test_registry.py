"""The model registry's guarantees (docs/training.md "What a registry reader may rely on"), on tiny fake
version folders: backfills never touch what serves, a SIGKILL at any publish step leaves a complete
serving version, and concurrent publishers never lose an update silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from registry_fakes import _full, _stage

from recsys_spark.train.job import publish_full, publish_incremental
from recsys_spark.train.registry import (
    FULL,
    INCREMENTAL,
    Registry,
    RegistryConflict,
    full_update,
    incremental_update,
)

ROOT = str(Path(__file__).resolve().parents[1])


def _inc(version: str, full: dict) -> dict:
    return {"version": version, "base": full["version"], "base_id": full.get("id"), "watermark": ""}


def _vector_versions(lake) -> set[str]:
    rows = lake.read("item_vectors").select("model_version").distinct().collect()
    return {r[0] for r in rows}


def _on_disk(registry: Registry) -> dict:
    return json.loads(Path(registry.root, "LATEST.json").read_text())


def test_backfill_keeps_serving_and_every_referenced_version(spark, lake):
    registry = Registry.for_model(lake, "two_tower")
    publish_full(
        spark, lake, registry, _stage(registry, "full-2026-11-02"), _full("full-2026-11-02"), 7, True
    )
    started = registry.latest()
    inc = _inc("inc-2026-11-03-001", started["full"])
    staging = _stage(registry, inc["version"], started["full"].get("id"))
    publish_incremental(spark, lake, registry, staging, inc, started, True)

    # A backfill: a full run for a day older than the current full version.
    backfill = _stage(registry, "full-2026-11-01")
    publish_full(spark, lake, registry, backfill, _full("full-2026-11-01"), 7, True)

    latest = _on_disk(registry)
    assert latest["serving"] == "inc-2026-11-03-001" and latest["full"]["version"] == "full-2026-11-02"
    assert _vector_versions(lake) == {"full-2026-11-01", "full-2026-11-02", "inc-2026-11-03-001"}
    assert Path(registry.version_url(INCREMENTAL, "inc-2026-11-03-001"), "manifest.json").exists()
    assert Path(registry.version_url(FULL, "full-2026-11-01"), "manifest.json").exists()


def test_incremental_trained_before_a_full_fails_instead_of_rolling_it_back(spark, lake):
    registry = Registry.for_model(lake, "two_tower")
    publish_full(
        spark, lake, registry, _stage(registry, "full-2026-11-02"), _full("full-2026-11-02"), 7, True
    )
    started = registry.latest()  # the incremental reads the pointer at its start ...
    publish_full(
        spark, lake, registry, _stage(registry, "full-2026-11-03"), _full("full-2026-11-03"), 7, True
    )
    inc = _inc("inc-2026-11-03-001", started["full"])  # ... and publishes after a newer full went in
    staging = _stage(registry, inc["version"], started["full"]["id"])
    with pytest.raises(
        RegistryConflict, match="full version changed from full-2026-11-02 to full-2026-11-03"
    ):
        publish_incremental(spark, lake, registry, staging, inc, started, True)
    latest = _on_disk(registry)
    assert latest["full"]["version"] == latest["serving"] == "full-2026-11-03"
    assert latest["incremental"] is None
    assert "inc-2026-11-03-001" not in _vector_versions(lake)  # the loser left nothing behind
    assert registry.versions(INCREMENTAL) == []


def _race(registry: Registry, jobs: list[tuple[str, str, callable]]) -> list[object]:
    """Publish concurrently: every publisher reads the same pointer generation before any switches."""
    barrier = threading.Barrier(len(jobs))
    outcomes: list[object] = [None] * len(jobs)

    def run(i: int, slot: str, version: str, update) -> None:
        first = [True]

        def synchronised(current: dict):
            if first[0]:
                first[0] = False
                barrier.wait(timeout=30)
            return update(current)

        try:
            staging = _stage(registry, version, (registry.latest().get("full") or {}).get("id"))
            outcomes[i] = registry.publish(staging, slot, version, synchronised)
        except RegistryConflict as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_two_concurrent_incrementals_one_wins_the_other_names_the_conflict(tmp_path):
    registry = Registry(str(tmp_path / "_models" / "two_tower"))
    registry.publish(
        _stage(registry, "full-2026-11-02"), FULL, "full-2026-11-02", full_update(_full("full-2026-11-02"))
    )
    started = registry.latest()
    jobs = [
        (INCREMENTAL, v, incremental_update(_inc(v, started["full"]), started))
        for v in ("inc-2026-11-03-001", "inc-2026-11-03-002")
    ]
    outcomes = _race(registry, jobs)
    won = [o for o in outcomes if isinstance(o, dict)]
    lost = [o for o in outcomes if isinstance(o, RegistryConflict)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "incremental version changed from None to inc-2026-11-03-00" in str(lost[0])
    latest = _on_disk(registry)
    assert latest == registry.latest() and latest["serving"] == won[0]["serving"]
    assert latest["generation"] == started["generation"] + 1
    assert registry.versions(INCREMENTAL) == [latest["serving"]]  # the loser's folder is gone


@pytest.mark.parametrize("inc_first", [True, False])
def test_a_concurrent_full_is_never_rolled_back(tmp_path, inc_first):
    registry = Registry(str(tmp_path / "_models" / "two_tower"))
    registry.publish(
        _stage(registry, "full-2026-11-02"), FULL, "full-2026-11-02", full_update(_full("full-2026-11-02"))
    )
    started = registry.latest()
    inc = ("inc-2026-11-03-001", incremental_update(_inc("inc-2026-11-03-001", started["full"]), started))
    full = ("full-2026-11-03", full_update(_full("full-2026-11-03")))
    backfill = ("full-2026-11-01", full_update(_full("full-2026-11-01")))
    jobs = [(INCREMENTAL, *inc), (FULL, *full), (FULL, *backfill)]
    outcomes = _race(registry, jobs if inc_first else jobs[::-1])
    latest = _on_disk(registry)
    assert latest["full"]["version"] == latest["serving"] == "full-2026-11-03", outcomes
    assert latest["incremental"] is None
    # The incremental either lost naming the conflict, or won first and the full re-based on it.
    for o in outcomes:
        assert isinstance(o, dict) or "full version changed" in str(o), outcomes
    assert {"full-2026-11-01", "full-2026-11-02", "full-2026-11-03"} <= set(registry.versions(FULL))


WORKER = r"""
import json, os, sys
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from registry_fakes import _full, _stage
from recsys_spark.train.registry import FULL, KILL_ENV, Registry, full_update


class DeltaVectors:
    # item_vectors through delta-rs only, so the killed process needs no Spark.
    def __init__(self, uri):
        self.uri = uri

    def commit(self, version, folder):
        vectors = pq.read_table(f"{folder}/item_vectors.parquet")
        vocab = pq.read_table(f"{folder}/vocab/item").to_pydict()
        ids = dict(zip(vocab["idx"], vocab["id"]))
        n = vectors.num_rows
        rows = pa.table(
            {
                "item_id": [ids[i] for i in vectors["item_idx"].to_pylist()],
                "model_version": [version] * n,
                "vector": vectors["vector"],
            }
        )
        if DeltaTable.is_deltatable(self.uri):
            write_deltalake(self.uri, rows, mode="overwrite", predicate=f"model_version = '{version}'")
        else:
            write_deltalake(self.uri, rows, partition_by=["model_version"])

    def versions(self):
        if not DeltaTable.is_deltatable(self.uri):
            return set()
        files = DeltaTable(self.uri).file_uris()
        return {f.split("model_version=", 1)[1].split("/", 1)[0] for f in files}

    def drop(self, versions):
        listed = ", ".join(f"'{v}'" for v in versions)
        DeltaTable(self.uri).delete(f"model_version IN ({listed})")


lake, first, second, kill = sys.argv[2:6]
registry = Registry(f"{lake}/_models/two_tower")
store = DeltaVectors(f"{lake}/item_vectors")
registry.publish(_stage(registry, first), FULL, first, full_update(_full(first)), store, keep_full=1)
if kill != "none":
    os.environ[KILL_ENV] = kill
full = {**_full(second), "id": "rerun"}
registry.publish(_stage(registry, second), FULL, second, full_update(full), store, keep_full=1)
"""

STEPS = ["placed", "vectors", "pointer", "latest", "gc", "none"]


CASES = [("full-2026-11-02", step) for step in STEPS]  # a new version over the serving one
CASES += [("full-2026-11-01", step) for step in ("placed", "vectors", "latest")]  # re-run of the serving one


@pytest.mark.parametrize(
    ("second", "step"), CASES, ids=[f"{'new' if s[-1] == '2' else 'rerun'}-{k}" for s, k in CASES]
)
def test_sigkill_at_any_publish_step_leaves_a_complete_serving_version(spark, tmp_path, step, second):
    from recsys_spark.lake.delta import Lake

    root = str(tmp_path / "lake")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_TEST_KILL_AT"}
    done = subprocess.run(
        [sys.executable, str(script), ROOT, root, "full-2026-11-01", second, step],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == (0 if step == "none" else -9), done.stderr
    lake, registry = Lake(spark, root), Registry(f"{root}/_models/two_tower")
    switched = step in ("latest", "gc", "none")
    for pointer in (_on_disk(registry), registry.latest()):  # the readers' entry point and the resolver
        serving = pointer["serving"]
        assert serving == (second if switched else "full-2026-11-01") or (
            step == "pointer" and serving == second
        )
        assert Path(registry.version_url(FULL, serving), "manifest.json").exists()
        rows = lake.read("item_vectors").filter(f"model_version = '{serving}'")
        assert rows.count() == 4 and rows.filter("vector is null").count() == 0
    if not switched:
        assert _on_disk(registry)["full"]["id"] == "id-full-2026-11-01"  # the previous publish still serves
    assert registry.latest()["full"]["id"] == (
        "rerun" if step not in ("placed", "vectors") else "id-full-2026-11-01"
    )

    # The next publish repairs LATEST.json and collects what the killed one left behind.
    registry.publish(
        _stage(registry, "full-2026-11-04"),
        FULL,
        "full-2026-11-04",
        full_update(_full("full-2026-11-04")),
        keep_full=1,
    )
    assert _on_disk(registry) == registry.latest() and registry.versions(FULL) == ["full-2026-11-04"]


def test_gated_clean_up_of_the_last_vectors_is_not_refused(spark, lake):
    """Dropping unreferenced versions publishes no rows, so the gate's "there are vectors" check must
    not refuse it (train enables gates and collects garbage after the switch); an empty write still is."""
    from recsys_spark.quality.gate import QualityGateError, disable_gates, enable_gates

    rows = [("i1", "full-2026-11-01", [1.0, 0.0]), ("i2", "full-2026-11-01", [0.0, 1.0])]
    lake.overwrite(
        "item_vectors",
        spark.createDataFrame(rows, "item_id string, model_version string, vector array<float>"),
    )
    before = lake.version("item_vectors")
    enable_gates(lake, "2026-11-02", tables=["item_vectors"])
    try:
        empty = spark.createDataFrame([], lake.read("item_vectors").schema)
        with pytest.raises(QualityGateError):
            lake.overwrite_partitions("item_vectors", empty, "model_version", ["full-2026-11-01"])
        assert lake.version("item_vectors") == before
        lake.drop_partitions("item_vectors", "model_version", ["full-2026-11-01"])
    finally:
        disable_gates(lake)
    assert lake.version("item_vectors") == before + 1
    assert lake.read("item_vectors").count() == 0
