#!/usr/bin/env bash
# Requests from NATS JetStream (issue #20) against the same requests inserted into the
# table, on one embedded PostgreSQL and Debian's nats-server, 2-core machine:
#   (t) the table burst of bench/burst.sh: 100,000 requests inserted by `runnel load`
#       (1,000-row transactions) while `runnel run` (2 workers) serves them;
#   (j) 100,000 requests published by `runnel load --jetstream` while `runnel run`
#       (2 workers and its JetStream ingest: THREADS threads, default 1, batches of
#       BATCH, default 2,000) takes them in and serves them.
# Each is timed from the first insert (publish) to the last result; the kinds take turns
# going first, RUNS rounds (default 3). CLUSTER=1: three nats-server nodes on this
# machine and R3 streams instead of one node. LATENCY=1: instead of bursts, both kinds
# at 10,000 requests/s (RATE) for 100,000 requests, and the latency of each request from
# its insert (t) or from when the stream stored its message (j) to its result's commit,
# p50 and p99. PER_MESSAGE=N (default 1): N records in each message, as NDJSON.
# DIRECT=1: a third kind, (d) the same as (j) with [jetstream] mode = "direct" (scored
# without rows); every kind then serves the needs pipeline without [recommend], which
# direct mode does not take.
# Results: docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
source bench/embedded_db.sh
source bench/burst.sh
J=examples/needs/.jetstream_bench.toml
PORT=${NATS_PORT:-14222}
NODES=1
[ "${CLUSTER:-0}" = 1 ] && NODES=3
NATS=()
SERVERS=""
for i in $(seq 1 $NODES); do
  mkdir -p "$RUNNEL_HOME/nats$i"
  args=(-js -a 127.0.0.1 -p $((PORT + i - 1)) -sd "$RUNNEL_HOME/nats$i" --server_name "n$i")
  if [ $NODES -gt 1 ]; then
    routes=""
    for j in $(seq 1 $NODES); do [ "$j" != "$i" ] && routes+="${routes:+,}nats://127.0.0.1:$((PORT + 100 + j))"; done
    args+=(--cluster_name bench --cluster "nats://127.0.0.1:$((PORT + 100 + i))" --routes "$routes")
  fi
  /usr/sbin/nats-server "${args[@]}" > "$RUNNEL_HOME/nats$i.log" 2>&1 &
  NATS+=($!)
  SERVERS+="${SERVERS:+, }\"nats://127.0.0.1:$((PORT + i - 1))\""
done
D=examples/needs/.jetstream_bench_direct.toml
KINDS=(t j)
bench_cleanup() { kill -TERM "${NATS[@]}" 2>/dev/null || true; rm -f "$J" "$D" examples/needs/.jetstream_bench_plain.toml; }
if [ "${DIRECT:-0}" = 1 ]; then
  KINDS=(t j d)
  P=examples/needs/.jetstream_bench_plain.toml
  sed '/^\[recommend\]/,$d' examples/needs/pipeline.toml > "$P"
fi
cp $P "$J"
printf '\n[jetstream]\nservers = [%s]\nstream = "REQ"\nsubject = "req.needs"\nbatch = %s\nthreads = %s\n' \
  "$SERVERS" "${BATCH:-2000}" "${THREADS:-1}" >> "$J"
sed 's/^\[jetstream\]$/[jetstream]\nmode = "direct"/' "$J" > "$D"
sleep 2  # a cluster elects its JetStream leader

# Every request has a result (in RESULTS: the direct kind's are beside their messages):
# one session counts every 20 ms.
RESULTS=runnel_needs_results
wait_results() {
  psql "$URL" -qAt -c "DO \$\$ BEGIN LOOP EXIT WHEN (SELECT count(*) FROM $RESULTS) >= $1;
                         PERFORM pg_sleep(0.02); END LOOP; END \$\$" >/dev/null
}

jetstream_burst() {  # jetstream_burst PIPELINE
  "$RUNNEL" --log-level warn migrate --pipeline "$1" --db "$URL" >/dev/null
  until "$RUNNEL" jetstream setup --pipeline "$1" --replicas $NODES >/dev/null 2>&1; do sleep 1; done
  "$RUNNEL" --log-level warn run --pipeline "$1" --db "$URL" --workers 2 --no-migrate > "$RUNNEL_HOME/run.log" 2>&1 &
  local run=$!
  sleep 1
  local t0 t_loaded t1
  t0=$(now)
  "$RUNNEL" load --pipeline "$1" --jetstream --per-message "${PER_MESSAGE:-1}" --rows 100000 --clients 100 --seed 1 \
    >/dev/null 2>&1
  t_loaded=$(now)
  wait_results 100000
  t1=$(now)
  local n
  n=$(psql "$URL" -qAt -c "SELECT count(*) FROM $RESULTS")
  [ "$n" -eq 100000 ] || { echo "jetstream: $n results, not 100000" >&2; exit 1; }
  kill -TERM $run; wait $run || true
  BURST=$(echo "$t1 - $t0" | bc)
  INSERTS=$(echo "$t_loaded - $t0" | bc)
}

burst() {  # burst KIND: one fresh database, one burst; sets RATE
  fresh_db
  case $1 in
    t) serve_burst "$RUNNEL" $P ;;
    j) RESULTS=runnel_needs_results; jetstream_burst "$J" ;;
    d) RESULTS="runnel_needs_jetstream WHERE status IS NOT NULL"; jetstream_burst "$D" ;;
  esac
  RATE=$(echo "100000 / $BURST" | bc)
  echo "($1) $RATE requests/s ($BURST s; publishing or inserting took $INSERTS s)"
}

# latency KIND: 100,000 requests at RATE per second, served as they come; sets P50/P99
# (ms), from the insert (t) or from the stream storing the message (j) to the result.
latency() {
  fresh_db
  local rate=${RATE:-10000} pipeline=$P load=(--db "$URL" --rows-per-txn 100)
  RESULTS=runnel_needs_results
  if [ "$1" != t ]; then
    pipeline=$J load=(--jetstream)
    [ "$1" = d ] && pipeline=$D RESULTS="runnel_needs_jetstream WHERE status IS NOT NULL"
    "$RUNNEL" --log-level warn migrate --pipeline "$pipeline" --db "$URL" >/dev/null
    until "$RUNNEL" jetstream setup --pipeline "$pipeline" --replicas $NODES >/dev/null 2>&1; do sleep 1; done
  else
    "$RUNNEL" --log-level warn migrate --pipeline $P --db "$URL" >/dev/null
  fi
  "$RUNNEL" --log-level warn run --pipeline "$pipeline" --db "$URL" --workers 2 --no-migrate \
    > "$RUNNEL_HOME/run.log" 2>&1 &
  local run=$!
  sleep 1
  "$RUNNEL" load --pipeline "$pipeline" "${load[@]}" --rows 100000 --rate "$rate" --clients 100 --seed 1 \
    >/dev/null 2>&1
  wait_results 100000
  kill -TERM $run; wait $run || true
  local start="r.enqueued_at" from="runnel_needs_results r"
  if [ "$1" = j ]; then
    start="j.published_at" from="runnel_needs_results r JOIN runnel_needs_jetstream j ON j.request_id = r.key"
  elif [ "$1" = d ]; then  # scored in the ingest's transaction: its result's time is taken_at
    start="r.published_at" from="(SELECT published_at, taken_at AS finished_at FROM runnel_needs_jetstream
                                  WHERE status IS NOT NULL) r"
  fi
  read -r P50 P99 < <(psql "$URL" -qAt -F ' ' -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
      round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1)
      FROM (SELECT extract(epoch FROM r.finished_at - $start) * 1000 AS ms FROM $from) x")
  echo "($1) at $rate requests/s: p50 $P50 ms, p99 $P99 ms"
  if [ "$1" = j ]; then  # of which: from the stream storing it to the ingest's transaction
    psql "$URL" -qAt -c "SELECT 'p50 of: stream to ingest ' ||
        round(percentile_cont(0.5) WITHIN GROUP (ORDER BY a)::numeric, 1) || ' ms, ingest to queue ' ||
        round(percentile_cont(0.5) WITHIN GROUP (ORDER BY b)::numeric, 1) || ' ms, queue to result ' ||
        round(percentile_cont(0.5) WITHIN GROUP (ORDER BY c)::numeric, 1) || ' ms'
      FROM (SELECT extract(epoch FROM j.taken_at - j.published_at) * 1000 AS a,
                   extract(epoch FROM r.enqueued_at - j.taken_at) * 1000 AS b,
                   extract(epoch FROM r.finished_at - r.enqueued_at) * 1000 AS c
            FROM runnel_needs_results r JOIN runnel_needs_jetstream j ON j.request_id = r.key) x"
  fi
}

if [ "${LATENCY:-0}" = 1 ]; then
  for run in $(seq 1 "${RUNS:-3}"); do
    echo "== round $run"
    order=("${KINDS[@]}")
    [ $((run % 2)) -eq 0 ] && order=($(printf '%s\n' "${KINDS[@]}" | tac))
    for kind in "${order[@]}"; do latency "$kind"; done
  done
  exit 0
fi

RATIOS=()
DIRECT_RATIOS=()
for run in $(seq 1 "${RUNS:-3}"); do
  echo "== round $run"
  declare -A rate=()
  order=("${KINDS[@]}")
  [ $((run % 2)) -eq 0 ] && order=($(printf '%s\n' "${KINDS[@]}" | tac))
  for kind in "${order[@]}"; do burst "$kind"; rate[$kind]=$RATE; done
  RATIOS+=("$(echo "scale=3; ${rate[j]} / ${rate[t]}" | bc)")
  [ -n "${rate[d]:-}" ] && DIRECT_RATIOS+=("$(echo "scale=3; ${rate[d]} / ${rate[t]}" | bc)")
done
echo "JetStream$([ $NODES -gt 1 ] && echo " (3-node cluster, R3)") / table burst throughput per round: ${RATIOS[*]}; median $(median "${RATIOS[@]}")"
if [ ${#DIRECT_RATIOS[@]} -gt 0 ]; then
  echo "JetStream direct / table burst throughput per round: ${DIRECT_RATIOS[*]}; median $(median "${DIRECT_RATIOS[@]}")"
fi
