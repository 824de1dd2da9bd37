"""The setup built what the later stages need: Horovod with Gloo and PyTorch, Airflow in its own venv."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_horovod_is_built_with_gloo_and_pytorch():
    import horovod
    import horovod.torch as hvd

    assert horovod.__version__ == "0.28.1"
    assert hvd.gloo_built()
    assert not hvd.mpi_built()


def test_torch_is_the_cpu_build():
    import torch

    assert torch.__version__.startswith("2.13.0")
    assert not torch.cuda.is_available()


def test_airflow_lives_in_its_own_virtualenv():
    airflow = REPO / ".venv-airflow" / "bin" / "airflow"
    assert airflow.exists(), "run scripts/setup.sh"
    result = subprocess.run([str(airflow), "version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].startswith("3.1.")
    # and not in the main one, where its providers would clash with PySpark
    assert subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", "import airflow"]).returncode != 0


def test_pinned_versions_that_petastorm_and_delta_rs_need():
    import deltalake
    import pyarrow
    import pyspark

    assert pyarrow.__version__ == "14.0.2"
    assert pyspark.__version__.startswith("4.0.")
    assert deltalake.__version__ == "1.6.6"
