# The two commands of the README, and the developer's helpers.
#   make demo   install what Runnel needs, build Release, run the demo
#   make test   install what the tests need, build Debug with ASan+UBSan, run CTest
JOBS ?= $(shell nproc)
CTEST_JOBS ?= 2
SOURCES = $(shell git ls-files '*.cpp' '*.hpp' '*.hpp.in')

.PHONY: demo demo-jetstream test release debug fuzz screenshots bench-dashboard bench-snapshot bench bench-pipeline bench-statements bench-poison bench-capture bench-http bench-trees bench-tensor bench-onednn bench-vector-math bench-tickets bench-reviews bench-keys bench-jetstream deps deps-test deps-bench format lint clean

deps:
	scripts/install-deps.sh build

deps-test:
	scripts/install-deps.sh test

release: deps
	cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF
	cmake --build build/release -j $(JOBS)

demo: release
	./build/release/src/runnel demo

# The needs workload from a 3-node NATS JetStream cluster on this machine.
demo-jetstream: release
	PATH="$(CURDIR)/build/release/src:$$PATH" examples/needs-jetstream/run.sh

# Line tables only (-g1): the sanitizers' reports and backtraces still name file and
# line, and a file compiles ~10% sooner (measured on 14 files of this build).
debug: deps-test
	cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-g1 -DRUNNEL_SANITIZE=ON \
	      -DRUNNEL_WERROR=ON -DRUNNEL_BUILD_TESTS=ON
	cmake --build build/test -j $(JOBS)

test: debug fuzz
	cd build/test && ctest --output-on-failure -j $(CTEST_JOBS)

# libFuzzer targets (clang, ASan+UBSan): every parser, FUZZ_SECONDS each. -O1 and line
# tables, as OSS-Fuzz builds: ~14% sooner than -O2 -g (10 files of this build).
FUZZ_SECONDS ?= 20
fuzz: deps-test
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only -DNDEBUG" -DRUNNEL_FUZZ=ON \
	      -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_WERROR=ON -DRUNNEL_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build build/fuzz -j $(JOBS) --target fuzzers
	cd build/fuzz && ctest --output-on-failure -j $(CTEST_JOBS)

deps-bench:
	scripts/install-deps.sh bench

# Model benchmarks on one core (taskset), PyTorch side by side: see docs/performance.md.
BENCH_CPU ?= 1
BENCH_MODEL ?= $(wildcard ../shared/models/needs/deep_model.h5)
bench: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS)
	RUNNEL_BENCH_MODEL=$(BENCH_MODEL) taskset -c $(BENCH_CPU) build/bench/bench/model_bench \
	    --benchmark_min_time=1 --benchmark_out=build/bench/model_bench.json --benchmark_out_format=json
	taskset -c $(BENCH_CPU) /usr/bin/python3 bench/pytorch_baseline.py $(BENCH_MODEL) > build/bench/pytorch.jsonl
	taskset -c $(BENCH_CPU) build/bench/bench/pmml_bench --benchmark_min_time=0.5 \
	    --benchmark_out=build/bench/pmml_bench.json --benchmark_out_format=json
	/usr/bin/python3 bench/report.py build/bench/model_bench.json build/bench/pytorch.jsonl

# The real-time pipeline: burst, SQL floor, row-by-row baseline, steady-rate latency.
bench-pipeline: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS)
	bench/pipeline_bench.sh

# One worker's server-side time per statement kind (docs/performance.md).
bench-statements: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS)
	bench/pipeline_statements.sh

# Fault isolation's cost: bursts with 0.1% poison rows against clean ones; OLD_BUILD=dir
# adds the clean burst of an older build, alternating (docs/performance.md).
bench-poison: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS)
	bench/poison_bench.sh

# Update capture's cost on the insert burst, and re-scoring updates (docs/performance.md).
bench-capture: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS)
	bench/capture_bench.sh

# Bursts with uuid and text keys (the key map) against the integer key (docs/performance.md).
bench-jetstream: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target runnel
	bench/jetstream_bench.sh

bench-keys: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS)
	bench/keys_bench.sh

# The HTTP API with wrk and an open-loop ?wait client: see docs/performance.md.
bench-http: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS)
	bench/http_bench.sh

# Tree ensembles beside XGBoost's predictor and ONNX Runtime (docs/performance.md).
bench-trees: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target trees_bench
	BENCH_CPU=$(BENCH_CPU) bench/trees_bench.sh

# What ten open dashboards cost a server serving 10,000 requests/s.
bench-dashboard: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target runnel
	bench/dashboard_bench.sh

# Analytics snapshots: a million results, the cost to serving, DuckDB vs PostgreSQL.
bench-snapshot: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target runnel
	bench/snapshot_bench.sh

# The ticket model (TF-IDF + logistic regression) beside scikit-learn and ONNX Runtime.
bench-tickets: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target runnel
	BENCH_CPU=$(BENCH_CPU) bench/tickets_bench.sh
	bench/tickets_burst.sh

# The reviews transformer (tokenizer + encoder) beside ONNX Runtime, batch 1 and 32.
bench-reviews: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target reviews_bench
	BENCH_CPU=$(BENCH_CPU) bench/reviews_bench.sh

# The tensor runtime's Conv and GEMM beside oneDNN's.
bench-onednn: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target onednn_bench
	BENCH_CPU=$(BENCH_CPU) bench/onednn_bench.sh

# The runtime's array exp/erf/tanh (libmvec) beside SLEEF's.
bench-vector-math: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target vector_math_bench
	BENCH_CPU=$(BENCH_CPU) bench/vector_math_bench.sh

# The general tensor runtime (CNN, transformer) and the needs MLP beside ONNX Runtime.
bench-tensor: deps-bench
	cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DRUNNEL_BUILD_TESTS=OFF -DRUNNEL_BUILD_BENCHMARKS=ON
	cmake --build build/bench -j $(JOBS) --target tensor_bench
	BENCH_CPU=$(BENCH_CPU) bench/tensor_bench.sh

# The dashboard's pictures in docs/images, taken by its browser test (headless Chromium).
screenshots: debug
	cd build/test && RUNNEL_SCREENSHOTS_DIR=$(CURDIR)/docs/images \
	  ./tests/server_test --gtest_filter='DashboardBrowserTest.ThePageDraws*'

format:
	clang-format -i $(SOURCES)

# What build/test compiles (its compile_commands.json); bench/ and fuzz/ build elsewhere.
LINT_SOURCES = $(shell git ls-files 'src/*.cpp' 'tests/*.cpp')
lint: debug
	clang-tidy -p build/test --quiet $(LINT_SOURCES)

clean:
	rm -rf build
