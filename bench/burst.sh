# Sourced after bench/embedded_db.sh by the benchmarks that time bursts: 100,000
# requests inserted in 1,000-row transactions by `runnel load` while `runnel run`
# (2 workers) serves them. Defines now, count, wait_served, median and serve_burst.
now() { date +%s.%N; }
count() { psql "$URL" -qAt -c "SELECT count(*) FROM runnel_needs_results"; }
# Once every insert has committed, an empty queue means every request is served (a
# claim's DELETE commits with its results). One session polls it every 10 ms: a psql
# process and a count(*) per poll would take CPU from the run being measured.
wait_served() {
  psql "$URL" -qAt -c "DO \$\$ BEGIN LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM runnel_needs_queue);
                         PERFORM pg_sleep(0.01); END LOOP; END \$\$" >/dev/null
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
# serve_burst BINARY PIPELINE [LOAD_PIPELINE]: on the database fresh_db made (and the
# caller set up), migrates and serves PIPELINE with BINARY while the load is inserted
# with this build's `runnel load` (LOAD_PIPELINE, default examples/needs/pipeline.toml).
# Sets BURST (first insert to the last result, s) and INSERTS (how long the inserts
# took, s); exits unless every request got a result.
serve_burst() {
  local binary=$1 pipeline=$2 load=${3:-examples/needs/pipeline.toml}
  "$binary" --log-level warn migrate --pipeline "$pipeline" --db "$URL" >/dev/null
  "$binary" --log-level warn run --pipeline "$pipeline" --db "$URL" --workers 2 --no-migrate \
    > "$RUNNEL_HOME/run.log" 2>&1 &
  local run=$!
  sleep 1
  local t0 t_loaded t1
  t0=$(now)
  "$RUNNEL" load --pipeline "$load" --db "$URL" --rows 100000 --rows-per-txn 1000 \
    --clients 100 --seed 1 >/dev/null 2>&1
  t_loaded=$(now)
  wait_served
  t1=$(now)
  [ "$(count)" -eq 100000 ] || { echo "burst: only $(count) of 100000 results" >&2; exit 1; }
  kill -TERM $run; wait $run || true
  BURST=$(echo "$t1 - $t0" | bc)
  INSERTS=$(echo "$t_loaded - $t0" | bc)
}
