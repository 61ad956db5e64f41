#include "runnel/tensor/conformance.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "runnel/core/file.hpp"
#include "runnel/tensor/graph.hpp"
#include "runnel/tensor/onnx_import.hpp"

namespace runnel::tensor {
namespace {

// input_0.pb, input_1.pb, ... (or output_*) of a data set, in index order.
std::vector<std::filesystem::path> Numbered(const std::filesystem::path& dir, const std::string& prefix) {
  std::vector<std::filesystem::path> files;
  for (size_t i = 0;; ++i) {
    auto file = dir / fmt::format("{}_{}.pb", prefix, i);
    if (!std::filesystem::exists(file)) break;
    files.push_back(std::move(file));
  }
  return files;
}

std::vector<std::filesystem::path> DataSets(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> sets;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_directory() && entry.path().filename().string().starts_with("test_data_set_")) {
      sets.push_back(entry.path());
    }
  }
  std::sort(sets.begin(), sets.end());
  return sets;
}

std::vector<Tensor> ReadTensors(const std::vector<std::filesystem::path>& files) {
  std::vector<Tensor> tensors;
  for (const auto& file : files) tensors.push_back(LoadOnnxTensor(ReadFileBytes(file), file.string()));
  return tensors;
}

// Runs one data set; returns why it failed, or empty.
std::string RunDataSet(Session& session, const std::filesystem::path& set, double rtol, double atol) {
  auto got = session.Run(ReadTensors(Numbered(set, "input")));
  const auto want = ReadTensors(Numbered(set, "output"));
  if (got.size() != want.size()) return fmt::format("{} outputs, {} expected", got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (auto diff = CompareTensors(got[i], want[i], rtol, atol); !diff.empty()) {
      return fmt::format("{}: output {}: {}", set.filename().string(), i, diff);
    }
  }
  return "";
}

}  // namespace

const char* VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kPass: return "pass";
    case Verdict::kFail: return "FAIL";
    case Verdict::kUnsupported: return "unsupported";
  }
  return "?";
}

std::string CompareTensors(const Tensor& got, const Tensor& want, double rtol, double atol) {
  if (got.type() != want.type()) {
    return fmt::format("element type {}, expected {}", DataTypeName(static_cast<int>(got.type())),
                       DataTypeName(static_cast<int>(want.type())));
  }
  if (got.shape() != want.shape())
    return fmt::format("shape {}, expected {}", ShapeText(got.shape()), ShapeText(want.shape()));
  if (got.type() == DataType::kString) {
    for (size_t i = 0; i < got.size(); ++i) {
      if (got.strings()[i] != want.strings()[i]) {
        return fmt::format("element {} is '{}', expected '{}'", i, got.strings()[i], want.strings()[i]);
      }
    }
    return "";
  }
  const bool exact = got.type() != DataType::kFloat && got.type() != DataType::kDouble;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = ValueAt(got, i), w = ValueAt(want, i);
    if (std::isnan(w) && std::isnan(g)) continue;
    const bool ok = exact ? g == w : (g == w || std::abs(g - w) <= atol + rtol * std::abs(w));
    if (!ok) return fmt::format("element {} is {}, expected {}", i, g, w);
  }
  return "";
}

ConformanceResult RunConformanceTest(const std::filesystem::path& dir, double rtol, double atol) {
  ConformanceResult result;
  result.test = dir.filename().string();
  try {
    const auto model_file = dir / "model.onnx";
    auto graph = LoadOnnxGraph(ReadFileBytes(model_file), model_file.string());
    Session session(graph);
    const auto sets = DataSets(dir);
    if (sets.empty()) throw Error(ErrorCode::NotFound, fmt::format("{}: no test_data_set_*", dir.string()));
    for (const auto& set : sets) {
      if (auto failure = RunDataSet(session, set, rtol, atol); !failure.empty()) {
        result.verdict = Verdict::kFail;
        result.detail = std::move(failure);
        return result;
      }
    }
  } catch (const UnsupportedError& e) {
    result.verdict = Verdict::kUnsupported;
    result.detail = e.what();
  } catch (const std::exception& e) {  // Error, and the file system's
    result.verdict = Verdict::kFail;
    result.detail = e.what();
  }
  return result;
}

std::vector<std::filesystem::path> FindConformanceTests(const std::filesystem::path& root) {
  if (std::filesystem::exists(root / "model.onnx")) return {root};
  std::vector<std::filesystem::path> tests;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    if (entry.is_directory() && std::filesystem::exists(entry.path() / "model.onnx")) tests.push_back(entry.path());
  }
  std::sort(tests.begin(), tests.end());
  return tests;
}

}  // namespace runnel::tensor
