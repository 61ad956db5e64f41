#!/usr/bin/env bash
# The general tensor runtime on one core (taskset -c BENCH_CPU, default 1) beside ONNX
# Runtime (the npm package onnxruntime-node, one intra-op thread): a small CNN and a
# 2-layer transformer encoder (bench/tensor_models.py), and the needs MLP that the
# dense fast path serves (../shared/models/needs/deep_model.onnx, when present), at
# batch 1, 16 and 256. ROUNDS rounds (default 2) alternate which side runs first. Run
# by `make bench-tensor`; results go to docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BUILD:-build/bench}
D=$ROOT/$B/tensor
mkdir -p "$D"
[ -f "$D/transformer.onnx" ] || /usr/bin/python3 bench/tensor_models.py "$D"
MODELS=("$D/cnn.onnx" "$D/transformer.onnx")
ROWS=("$D/cnn.onnx:3x32x32" "$D/transformer.onnx:32x64")
if [ -f "$ROOT/../shared/models/needs/deep_model.onnx" ]; then
  cp "$ROOT/../shared/models/needs/deep_model.onnx" "$D/needs_mlp.onnx"
  MODELS+=("$D/needs_mlp.onnx")
  ROWS+=("$D/needs_mlp.onnx:9")
else
  echo "../shared/models/needs is absent: the needs MLP is not measured"
fi
. bench/peers.sh
install_onnxruntime_node "$B"
CPU=${BENCH_CPU:-1}
runnel() { taskset -c "$CPU" "$B/bench/tensor_bench" "${MODELS[@]}"; }
peers() { (cd "$B/node" && taskset -c "$CPU" node "$ROOT/bench/tensor_ort.mjs" "${ROWS[@]}"); }
alternate_rounds
