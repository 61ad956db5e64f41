#!/usr/bin/env bash
# Requests from NATS JetStream (issue #20) against the same requests inserted into the
# table, on one embedded PostgreSQL and one nats-server (Debian's), 2-core machine:
#   (t) the table burst of bench/burst.sh: 100,000 requests inserted by `runnel load`
#       (1,000-row transactions) while `runnel run` (2 workers) serves them;
#   (j) 100,000 requests published by `runnel load --jetstream` while `runnel run`
#       (2 workers and its JetStream ingest: THREADS threads, default 1, batches of
#       1,000) takes them in and serves them.
# Each is timed from the first insert (publish) to the last result; the kinds take turns
# going first, RUNS rounds (default 3). Results: docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
source bench/embedded_db.sh
source bench/burst.sh
J=examples/needs/.jetstream_bench.toml
PORT=${NATS_PORT:-14222}
mkdir -p "$RUNNEL_HOME/nats"
/usr/sbin/nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$RUNNEL_HOME/nats" > "$RUNNEL_HOME/nats.log" 2>&1 &
NATS=$!
bench_cleanup() { kill -TERM "$NATS" 2>/dev/null || true; rm -f "$J"; }
cp $P "$J"
printf '\n[jetstream]\nservers = ["nats://127.0.0.1:%s"]\nstream = "REQ"\nsubject = "req.needs"\nbatch = 1000\nthreads = %s\n' \
  "$PORT" "${THREADS:-1}" >> "$J"
sleep 1

# Every request has a result: one session counts every 20 ms.
wait_results() {
  psql "$URL" -qAt -c "DO \$\$ BEGIN LOOP EXIT WHEN (SELECT count(*) FROM runnel_needs_results) >= $1;
                         PERFORM pg_sleep(0.02); END LOOP; END \$\$" >/dev/null
}

jetstream_burst() {
  "$RUNNEL" --log-level warn migrate --pipeline "$J" --db "$URL" >/dev/null
  "$RUNNEL" jetstream setup --pipeline "$J" >/dev/null
  "$RUNNEL" --log-level warn run --pipeline "$J" --db "$URL" --workers 2 --no-migrate > "$RUNNEL_HOME/run.log" 2>&1 &
  local run=$!
  sleep 1
  local t0 t_loaded t1
  t0=$(now)
  "$RUNNEL" load --pipeline "$J" --jetstream --rows 100000 --clients 100 --seed 1 >/dev/null 2>&1
  t_loaded=$(now)
  wait_results 100000
  t1=$(now)
  [ "$(count)" -eq 100000 ] || { echo "jetstream: $(count) results, not 100000" >&2; exit 1; }
  kill -TERM $run; wait $run || true
  BURST=$(echo "$t1 - $t0" | bc)
  INSERTS=$(echo "$t_loaded - $t0" | bc)
}

burst() {  # burst KIND: one fresh database, one burst; sets RATE
  fresh_db
  case $1 in
    t) serve_burst "$RUNNEL" $P ;;
    j) jetstream_burst ;;
  esac
  RATE=$(echo "100000 / $BURST" | bc)
  echo "($1) $RATE requests/s ($BURST s; publishing or inserting took $INSERTS s)"
}

RATIOS=()
for run in $(seq 1 "${RUNS:-3}"); do
  echo "== round $run"
  declare -A rate=()
  order=(t j)
  [ $((run % 2)) -eq 0 ] && order=(j t)
  for kind in "${order[@]}"; do burst "$kind"; rate[$kind]=$RATE; done
  RATIOS+=("$(echo "scale=3; ${rate[j]} / ${rate[t]}" | bc)")
done
echo "JetStream / table burst throughput per round: ${RATIOS[*]}; median $(median "${RATIOS[@]}")"
