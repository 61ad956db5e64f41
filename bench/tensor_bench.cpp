// The general tensor runtime (and the dense fast path), one core: rows/s of a model
// through ModelSession, as a pipeline serves it, at batch 1, 16 and 256 over random
// rows (seeded), each size for at least a second. Run by bench/tensor_bench.sh beside
// ONNX Runtime (bench/tensor_ort.mjs), which measures the same way and prints the
// same lines: "<runtime> <model> batch=<b> <rows/s>".
// Usage: tensor_bench MODEL... (ONNX files)
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <random>

#include "runnel/core/memory.hpp"
#include "runnel/model/model.hpp"

int main(int argc, char** argv) {
  runnel::KeepFreedMemoryForReuse();  // as the runnel binary does
  if (argc < 2) {
    fmt::print(stderr, "usage: tensor_bench MODEL...\n");
    return 2;
  }
  for (int m = 1; m < argc; ++m) {
    auto model = runnel::model::LoadModel(argv[m]);
    runnel::model::ModelSession session(model);
    const std::string name = std::filesystem::path(argv[m]).stem().string();
    const size_t width = model->input_width(), rows = 512;
    std::vector<float> input(rows * width);
    std::mt19937 rng(20261203);
    std::normal_distribution<float> normal;
    for (float& v : input) v = normal(rng);
    for (size_t batch : {1, 16, 256}) {
      size_t done = 0, at = 0;
      float sink = 0;
      const auto start = std::chrono::steady_clock::now();
      double seconds = 0;
      while (seconds < 1.0) {
        if (at + batch > rows) at = 0;
        sink += session.Predict({input.data() + at * width, batch * width}, batch)[0];
        at += batch;
        done += batch;
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      fmt::print("runnel {} batch={} {:.0f}{}\n", name, batch, static_cast<double>(done) / seconds,
                 sink == 12345.678f ? " " : "");
    }
  }
  return 0;
}
