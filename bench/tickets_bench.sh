#!/usr/bin/env bash
# The ticket model (examples/tickets: TF-IDF + logistic regression over the machine's
# package descriptions) on one core (taskset -c BENCH_CPU, default 1): `runnel
# predict` over a CSV of ~100,000 tickets beside scikit-learn's own pipeline
# (python3-sklearn) and ONNX Runtime (onnxruntime-node, one thread) on the same ONNX
# file. ROUNDS rounds (default 2) alternate which side runs first. Run by `make
# bench-tickets`; results go to docs/performance.md. runnel's time includes reading
# the CSV and writing the answers; the peers' only the model.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BUILD:-build/bench}
D=$ROOT/$B/tickets
mkdir -p "$D"
[ -f "$D/tickets_sklearn.pkl" ] || /usr/bin/python3 examples/tickets/build_tickets.py "$D" --save-sklearn
if [ ! -f "$D/big.count" ]; then  # the tickets 120 times over: ~100,000
  /usr/bin/python3 - "$D" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1] + "/tickets.csv", encoding="utf-8")))[1:]
with open(sys.argv[1] + "/big.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "subject", "body"])
    for k in range(120):
        for i, r in enumerate(rows):
            w.writerow([k * len(rows) + i + 1, r[1], r[2]])
open(sys.argv[1] + "/big.count", "w").write(str(120 * len(rows)))
PY
fi
. bench/peers.sh
install_onnxruntime_node "$B"
CPU=${BENCH_CPU:-1}
runnel() {
  local n start end
  n=$(cat "$D/big.count")
  start=$(date +%s.%N)
  taskset -c "$CPU" "$B/src/runnel" predict --pipeline "$D/pipeline.toml" --input "$D/big.csv" --output /dev/null \
    2> /dev/null
  end=$(date +%s.%N)
  printf 'runnel        %s tickets  %10.0f tickets/s\n' "$n" "$(echo "$n / ($end - $start)" | bc -l)"
}
peers() {
  taskset -c "$CPU" /usr/bin/python3 bench/tickets_peer.py "$D" "$D/big.csv"
  (cd "$B/node" && taskset -c "$CPU" node "$ROOT/bench/tickets_ort.mjs" "$D" "$D/big.csv" 2>&1 | grep -v 'RE2\|^E0000\|^WARNING')
}
alternate_rounds
