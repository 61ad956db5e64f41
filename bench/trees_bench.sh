#!/usr/bin/env bash
# Tree ensembles on one core (taskset -c BENCH_CPU, default 1) beside the runtimes of
# the libraries that made them: a 100-tree depth-6 XGBoost model against XGBoost's own
# predictor (python3-xgboost, nthread=1) and a 500-tree scikit-learn random forest as
# ONNX against ONNX Runtime (the npm package onnxruntime-node, one intra-op thread), at
# batch 1, 16 and 256. ROUNDS rounds (default 2) alternate which side runs first. Run by
# `make bench-trees`; results go to docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BUILD:-build/bench}
D=$ROOT/$B/trees
mkdir -p "$D"
[ -f "$D/rf500.onnx" ] || /usr/bin/python3 bench/trees_models.py "$D"
. bench/peers.sh
install_onnxruntime_node "$B"
CPU=${BENCH_CPU:-1}
runnel() { taskset -c "$CPU" "$B/bench/trees_bench" "$D" xgb100.json rf500.onnx; }
peers() {
  taskset -c "$CPU" /usr/bin/python3 bench/trees_peers.py "$D"
  (cd "$B/node" && taskset -c "$CPU" node "$ROOT/bench/trees_ort.mjs" "$D")
}
alternate_rounds
