// Where the fixtures in ../shared are, and which of them the wine workload uses.
// Without GoogleTest, so that benchmarks can use it too (shared_fixtures.hpp adds the
// tests' skip-or-fail macro).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace runnel::testing {

inline std::filesystem::path SharedDir() {
  if (const char* dir = std::getenv("RUNNEL_SHARED_DIR"); dir != nullptr && *dir != '\0') return dir;
  return std::filesystem::path(RUNNEL_SOURCE_DIR) / ".." / "shared";
}

inline bool InCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// The wine models under ../shared/models/wine: seven PMML documents and one
// TensorFlow frozen graph.
inline const std::vector<std::string> kWineModelFiles = {"winequalityLinearRegression.pmml",
                                                         "winequalityGeneralizedLinearRegressionGaussian.pmml",
                                                         "winequalityGeneralizedLinearRegressionGamma.pmml",
                                                         "winequalityDesisionTreeRegression.pmml",
                                                         "winequalityDecisionTreeClassification.pmml",
                                                         "winequalityRandonForrestClassification.pmml",
                                                         "winequalityMultilayerPerceptron.pmml",
                                                         "optimized_WineQuality.pb"};

}  // namespace runnel::testing
