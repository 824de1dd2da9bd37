#!/usr/bin/env bash
# Builds the whole recsys-spark environment on a fresh machine; a no-op when nothing changed.
#
#   .venv/          main virtualenv: PySpark, Delta (delta-rs), Petastorm, GE, torch CPU, Horovod
#   .venv-airflow/  Apache Airflow 3 in its own virtualenv (its providers clash with full PySpark)
#
# Horovod 0.28.1 is built from its sdist with C++17 (it fails against torch >= 2.1 with C++14); the
# wheel is cached in $RECSYS_CACHE (default ~/.cache/recsys-spark) keyed by the torch version, so a
# second setup installs it in seconds.
#
# Debian's `chromium` (headless browser for the Data Docs test) is apt-installed when missing, if this
# runs as root or with passwordless sudo; otherwise setup says so and goes on (that test then fails).
#
# Options (environment): PYTHON (interpreter, default python3), RECSYS_CACHE, RECSYS_SKIP_AIRFLOW=1,
# RECSYS_SKIP_HOROVOD=1 (both only for quick local hacking; tests that need them then fail loudly).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
HOROVOD_VERSION="0.28.1"
AIRFLOW_VERSION="3.1.8"
cache="${RECSYS_CACHE:-$HOME/.cache/recsys-spark}"
wheels="$cache/wheels/horovod-$HOROVOD_VERSION-torch$TORCH_VERSION-$(uname -m)"
venv="$root/.venv"
airflow_venv="$root/.venv-airflow"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The stamp covers everything that decides what gets installed: change any of it and setup reruns.
stamp_key="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
main_stamp="$venv/.recsys-setup-$stamp_key"
airflow_stamp="$airflow_venv/.recsys-setup-$stamp_key"

start=$(date +%s)

setup_main() {
    if [ -f "$main_stamp" ]; then
        log "main virtualenv up to date ($venv)"
        return
    fi
    log "creating main virtualenv at $venv"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    "${pip[@]}" install --quiet --upgrade pip "setuptools<80" wheel
    # torch first and on its own line: a bare torch requirement elsewhere would pull a CUDA build.
    log "installing torch==$TORCH_VERSION (CPU)"
    "${pip[@]}" install --quiet "torch==$TORCH_VERSION"

    if [ "${RECSYS_SKIP_HOROVOD:-0}" != "1" ]; then
        if ! ls "$wheels"/horovod-"$HOROVOD_VERSION"-*.whl >/dev/null 2>&1; then
            build_horovod
        else
            log "using cached Horovod wheel from $wheels"
        fi
        "${pip[@]}" install --quiet --no-deps "$wheels"/horovod-"$HOROVOD_VERSION"-*.whl
        # Horovod's own runtime deps (without the [spark] extra, which pins pyarrow<11).
        "${pip[@]}" install --quiet cloudpickle psutil pyyaml packaging cffi
        extras="dev,train"
    else
        log "RECSYS_SKIP_HOROVOD=1: Horovod not installed"
        extras="dev"
    fi
    log "installing recsys-spark and its pinned dependencies"
    "${pip[@]}" install --quiet -e ".[$extras]"
    "$venv/bin/python" - <<'EOF'
import importlib
for m in ("pyspark", "deltalake", "petastorm", "great_expectations", "torch", "pyarrow", "faiss"):
    importlib.import_module(m)
EOF
    rm -f "$venv"/.recsys-setup-*
    touch "$main_stamp"
}

build_horovod() {
    log "building Horovod $HOROVOD_VERSION from source with C++17 (takes 4-6 minutes, cached afterwards)"
    local work
    work="$(mktemp -d)"
    mkdir -p "$wheels"
    (
        cd "$work"
        "$venv/bin/python" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION"
        tar xzf "horovod-$HOROVOD_VERSION.tar.gz"
        cd "horovod-$HOROVOD_VERSION"
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' CMakeLists.txt horovod/torch/CMakeLists.txt
        HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1 \
        HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS="-j$(nproc)" \
            "$venv/bin/python" -m pip wheel --quiet --no-build-isolation --no-deps -w "$work/out" . >"$work/build.log" 2>&1 \
            || { tail -50 "$work/build.log" >&2; exit 1; }
    )
    # Move into the cache only once complete, so a killed build never leaves a broken cached wheel.
    mv "$work"/out/horovod-*.whl "$wheels"/
    rm -rf "$work"
}

setup_airflow() {
    if [ "${RECSYS_SKIP_AIRFLOW:-0}" = "1" ]; then
        log "RECSYS_SKIP_AIRFLOW=1: Airflow virtualenv not built"
        return
    fi
    if [ -f "$airflow_stamp" ]; then
        log "Airflow virtualenv up to date ($airflow_venv)"
        return
    fi
    log "creating Airflow virtualenv at $airflow_venv (apache-airflow==$AIRFLOW_VERSION)"
    [ -x "$airflow_venv/bin/python" ] || "$PYTHON" -m venv "$airflow_venv"
    "$airflow_venv/bin/python" -m pip --disable-pip-version-check install --quiet --upgrade pip
    "$airflow_venv/bin/python" -m pip --disable-pip-version-check install --quiet "apache-airflow==$AIRFLOW_VERSION"
    rm -f "$airflow_venv"/.recsys-setup-*
    touch "$airflow_stamp"
}

setup_browser() {
    # Checked on every run (not under the stamp): it is a system package, not part of the virtualenvs.
    if command -v chromium >/dev/null 2>&1; then
        log "chromium present ($(command -v chromium))"
        return
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            log "chromium missing and not root (no passwordless sudo): NOT installing it; run" \
                "'sudo apt-get install -y chromium' or tests/test_report_browser.py fails"
            return
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "chromium missing and no apt-get here: install a headless Chromium as 'chromium' on PATH"
        return
    fi
    log "installing Debian's chromium (headless browser for the Data Docs test)"
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q)
    if ! "${apt[@]}" install chromium >/dev/null 2>&1; then
        "${apt[@]}" update >/dev/null 2>&1 || true  # a fresh image may have no package lists yet
        "${apt[@]}" install chromium >/dev/null \
            || log "apt-get install chromium failed: tests/test_report_browser.py will fail until it is installed"
    fi
}

setup_main
setup_browser
setup_airflow
log "environment ready in $(( $(date +%s) - start ))s"
