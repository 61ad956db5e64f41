// Tree ensembles, one core: rows/s of Runnel's TreeEnsemble through ModelSession at
// batch 1, 16 and 256, over the 4,096 rows of input.csv in turn, each size for at least
// a second. Run by bench/trees_bench.sh beside XGBoost's own predictor
// (bench/trees_peers.py) and ONNX Runtime (bench/trees_ort.mjs), which measure the
// same way and print the same lines: "<peer> <model> batch=<b> <rows/s>".
// Usage: trees_bench DIR MODEL... (files in DIR, e.g. xgb100.json rf500.onnx)
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "runnel/model/model.hpp"

namespace {

std::vector<float> ReadRows(const std::string& path, size_t& width) {
  std::ifstream in(path);
  std::vector<float> values;
  std::string line;
  width = 0;
  while (std::getline(in, line)) {
    std::stringstream fields(line);
    std::string field;
    size_t n = 0;
    while (std::getline(fields, field, ',')) {
      values.push_back(std::strtof(field.c_str(), nullptr));
      ++n;
    }
    width = n;
  }
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: trees_bench DIR MODEL...\n");
    return 2;
  }
  const std::string dir = argv[1];
  size_t width = 0;
  const auto input = ReadRows(dir + "/input.csv", width);
  const size_t rows = input.size() / width;
  for (int m = 2; m < argc; ++m) {
    auto model = runnel::model::LoadModel(dir + "/" + argv[m]);
    runnel::model::ModelSession session(model);
    const std::string name = std::string(argv[m]).substr(0, std::string(argv[m]).find('.'));
    for (size_t batch : {1, 16, 256}) {
      size_t done = 0, at = 0;
      float sink = 0;
      const auto start = std::chrono::steady_clock::now();
      double seconds = 0;
      while (seconds < 1.0) {
        for (int k = 0; k < 64; ++k) {
          if (at + batch > rows) at = 0;
          sink += session.Predict({input.data() + at * width, batch * width}, batch)[0];
          at += batch;
          done += batch;
        }
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      fmt::print("runnel {} batch={} {:.0f}{}\n", name, batch, static_cast<double>(done) / seconds,
                 sink == 12345.678f ? " " : "");
    }
  }
  return 0;
}
