#!/usr/bin/env bash
# Analytics snapshots (issue #21) on one embedded PostgreSQL, needs pipeline:
#  1. ROWS (default 1,000,000) requests served, then `runnel snapshot create`: its time
#     and file size beside the PostgreSQL tables it copied.
#  2. Its cost to serving: a burst of BURST (default 200,000) queued requests served by
#     `runnel run --until-idle` (2 workers) alone, and while snapshots of the whole
#     pipeline are taken back to back at the default pace (0.5: the copy rests half the
#     time) and at full speed (pace 1) — the order reversed every other of ROUNDS
#     (default 3) rounds.
#  3. One aggregate (per client: requests, mean risk, mean latency) on the snapshot
#     through `runnel snapshot query` and the same on PostgreSQL through psql,
#     alternating, QUERIES (default 5) times each; medians.
# Run by `make bench-snapshot` after a Release build in build/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
ROWS=${ROWS:-1000000}
BURST=${BURST:-200000}
LOOP=
stop_loop() {  # the loop, then the snapshot it may be running (not to overlap the next burst)
  [ -n "$LOOP" ] || return 0
  kill -TERM "$LOOP" 2>/dev/null || true
  wait "$LOOP" 2>/dev/null || true
  while pgrep -f "snapshot create --pipeline" >/dev/null; do sleep 0.1; done
  LOOP=
}
bench_cleanup() { stop_loop; }
source bench/embedded_db.sh
fresh_db
SNAPS=${SNAPS:-$RUNNEL_HOME/snaps}
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

"$RUNNEL" --log-level warn migrate --pipeline $P --db "$URL" >/dev/null
serve() {  # serves the queue; prints requests/s
  local start n0 n1
  n0=$(psql "$URL" -qAt -c "SELECT count(*) FROM runnel_needs_results")
  start=$(now)
  "$RUNNEL" --log-level warn run --pipeline $P --db "$URL" --workers 2 --until-idle >/dev/null
  n1=$(psql "$URL" -qAt -c "SELECT count(*) FROM runnel_needs_results")
  echo "($n1 - $n0) / $(since "$start")" | bc -l
}
# 100,000 clients: at most a few dozen requests each, far below the quota of 1,000.
load() { "$RUNNEL" --log-level warn load --pipeline $P --db "$URL" --rows "$1" --clients 100000 >/dev/null; }

echo "== 1. a snapshot of $ROWS served requests"
load "$ROWS"
printf 'served at %.0f requests/s\n' "$(serve)"
psql "$URL" -qAt -c "SELECT 'PostgreSQL: results ' || pg_size_pretty(pg_total_relation_size('runnel_needs_results'))
  || ', needs ' || pg_size_pretty(pg_total_relation_size('needs'))"
for pace in 1 0.5; do
  start=$(now)
  "$RUNNEL" --log-level warn snapshot create --pipeline $P --db "$URL" --dir "$SNAPS" --keep 2 --pace $pace
  printf 'snapshot create --pace %s: %.2f s (wall, the command)\n' $pace "$(since "$start")"
done

echo "== 2. serving a burst of $BURST alone and while snapshots are taken"
snapshots_loop() {  # $1: the pace
  while true; do "$RUNNEL" --log-level warn snapshot create --pipeline $P --db "$URL" --dir "$SNAPS" --keep 2 \
    --pace "$1" >/dev/null 2>&1 || true; done
}
alone() { load "$BURST"; printf '  alone                     %8.0f requests/s\n' "$(serve)"; }
beside() {  # $1: the pace
  load "$BURST"
  snapshots_loop "$1" &
  LOOP=$!
  sleep 1  # a snapshot under way
  printf '  with snapshots, pace %-4s %8.0f requests/s\n' "$1" "$(serve)"
  stop_loop
}
for round in $(seq "${ROUNDS:-3}"); do
  echo "round $round"
  if [ $((round % 2)) -eq 1 ]; then alone; beside 0.5; beside 1; else beside 1; beside 0.5; alone; fi
done

echo "== 3. one aggregate: the snapshot (DuckDB) vs PostgreSQL"
"$RUNNEL" --log-level warn snapshot create --pipeline $P --db "$URL" --dir "$SNAPS" --keep 2 >/dev/null
DUCK_SQL="SELECT client_id % 100 AS c, count(*), avg(risk_propensity), avg(latency_ms) FROM requests GROUP BY 1 ORDER BY 1"
PG_SQL="SELECT n.client_id % 100 AS c, count(*), avg(r.risk_propensity), \
avg(1000 * extract(epoch FROM r.finished_at - r.enqueued_at)) FROM runnel_needs_results r \
JOIN needs n ON n.id = r.key GROUP BY 1 ORDER BY 1"
duck_times=()
pg_times=()
for i in $(seq "${QUERIES:-5}"); do
  start=$(now); "$RUNNEL" snapshot query --pipeline $P --dir "$SNAPS" --format csv "$DUCK_SQL" >/dev/null
  duck_times+=("$(since "$start")")
  start=$(now); psql "$URL" -qAt -c "$PG_SQL" >/dev/null
  pg_times+=("$(since "$start")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rows=$(psql "$URL" -qAt -c "SELECT count(*) FROM runnel_needs_results")
printf 'over %s results: snapshot %.3f s, PostgreSQL %.3f s (medians of %s; the snapshot command includes opening it)\n' \
  "$rows" "$(median "${duck_times[@]}")" "$(median "${pg_times[@]}")" "${QUERIES:-5}"
