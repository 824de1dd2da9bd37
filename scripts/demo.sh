#!/usr/bin/env bash
# The whole pipeline on built-in synthetic data: generate a lake, run the daily pipeline, stream the next
# day in, evaluate on it, update the models incrementally, list the tables.
# Usage: scripts/demo.sh [LAKE_DIR]   (`make demo` sets up the environment first)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lake="${1:-$root/demo-lake}"
cli="$root/.venv/bin/recsys-spark"
[ -x "$cli" ] || { echo "no $cli: run 'make demo' (it sets up first) or scripts/setup.sh" >&2; exit 2; }
export PYSPARK_PYTHON="$root/.venv/bin/python" PYSPARK_DRIVER_PYTHON="$root/.venv/bin/python"
start=$(date +%s)
echo "== generating synthetic data into $lake (the latest day is landed as files for the stream)"
"$cli" generate --lake "$lake" --users "${DEMO_USERS:-2000}" --items "${DEMO_ITEMS:-1000}" --days "${DEMO_DAYS:-7}" --seed "${DEMO_SEED:-1}" --land-days 1
days="${DEMO_DAYS:-7}"
# The day before the latest runs the daily pipeline; the latest day arrives afterwards through the
# streaming ingest, is held out for evaluation and fed to the incremental update.
last="$(date -u -d "2026-11-01 + $((days - 1)) days" +%F)"
prev="$(date -u -d "$last - 1 day" +%F)"
first="$(date -u -d "$prev - 1 day" +%F)"
# Two consecutive days, as a scheduler runs them: the second day's rank stage learns its fusion
# weights from the first day's lists against the second day's engagements (docs/recommend.md).
# The first full run has no warm start, so it makes 3 passes over its one day (later days: 1).
# Embeddings and both models train data-parallel on DEMO_NP Horovod ranks (Gloo), 2 by default.
np="${DEMO_NP:-2}"
# Both days serve the A/B layer `rerank` (holdout: no diversity; mmr; dpp; docs/experiments.md), so
# the evaluation reads the served lists out per variant with bootstrap intervals.
ab="${DEMO_VARIANT_BY:-rerank}"
echo "== running the daily pipeline for $first"
"$cli" run-daily --lake "$lake" --date "$first" --train-epochs "${DEMO_TRAIN_EPOCHS:-3}" --np "$np" --variant-by "$ab"
echo "== running the daily pipeline for $prev (warm start from $first)"
"$cli" run-daily --lake "$lake" --date "$prev" --np "$np" --variant-by "$ab"
echo "== one user's list for $last, as served from the recommendations of $prev"
user="$("$root/.venv/bin/python" -c "import sys, deltalake, pyarrow.parquet as pq; f = deltalake.DeltaTable(sys.argv[1]).file_uris()[0]; print(min(pq.read_table(f, columns=['user_id']).column(0).to_pylist()))" "$lake/recommendations")"
"$cli" recommend --lake "$lake" --date "$prev" --user "$user"
echo "== streaming ingest of $last's landed event files (exactly once; availableNow trigger)"
"$cli" stream --lake "$lake" --once
echo "== data-quality suite of the streamed day (Data Docs and status board under $lake/_reports/quality/)"
"$cli" validate --lake "$lake" --table events --date "$last"
echo "== evaluating everything built up to $prev on the held-out day $last"
"$cli" evaluate --lake "$lake" --date "$last" --variant-by "$ab"
echo "== business metrics of $last per A/B variant (retention fills in as later days arrive)"
"$cli" business-metrics --lake "$lake" --date "$last"
echo "== incremental update of both models on $last's events"
for model in two_tower ranker; do
    "$cli" train --lake "$lake" --model "$model" --mode incremental --date "$last" --np "$np"
done
echo "== tables in $lake"
"$cli" tables --lake "$lake"
echo "== demo finished in $(( $(date +%s) - start ))s; explore with: $cli tables --lake $lake --history"
echo "   reports: $lake/_reports/quality/index.html (quality), $lake/_reports/evaluation/$last.html (evaluation)"
