#!/usr/bin/env bash
# The real-time pipeline against the floor and a row-by-row baseline, on one embedded
# PostgreSQL (its own RUNNEL_HOME in /tmp, removed afterwards). Run by `make
# bench-pipeline` after a Release build in build/bench; results go to docs/performance.md.
#   (a) burst: 100,000 requests inserted in 1,000-row transactions while `runnel run`
#       (2 workers) serves; time from the first insert until every result is committed
#       (and (a'), the same with [capture] synchronous_commit = false)
#   (b) floor: the same rows, no Runnel: read them, one set-based UPDATE, one product join
#   (c) row-by-row: fetch, predict, update, query products per request (reference style)
#   (d) latency from insert to result at steady 1,000 and 10,000 requests/s
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
# The same pipeline with [capture] synchronous_commit = false, beside it (its model
# path is relative to the file), for the (a') bursts.
P_ASYNC=examples/needs/.bench-async-pipeline.toml
bench_cleanup() { rm -f "$P_ASYNC"; }
source bench/embedded_db.sh
sed 's/^max_batch = \(.*\)$/max_batch = \1\nsynchronous_commit = false/' $P > $P_ASYNC
source bench/burst.sh
wait_results() { while [ "$(count)" -lt "$1" ]; do sleep 0.05; done; }

# (a) and (b) alternate, RUNS times each (default 5): the machine's speed drifts, and
# the ratio is taken within each pair.
burst_once() {  # [pipeline file]
  fresh_db
  serve_burst "$RUNNEL" "${1:-$P}"
  echo "burst: inserts took $INSERTS s; all 100000 served after $BURST s ($(echo "100000 / $BURST" | bc) requests/s)"
  psql "$URL" -qAt -c "SELECT 'statuses: ' || string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) n FROM runnel_needs_results GROUP BY 1) s"
}
# Timed inside the session (clock_timestamp), without psql's start-up and connection.
floor_once() {
  fresh_db
  "$RUNNEL" load --pipeline $P --db "$URL" --rows 100000 --rows-per-txn 1000 --clients 100 --seed 1 >/dev/null 2>&1
  psql "$URL" -q -c "CREATE TABLE floor_recommendations (request_key bigint, product_key bigint)"
  FLOOR=$(psql "$URL" -qAt <<'SQL'
SELECT clock_timestamp() AS t0 \gset
BEGIN;
\copy (SELECT id, client_id, age, gender, family_members, financial_education, income, wealth, income_investment, accumulation_investment FROM needs) TO '/dev/null'
UPDATE needs SET financial_status = financial_education * ln(wealth), risk_propensity = 0.5 * financial_education;
INSERT INTO floor_recommendations SELECT r.id, p.id_product FROM needs r JOIN products p
  ON (p.income = r.income_investment OR p.accumulation = r.accumulation_investment) AND p.risk <= r.risk_propensity;
COMMIT;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz), 4);
SQL
  )
  echo "floor: $FLOOR s ($(echo "100000 / $FLOOR" | bc) requests/s)"
}
RATIOS=()
ASYNC_RATIOS=()
for run in $(seq 1 "${RUNS:-5}"); do
  echo "== (a) burst, run $run: 100,000 requests in 1,000-row transactions, 2 workers"
  burst_once
  SYNC_BURST=$BURST
  echo "== (a') the same burst with [capture] synchronous_commit = false"
  burst_once $P_ASYNC
  ASYNC_BURST=$BURST
  echo "== (b) floor, run $run: the same work in SQL, no Runnel"
  floor_once
  RATIOS+=("$(echo "scale=3; $FLOOR / $SYNC_BURST" | bc)")
  ASYNC_RATIOS+=("$(echo "scale=3; $FLOOR / $ASYNC_BURST" | bc)")
  echo "burst / floor, run $run: ${RATIOS[-1]} (synchronous_commit = false: ${ASYNC_RATIOS[-1]})"
done
echo "burst / floor over ${#RATIOS[@]} runs: $(printf '%s\n' "${RATIOS[@]}" | sort -n | tr '\n' ' ')(median $(median "${RATIOS[@]}"))"
echo "the same, synchronous_commit = false: $(printf '%s\n' "${ASYNC_RATIOS[@]}" | sort -n | tr '\n' ' ')(median $(median "${ASYNC_RATIOS[@]}"))"

# BURST_ONLY=1: (a) and (b) only.
[ -n "${BURST_ONLY:-}" ] && exit 0

echo "== (c) row-by-row baseline: 10,000 requests"
fresh_db
"$RUNNEL" load --pipeline $P --db "$URL" --rows 10000 --rows-per-txn 1000 --clients 100 --seed 1 >/dev/null 2>&1
ROW=$("$B/bench/row_by_row_baseline" "$URL" $P 1 10000)
echo "row-by-row: $ROW"

for rate in 1000 10000; do
  echo "== (d) steady $rate requests/s for 10 s (10-row transactions), 2 workers"
  fresh_db
  "$RUNNEL" --log-level warn migrate --pipeline $P --db "$URL" >/dev/null
  "$RUNNEL" --log-level warn run --pipeline $P --db "$URL" --workers 2 --no-migrate > "$RUNNEL_HOME/run.log" 2>&1 &
  RUN=$!
  sleep 1
  rows=$((rate * 10))
  "$RUNNEL" load --pipeline $P --db "$URL" --rows $rows --rate $rate --rows-per-txn 10 --clients 100000 --seed 2 2>/dev/null
  wait_results $rows
  kill -TERM $RUN; wait $RUN || true
  psql "$URL" -qAt -c "SELECT format('latency insert->result (ms): p50 %s, p99 %s, p999 %s over %s requests',
      round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
      round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
      round(percentile_cont(0.999) WITHIN GROUP (ORDER BY ms)::numeric, 2), count(*))
    FROM (SELECT extract(epoch FROM finished_at - enqueued_at) * 1000 AS ms FROM runnel_needs_results) s"
done
