#!/usr/bin/env bash
# The reviews transformer (examples/reviews: byte-level BPE tokenizer, 2-layer encoder)
# on one core (taskset -c BENCH_CPU, default 1) beside ONNX Runtime (onnxruntime-node,
# one thread) at batch 1 and 32. Runnel's texts/s include tokenizing and padding; ONNX
# Runtime is given the ids. ROUNDS rounds (default 2) alternate which side runs first.
# Run by `make bench-reviews`; results go to docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BUILD:-build/bench}
D=$ROOT/$B/reviews
mkdir -p "$D"
[ -f "$D/reviews_ids.json" ] || /usr/bin/python3 examples/reviews/build_reviews.py "$D"
. bench/peers.sh
install_onnxruntime_node "$B"
CPU=${BENCH_CPU:-1}
runnel() { taskset -c "$CPU" "$B/bench/reviews_bench" "$D"; }
peers() { (cd "$B/node" && taskset -c "$CPU" node "$ROOT/bench/reviews_ort.mjs" "$D"); }
alternate_rounds
