// Model runtime benchmarks (Google Benchmark), one core:
//   BM_Needs/<batch>        rows/s of the needs MLP through ModelSession (optimized kernels)
//   BM_NeedsReference/<b>   the same graph through the plain reference kernels
//   BM_NeedsLatency         batch-1 latency distribution (p50/p99 counters, ns)
//   BM_PeakFma              this CPU's FP32 FMA peak measured with register-only FMAs
// The model is ../shared/models/needs/deep_model.h5 when present ($RUNNEL_BENCH_MODEL
// overrides), else the same architecture (9-9-32-64-128-64-32-1) with random weights.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "runnel/model/kernels.hpp"
#include "runnel/model/model.hpp"

namespace {

using namespace runnel::model;

std::shared_ptr<const Model> NeedsModel() {
  static std::shared_ptr<const Model> model = [] {
    std::filesystem::path path = std::filesystem::path(RUNNEL_SOURCE_DIR) / "../shared/models/needs/deep_model.h5";
    if (const char* env = std::getenv("RUNNEL_BENCH_MODEL")) path = env;
    if (std::filesystem::exists(path)) return LoadModel(path);
    Graph g;
    std::mt19937 rng(42);
    std::normal_distribution<float> w(0.0f, 0.2f);
    const size_t widths[] = {9, 9, 32, 64, 128, 64, 32, 1};
    int prev = g.AddValue("input", 9);
    g.inputs = {prev};
    for (size_t i = 1; i < std::size(widths); ++i) {
      Node n;
      n.kind = OpKind::Dense;
      n.name = "dense_" + std::to_string(i);
      n.in_width = widths[i - 1];
      n.out_width = widths[i];
      n.weights.resize(n.in_width * n.out_width);
      for (auto& v : n.weights) v = w(rng);
      n.bias.assign(n.out_width, 0.01f);
      n.activation = {i + 1 == std::size(widths) ? Activation::Linear : Activation::Relu};
      n.inputs = {prev};
      n.output = prev = g.AddValue(n.name, n.out_width);
      g.nodes.push_back(std::move(n));
    }
    g.outputs = {prev};
    return std::make_shared<const Model>(std::move(g), ModelInfo{ModelFormat::KerasH5, "synthetic", "bench", ""});
  }();
  return model;
}

std::vector<float> Inputs(size_t rows) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(rows * 9);
  for (auto& v : x) v = d(rng);
  return x;
}

void SetCounters(benchmark::State& state, size_t rows) {
  const double macs = static_cast<double>(NeedsModel()->graph().MultiplyAdds());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * rows));
  state.counters["GFLOPS"] =
      benchmark::Counter(2.0 * macs * static_cast<double>(rows), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Needs(benchmark::State& state) {
  const auto rows = static_cast<size_t>(state.range(0));
  ModelSession session(NeedsModel());
  auto x = Inputs(rows);
  session.Predict(x, rows);  // warm: buffers sized once
  for (auto _ : state) benchmark::DoNotOptimize(session.Predict(x, rows).data());
  SetCounters(state, rows);
}
BENCHMARK(BM_Needs)->Arg(1)->Arg(16)->Arg(256)->Arg(1024);

// The executor's graph walk with DenseReference instead of DenseForward.
void BM_NeedsReference(benchmark::State& state) {
  const auto rows = static_cast<size_t>(state.range(0));
  const Graph& g = NeedsModel()->graph();
  auto x = Inputs(rows);
  std::vector<std::vector<float>> buffers(g.value_widths.size());
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].resize(rows * g.value_widths[i]);
  for (auto _ : state) {
    std::copy(x.begin(), x.end(), buffers[static_cast<size_t>(g.inputs[0])].begin());
    for (const auto& node : g.nodes) {
      const auto in = static_cast<size_t>(node.inputs[0]);
      const auto out = static_cast<size_t>(node.output);
      DenseReference(buffers[in].data(), g.value_widths[in], rows, node, buffers[out].data(), g.value_widths[out]);
    }
    benchmark::DoNotOptimize(buffers.back().data());
  }
  SetCounters(state, rows);
}
BENCHMARK(BM_NeedsReference)->Arg(1)->Arg(256)->Arg(1024);

void BM_NeedsLatency(benchmark::State& state) {
  ModelSession session(NeedsModel());
  auto x = Inputs(1);
  std::vector<double> ns;
  ns.reserve(1 << 20);
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(session.Predict(x, 1).data());
    ns.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ns.begin(), ns.end());
  state.counters["p50_ns"] = ns[ns.size() / 2];
  state.counters["p99_ns"] = ns[ns.size() * 99 / 100];
}
BENCHMARK(BM_NeedsLatency)->Iterations(200000);

// Peak: 12 independent FMA chains on 16-float vectors, all in registers.
typedef float V16 __attribute__((vector_size(64)));
void BM_PeakFma(benchmark::State& state) {
  V16 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = V16{} + static_cast<float>(i);
  const V16 a = V16{} + 0.999999f, b = V16{} + 1e-7f;
  constexpr int kInner = 1000;
  for (auto _ : state) {
    for (int k = 0; k < kInner; ++k) {
      for (int i = 0; i < 12; ++i) acc[i] = acc[i] * a + b;
    }
    for (int i = 0; i < 12; ++i) benchmark::DoNotOptimize(acc[i]);
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * 16 * 12 * kInner, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PeakFma);

}  // namespace

BENCHMARK_MAIN();
