#!/usr/bin/env bash
# The tensor runtime's own kernels beside oneDNN's (Debian's libdnnl 2.6) and, when
# libxnnpack-dev was found at build time, XNNPACK's (convolutions and products), one core
# (taskset -c BENCH_CPU, default 1; OMP_NUM_THREADS=1): the CNN's three convolutions
# (bench/tensor_models.py --convs) at batch 1, 16 and 256, matrix products with
# constant weights of the transformer's and the needs MLP's sizes, and a layer norm and
# a batch norm. Each shape runs ours then oneDNN's in one process; ROUNDS runs
# (default 2). Run by `make bench-onednn`; results go to docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build/bench}
D=$B/onednn
mkdir -p "$D"
[ -f "$D/layernorm.onnx" ] || /usr/bin/python3 bench/tensor_models.py --convs "$D"
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo "== round $round"
  OMP_NUM_THREADS=1 taskset -c "${BENCH_CPU:-1}" "$B/bench/onednn_bench" \
    "$D/conv3x32to16.onnx" "$D/conv16x16to32.onnx" "$D/conv32x8to64.onnx"
done
