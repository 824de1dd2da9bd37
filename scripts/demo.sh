#!/usr/bin/env bash
# The whole pipeline on built-in synthetic data: generate a lake, run the daily pipeline, list the tables.
# Usage: scripts/demo.sh [LAKE_DIR]   (`make demo` sets up the environment first)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lake="${1:-$root/demo-lake}"
cli="$root/.venv/bin/recsys-spark"
[ -x "$cli" ] || { echo "no $cli: run 'make demo' (it sets up first) or scripts/setup.sh" >&2; exit 2; }
export PYSPARK_PYTHON="$root/.venv/bin/python" PYSPARK_DRIVER_PYTHON="$root/.venv/bin/python"
start=$(date +%s)
echo "== generating synthetic data into $lake"
"$cli" generate --lake "$lake" --users "${DEMO_USERS:-2000}" --items "${DEMO_ITEMS:-1000}" --days "${DEMO_DAYS:-7}" --seed 1
echo "== running the daily pipeline for the latest day"
"$cli" run-daily --lake "$lake"
echo "== tables in $lake"
"$cli" tables --lake "$lake"
echo "== demo finished in $(( $(date +%s) - start ))s; explore with: $cli tables --lake $lake --history"
