#!/usr/bin/env bash
# Fault isolation's cost (issue #12), on one embedded PostgreSQL: 100,000-request
# bursts (1,000-row insert transactions, `runnel run` with 2 workers), three kinds
# alternating RUNS times (default 5), since the machine's speed drifts:
#   (c) clean burst, this build
#   (p) the same burst with 0.1% poison rows: a CHECK constraint that the write-back of
#       every 1,000th key violates (the costly kind: PostgreSQL refuses the batch's
#       statement and the worker bisects it under savepoints)
#   (o) clean burst, the build named by OLD_BUILD (a build directory of the code before
#       the change), when given
# Ratios are taken within each round; medians are printed. POISON=0 leaves (p) out (an
# A/B of the two builds' clean bursts). Results: docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
P=examples/needs/pipeline.toml
source bench/embedded_db.sh
source bench/burst.sh
burst_once() {  # binary, poison (0/1)
  local runnel=$1 poison=$2
  fresh_db
  if [ "$poison" = 1 ]; then
    psql "$URL" -q -c "ALTER TABLE needs ADD CONSTRAINT poison CHECK (risk_propensity IS NULL OR id % 1000 <> 7)"
  fi
  serve_burst "$runnel" $P
  local failed
  failed=$(psql "$URL" -qAt -c "SELECT count(*) FROM runnel_needs_results WHERE status = 'failed'")
  echo "  $(echo "100000 / $BURST" | bc) requests/s ($BURST s; $failed failed)"
}
POISON_RATIOS=()
OLD_RATIOS=()
for run in $(seq 1 "${RUNS:-5}"); do
  echo "== round $run"
  # The second burst of a pair tends to be faster here: the builds take turns going first.
  if [ -n "${OLD_BUILD:-}" ] && [ $((run % 2)) -eq 0 ]; then
    echo "(o) clean burst, $OLD_BUILD (first this round)"; burst_once "$OLD_BUILD/src/runnel" 0; OLD=$BURST
  fi
  echo "(c) clean burst, this build"; burst_once "$RUNNEL" 0; CLEAN=$BURST
  if [ "${POISON:-1}" = 1 ]; then
    echo "(p) 0.1% poison rows, this build"; burst_once "$RUNNEL" 1; POISON_BURST=$BURST
    POISON_RATIOS+=("$(echo "scale=3; $CLEAN / $POISON_BURST" | bc)")
  fi
  if [ -n "${OLD_BUILD:-}" ]; then
    if [ $((run % 2)) -eq 1 ]; then
      echo "(o) clean burst, $OLD_BUILD"; burst_once "$OLD_BUILD/src/runnel" 0; OLD=$BURST
    fi
    OLD_RATIOS+=("$(echo "scale=3; $OLD / $CLEAN" | bc)")
  fi
done
if [ "${POISON:-1}" = 1 ]; then
  echo "poisoned/clean throughput per round: ${POISON_RATIOS[*]}; median $(median "${POISON_RATIOS[@]}")"
fi
if [ -n "${OLD_BUILD:-}" ]; then
  echo "this build/old build clean throughput per round: ${OLD_RATIOS[*]}; median $(median "${OLD_RATIOS[@]}")"
fi
