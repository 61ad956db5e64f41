#!/usr/bin/env bash
# What open dashboards cost the server (issue #19): `runnel run --http` (2 workers)
# serves the needs pipeline on one embedded PostgreSQL while `runnel load` inserts RATE
# (default 10,000) requests/s. Over MEASURE seconds (default 20) the CPU time of the
# runnel process and of PostgreSQL's processes (which answer the dashboard's queries) is
# read from /proc with no dashboard open and with DASHBOARDS (default 10) open — each
# fetching what the page fetches every 2 s, GET /v1/pipelines/needs/dashboard —
# alternating which goes first in each of ROUNDS rounds
# (default 2). The pollers are curl loops; their own CPU (a browser's, elsewhere) is not
# counted. Run by `make bench-dashboard` after a Release build in build/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
PORT=${PORT:-18182}
H=http://127.0.0.1:$PORT
RATE=${RATE:-10000}
MEASURE=${MEASURE:-20}
N=${DASHBOARDS:-10}
RUN=
LOAD=
POLLERS=()
bench_cleanup() {
  [ ${#POLLERS[@]} -gt 0 ] && kill "${POLLERS[@]}" 2>/dev/null
  [ -n "$LOAD" ] && kill -TERM "$LOAD" 2>/dev/null && wait "$LOAD" 2>/dev/null
  [ -n "$RUN" ] && kill -TERM "$RUN" 2>/dev/null && wait "$RUN" 2>/dev/null
  true
}
source bench/embedded_db.sh
fresh_db

"$RUNNEL" --log-level warn run --pipeline $P --db "$URL" --workers 2 --http 127.0.0.1:$PORT \
  > "$RUNNEL_HOME/run.log" 2>&1 &
RUN=$!
for _ in $(seq 100); do curl -sf $H/readyz >/dev/null && break; sleep 0.1; done
curl -sf $H/readyz >/dev/null || { echo "runnel did not get ready:"; cat "$RUNNEL_HOME/run.log"; exit 1; }
"$RUNNEL" --log-level warn load --pipeline $P --db "$URL" --rate "$RATE" --rows $((RATE * 3600)) \
  --rows-per-txn 100 > "$RUNNEL_HOME/load.log" 2>&1 &
LOAD=$!
sleep 5  # warm up: the queue steady, the samples table filling

TICKS=$(getconf CLK_TCK)
ticks_of() {  # utime + stime of the given pids that still exist
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo $total
}
postgres_pids() { pgrep -d ' ' -x postgres || true; }
served() { psql "$URL" -qAt -c "SELECT count(*) FROM runnel_needs_results"; }

# One window: runnel's and PostgreSQL's CPU (percent of one core) and the rate served.
measure() {
  local label=$1 pids r0 p0 s0 start r1 p1 s1 end
  pids=$(postgres_pids)
  r0=$(ticks_of "$RUN"); p0=$(ticks_of $pids); s0=$(served); start=$(date +%s.%N)
  sleep "$MEASURE"
  r1=$(ticks_of "$RUN"); p1=$(ticks_of $pids); s1=$(served); end=$(date +%s.%N)
  awk -v l="$label" -v r=$((r1 - r0)) -v p=$((p1 - p0)) -v s=$((s1 - s0)) -v t="$(echo "$end - $start" | bc -l)" \
    -v hz="$TICKS" 'BEGIN { printf "%-14s runnel %5.1f%%  postgres %5.1f%%  (of one core)  served %6.0f/s\n",
      l, 100 * r / hz / t, 100 * p / hz / t, s / t }'
}

open_dashboards() {
  for _ in $(seq "$N"); do
    (while true; do
      curl -sf -o /dev/null $H/v1/pipelines/needs/dashboard
      sleep 2
    done) &
    POLLERS+=($!)
  done
  sleep 2
}
close_dashboards() {
  kill "${POLLERS[@]}" 2>/dev/null || true
  wait "${POLLERS[@]}" 2>/dev/null || true
  POLLERS=()
}
none() { measure "no dashboard"; }
some() { open_dashboards; measure "$N dashboards"; close_dashboards; }

for round in $(seq "${ROUNDS:-2}"); do
  echo "== round $round"
  if [ $((round % 2)) -eq 1 ]; then none; some; else some; none; fi
done
