// Running ONNX backend test directories (model.onnx and test_data_set_*/input_N.pb,
// output_N.pb, as the ONNX project and Debian's libonnx-testdata ship them) through
// the tensor runtime: `runnel model conformance` and its CTest.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "runnel/tensor/tensor.hpp"

namespace runnel::tensor {

enum class Verdict { kPass, kFail, kUnsupported };
const char* VerdictName(Verdict verdict);

struct ConformanceResult {
  std::string test;  // the directory's name
  Verdict verdict = Verdict::kPass;
  std::string detail;  // why it failed or is unsupported; empty on a pass
};

// Runs one test directory: loads the model, runs every data set, compares each
// output with the expected one (same element type and shape; numbers within
// |got - want| <= atol + rtol * |want|, NaN matching NaN; others exactly). Never
// throws for what is in the directory: a malformed file is a failure.
ConformanceResult RunConformanceTest(const std::filesystem::path& dir, double rtol = 1e-3, double atol = 1e-7);

// The first difference between `got` and `want`, or empty when they agree as above.
std::string CompareTensors(const Tensor& got, const Tensor& want, double rtol, double atol);

// The test directories under `root` (itself when it holds a model.onnx), sorted.
std::vector<std::filesystem::path> FindConformanceTests(const std::filesystem::path& root);

}  // namespace runnel::tensor
