// Fixtures made by the libraries that make models: a Python script under tests/model
// (Debian's python3-sklearn, python3-xgboost, python3-onnx) trains models and writes
// them with the library's own predictions as CSV files.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "temp_dir.hpp"

namespace runnel::testing {

// Rows of floats, comma-separated ("nan" for a missing value).
std::vector<std::vector<float>> ReadCsv(const std::filesystem::path& path);

// Runs tests/model/`script` once into a temporary directory (then `arguments`).
class PythonFixtures {
 public:
  explicit PythonFixtures(const std::string& script, const std::string& arguments = "");
  // In SetUp: false (the test skips) without the Python packages outside CI; in CI,
  // or when the script failed, a test failure.
  bool Ready(const std::string& packages) const;
  std::filesystem::path operator/(const std::string& name) const { return dir_ / name; }

 private:
  TempDir dir_;
  bool made_ = false;
  bool missing_ = false;
};

}  // namespace runnel::testing
