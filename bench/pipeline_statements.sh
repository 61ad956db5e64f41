#!/usr/bin/env bash
# Where one worker's PostgreSQL time goes: 100,000 requests queued while Runnel is down,
# then `runnel run --workers 1 --until-idle`, with every statement's server-side
# duration logged (log_min_duration_statement = 0 on the database) and summed per kind
# (claim, quota read, catalogue read, write-back + results, quota advance, commit).
# Server time, not wall time: steadier than a burst on a machine whose speed drifts,
# so two builds can be compared by alternating them:
#   BUILD=build/a bench/pipeline_statements.sh; BUILD=build/b bench/pipeline_statements.sh
# RUNS=n repeats it (default 3). Needs a Release build in $BUILD (default build/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml  # the statement patterns below are its table names
source bench/embedded_db.sh
LOG=$RUNNEL_HOME/pg/server.log
for run in $(seq 1 "${RUNS:-3}"); do
  fresh_db
  "$RUNNEL" --log-level warn migrate --pipeline "$P" --db "$URL" >/dev/null
  "$RUNNEL" load --pipeline "$P" --db "$URL" --rows 100000 --rows-per-txn 1000 --clients 100 --seed 1 >/dev/null 2>&1
  psql "$URL" -q -c "VACUUM ANALYZE" -c "CHECKPOINT"
  psql "$ADMIN" -q -c "ALTER DATABASE bench SET log_min_duration_statement = 0"
  from=$(($(wc -c < "$LOG") + 1))
  "$RUNNEL" --log-level warn run --pipeline "$P" --db "$URL" --workers 1 --no-migrate --until-idle >/dev/null
  # Extended protocol: each statement logs its bind and its execute, both counted.
  tail -c +"$from" "$LOG" | awk -v run="$run" '
    /duration: [0-9.]+ ms/ {
      d = $0; sub(/.*duration: /, "", d); ms = d + 0; kind = "other"
      if ($0 ~ /INSERT INTO "runnel_needs_results"/) kind = "write-back+results"
      else if ($0 ~ /WITH locked/) kind = "claim"
      else if ($0 ~ /COMMIT/) kind = "commit"
      else if ($0 ~ /INSERT INTO "runnel_needs_quota"/) kind = "quota advance"
      else if ($0 ~ /FROM "runnel_needs_quota"/) kind = "quota read"
      else if ($0 ~ /LIMIT 1001/) kind = "catalogue"
      sum[kind] += ms; total += ms
    }
    END {
      printf "run %s: server time %.0f ms per 100,000 requests:", run, total
      n = split("claim|quota read|catalogue|write-back+results|quota advance|commit|other", order, "|")
      for (i = 1; i <= n; ++i) printf " %s %.0f,", order[i], sum[order[i]]
      printf "\n"
    }'
done
