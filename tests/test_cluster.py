"""A real Spark standalone cluster on 127.0.0.1: a master and two 1-core workers started with PySpark's
own `spark-class`, the similarity and walks jobs submitted to it with `spark-submit`, and their tables
compared with a `local` run of the same jobs on a copy of the same lake.

What is compared: Swing's rows exactly (item, neighbour, rank) with scores equal to 1e-12 (sums
of the same terms, added in a partition-dependent order); walks exactly, because every random number
is a hash of (seed, walk id, step, round) (docs/graph.md), so the walks do not depend on partitioning
or machines. The workers share this machine's filesystem, so the lake is a `file://` URI; on a real
cluster it would be shared storage (docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from recsys_spark import cli

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def _environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": _spark_home(),
        # Executors start Python workers with the driver's interpreter; the system python3 lacks our packages.
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(tmp_path / "logs"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_NO_DAEMONIZE": "1",
    }


def _wait_for(log: Path, text: str, count: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and log.read_text(errors="replace").count(text) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"{log.name}: exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"{log.name}: no {count}x {text!r} after {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop what we started and everything it started (executors are the workers' children)."""
    family: list[psutil.Process] = []
    for p in processes:
        try:
            parent = psutil.Process(p.pid)
            family += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for p in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    for p in processes:
        p.wait(timeout=10)


class Cluster:
    """A standalone master and `WORKERS` workers (1 core, 1 GB each) started on 127.0.0.1."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.port = _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.env = _environment(tmp_path)
        self.processes: list[subprocess.Popen] = []
        self.master_log = tmp_path / "master.log"

    def _start(self, log: Path, *args: str) -> subprocess.Popen:
        spark_class = os.path.join(_spark_home(), "bin", "spark-class")
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [spark_class, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start(self) -> None:
        """Launch everything; `wait_ready` blocks until the workers registered (meanwhile the test works)."""
        (self.dir / "logs").mkdir(exist_ok=True)
        self.master = self._start(
            self.master_log,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            str(_free_port()),
        )
        for n in range(WORKERS):
            work = self.dir / f"worker{n}"  # the default work dir is inside site-packages
            work.mkdir()
            self._start(
                self.dir / f"worker{n}.log",
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--webui-port",
                str(_free_port()),
                "--work-dir",
                str(work),
            )

    def wait_ready(self, timeout: float = 120) -> None:
        _wait_for(self.master_log, "Registering worker", WORKERS, self.master, timeout)

    def submit(self, job: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        spark_submit = os.path.join(_spark_home(), "bin", "spark-submit")
        command = [
            spark_submit,
            "--master",
            self.url,
            "--executor-memory",
            "768m",
            # A small lake: a few shuffle partitions per core instead of Spark's 200 tiny tasks.
            "--conf",
            "spark.sql.shuffle.partitions=8",
            str(REPO / "jobs" / f"{job}.py"),
            *args,
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop([process])
            out, err = process.communicate()
            pytest.fail(f"spark-submit {job} timed out after {timeout}s:\n{err[-3000:]}")
        return subprocess.CompletedProcess(command, process.returncode, out, err)

    def stop(self) -> None:
        _stop(self.processes)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster")
    c.dir.mkdir()
    try:
        yield c  # the test calls start(), so the JVMs boot while it does its local work
    finally:
        c.stop()  # always: no JVM outlives the test
    leftovers = [p for p in c.processes if p.poll() is None]
    assert not leftovers, f"cluster processes still running: {[p.pid for p in leftovers]}"


def _rows(lake, table: str, where: str | None = None) -> list[tuple]:
    frame = lake.read(table)
    if where:
        frame = frame.filter(where)
    return sorted(tuple(r) for r in frame.collect())


@pytest.mark.slow
def test_similarity_and_walks_on_a_standalone_cluster_equal_the_local_run(spark, tmp_path, cluster):
    from recsys_spark.lake import Lake

    local_root = tmp_path / "local-lake"
    generate = ["generate", "--lake", str(local_root), "--users", "300", "--items", "120", "--days", "3"]
    clock = time.time()
    assert cli.main([*generate, "--seed", "7"], spark=spark) == 0
    assert cli.main(["graph", "--lake", str(local_root)], spark=spark) == 0
    cluster_root = tmp_path / "cluster-lake"
    shutil.copytree(local_root, cluster_root)
    cluster.start()  # the JVMs boot while the local runs below use the test's own session

    swing = ["--algo", "swing", "--top-k", "20"]
    walks = ["--method", "node2vec", "--q", "0.5", "--num-walks", "3", "--walk-length", "8", "--seed", "11"]
    assert cli.main(["similarity", "--lake", str(local_root), *swing], spark=spark) == 0
    assert cli.main(["walks", "--lake", str(local_root), *walks], spark=spark) == 0

    print(f"generate, graph, local swing and walks: {time.time() - clock:.0f}s")
    cluster.wait_ready()
    uri = f"file://{cluster_root}"
    for job, args in (("similarity", swing), ("walks", walks)):
        started = time.time()
        result = cluster.submit(job, "--lake", uri, *args)
        assert result.returncode == 0, f"{job}:\n{result.stderr[-4000:]}"
        print(f"spark-submit {job} on {cluster.url}: {time.time() - started:.0f}s")
    # The work really ran on the cluster: the master granted the application executors on both workers.
    master_log = cluster.master_log.read_text()
    assert master_log.count("Registered app recsys-spark similarity") == 1
    assert master_log.count("Registered app recsys-spark walks") == 1
    assert master_log.count("Launching executor") >= 2 * WORKERS

    local, remote = Lake(spark, str(local_root)), Lake(spark, uri)
    mine, theirs = _rows(local, "swing_sim"), _rows(remote, "swing_sim")
    assert len(mine) > 100
    assert [(r[0], r[1], r[3]) for r in mine] == [(r[0], r[1], r[3]) for r in theirs]
    assert all(abs(a[2] - b[2]) <= 1e-12 * max(1.0, abs(a[2])) for a, b in zip(mine, theirs))
    mine_walks = _rows(local, "walks", "method = 'node2vec'")
    graph = local.read("item_graph")
    nodes = graph.select("src_item").union(graph.select("dst_item")).distinct().count()
    assert len(mine_walks) == 3 * nodes  # --num-walks per node of the graph
    assert mine_walks == _rows(remote, "walks", "method = 'node2vec'")
