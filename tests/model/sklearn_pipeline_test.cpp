// scikit-learn pipelines as skl2onnx converts them (imputers, scalers, one-hot
// encoding, linear and logistic models, a forest after a scaler; string labels and
// ZipMap), trained by Debian's python3-sklearn (tests/model/sklearn_pipeline_fixtures.py)
// and served by the general tensor runtime: every prediction checked against
// scikit-learn's own.
#include <gtest/gtest.h>

#include <cmath>

#include "../support/python_fixtures.hpp"
#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

using runnel::testing::PythonFixtures;
using runnel::testing::ReadCsv;

class SklearnPipelines : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() { fixtures_ = new PythonFixtures("sklearn_pipeline_fixtures.py"); }
  static void TearDownTestSuite() {
    delete fixtures_;
    fixtures_ = nullptr;
  }
  void SetUp() override {
    if (!fixtures_->Ready("python3-sklearn and python3-onnx")) GTEST_SKIP();
  }
  static inline PythonFixtures* fixtures_ = nullptr;
};

TEST_P(SklearnPipelines, PredictAsScikitLearnDoes) {
  const std::string name = GetParam();
  auto model = LoadModel(*fixtures_ / (name + ".onnx"));
  EXPECT_NE(model->info().producer.find("general tensor runtime"), std::string::npos) << model->info().producer;
  const auto input = ReadCsv(*fixtures_ / (name + ".input.csv"));
  const auto expected = ReadCsv(*fixtures_ / (name + ".expected.csv"));
  ASSERT_EQ(input.size(), expected.size());
  ASSERT_EQ(model->input_width(), input[0].size());
  ASSERT_EQ(model->output_width(), expected[0].size());
  std::vector<float> flat;
  for (const auto& row : input) flat.insert(flat.end(), row.begin(), row.end());
  ModelSession session(model);
  const auto out = session.Predict(flat, input.size());
  const size_t width = model->output_width();
  for (size_t r = 0; r < input.size(); ++r) {
    for (size_t o = 0; o < width; ++o) {
      // scikit-learn computes in double, the ONNX graph in float.
      const float want = expected[r][o];
      EXPECT_NEAR(out[r * width + o], want, 1e-4f + 1e-4f * std::fabs(want)) << name << " row " << r << " output " << o;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Pipelines, SklearnPipelines,
                         ::testing::Values("scaled_logistic", "imputed_multinomial", "ovr_logistic", "minmax_ridge",
                                           "scaled_forest", "onehot_linear", "column_inputs"));

}  // namespace
}  // namespace runnel::model
