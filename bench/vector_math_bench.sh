#!/usr/bin/env bash
# The tensor runtime's array exp/erf/tanh beside SLEEF's (bench/vector_math_bench.cpp),
# one core (taskset -c BENCH_CPU, default 1); ROUNDS runs (default 2). Run by `make
# bench-vector-math`; results go to docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build/bench}
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo "== round $round"
  taskset -c "${BENCH_CPU:-1}" "$B/bench/vector_math_bench"
done
