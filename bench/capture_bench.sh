#!/usr/bin/env bash
# Update capture's cost (issue #16), on one embedded PostgreSQL: 100,000-request insert
# bursts (1,000-row transactions, `runnel run` with 2 workers), alternating RUNS times
# (default 5), since the machine's speed drifts:
#   (i) examples/needs/pipeline.toml as it is: inserts only
#   (u) the same pipeline with [capture] on = ["insert", "update"]: the write-back of
#       every row then passes the update trigger's column check
# and, after each (u) burst, (r) an UPDATE of every row's wealth in 1,000-row
# statements, served: how fast updates are re-scored. Ratios are taken within each
# round; medians are printed. Results: docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
source bench/embedded_db.sh
source bench/burst.sh
# The pipeline with update capture, beside the original so that its model path holds.
U=examples/needs/.capture_bench_pipeline.toml
bench_cleanup() { rm -f "$U"; }
sed 's/^\[capture\]$/[capture]\non = ["insert", "update"]/' $P > "$U"
grep -q '^on = \["insert", "update"\]' "$U" || { echo "capture_bench: $P has no [capture] table" >&2; exit 1; }

rescore_updates() {  # after a (u) burst: update every row, time until served
  # The burst used each client's quota (1,000), and re-scored updates count like inserts.
  "$RUNNEL" --log-level warn quota reset --pipeline "$U" --db "$URL" --all-clients >/dev/null
  "$RUNNEL" --log-level warn run --pipeline "$U" --db "$URL" --workers 2 --no-migrate > "$RUNNEL_HOME/run.log" 2>&1 &
  local run=$! t0 t1
  sleep 1
  t0=$(now)
  psql "$URL" -q -c "DO \$\$ BEGIN FOR lo IN 0..99 LOOP
      UPDATE needs SET wealth = wealth + 1 WHERE id > lo * 1000 AND id <= (lo + 1) * 1000; COMMIT; END LOOP; END \$\$"
  wait_served
  t1=$(now)
  kill -TERM $run; wait $run || true
  RESCORE=$(echo "$t1 - $t0" | bc)
  [ "$(psql "$URL" -qAt -c "SELECT count(*) FROM needs WHERE abs(financial_status - financial_education * ln(wealth)) > 1e-3")" -eq 0 ] ||
    { echo "capture_bench: some updated rows were not re-scored" >&2; exit 1; }
  echo "(r) 100,000 updated rows re-scored: $(echo "100000 / $RESCORE" | bc) rows/s ($RESCORE s)"
  RESCORES+=("$(echo "100000 / $RESCORE" | bc)")
}
RESCORES=()

UPDATE_RATIOS=()
for run in $(seq 1 "${RUNS:-5}"); do
  echo "== round $run"
  # The second burst of a pair tends to be faster here: the kinds take turns going first.
  if [ $((run % 2)) -eq 0 ]; then
    echo "(u) with update capture (first this round)"; fresh_db; serve_burst "$RUNNEL" "$U"; WITH=$BURST
    echo "  $(echo "100000 / $BURST" | bc) requests/s ($BURST s)"
    rescore_updates
  fi
  echo "(i) inserts only"; fresh_db; serve_burst "$RUNNEL" $P; ONLY=$BURST
  echo "  $(echo "100000 / $BURST" | bc) requests/s ($BURST s)"
  if [ $((run % 2)) -eq 1 ]; then
    echo "(u) with update capture"; fresh_db; serve_burst "$RUNNEL" "$U"; WITH=$BURST
    echo "  $(echo "100000 / $BURST" | bc) requests/s ($BURST s)"
    rescore_updates
  fi
  UPDATE_RATIOS+=("$(echo "scale=3; $ONLY / $WITH" | bc)")
done
echo "with/without update capture, burst throughput per round: ${UPDATE_RATIOS[*]}; median $(median "${UPDATE_RATIOS[@]}")"
echo "updated rows re-scored per second: ${RESCORES[*]}; median $(median "${RESCORES[@]}")"
