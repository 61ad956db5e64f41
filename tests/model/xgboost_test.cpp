// XGBoost JSON models: every objective Runnel reads, trained by Debian's python3-xgboost
// (tests/model/xgboost_fixtures.py) and checked against XGBoost's own predictions on
// rows with missing values; the batched walk against the plain one; hostile files.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../support/shared_paths.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

using nlohmann::json;

std::vector<std::vector<float>> ReadCsv(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::vector<float>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<float> row;
    std::stringstream fields(line);
    std::string field;
    while (std::getline(fields, field, ',')) row.push_back(std::strtof(field.c_str(), nullptr));  // "nan" too
    rows.push_back(row);
  }
  return rows;
}

class XGBoostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new runnel::testing::TempDir("runnel-xgboost");
    const std::string command =
        fmt::format("/usr/bin/python3 {}/tests/model/xgboost_fixtures.py {}", RUNNEL_SOURCE_DIR, dir_->path().string());
    const int status = std::system(command.c_str());
    made_ = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    missing_ = WIFEXITED(status) && WEXITSTATUS(status) == 77;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (missing_ && !runnel::testing::InCi())
      GTEST_SKIP() << "python3-xgboost is not installed (scripts/install-deps.sh test installs it)";
    ASSERT_TRUE(made_) << "tests/model/xgboost_fixtures.py failed (CI needs python3-xgboost)";
  }

  static std::filesystem::path Fixture(const std::string& name) { return dir_->path() / name; }

  static inline runnel::testing::TempDir* dir_ = nullptr;
  static inline bool made_ = false;
  static inline bool missing_ = false;
};

class XGBoostModels : public XGBoostTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(XGBoostModels, PredictAsXGBoostDoesOnRowsWithMissingValues) {
  const std::string name = GetParam();
  auto model = LoadModel(Fixture(name + ".json"));
  ASSERT_NE(model->trees(), nullptr);
  EXPECT_EQ(model->info().format, ModelFormat::XGBoostJson);
  EXPECT_NE(model->info().producer.find("XGBoost 1."), std::string::npos) << model->info().producer;
  const auto input = ReadCsv(Fixture(name + ".input.csv"));
  const auto expected = ReadCsv(Fixture(name + ".expected.csv"));
  ASSERT_EQ(input.size(), expected.size());
  ASSERT_EQ(model->input_width(), input[0].size());
  ASSERT_EQ(model->output_width(), expected[0].size());
  std::vector<float> flat;
  size_t missing = 0;
  for (const auto& row : input) {
    for (float v : row) missing += std::isnan(v) ? 1 : 0;
    flat.insert(flat.end(), row.begin(), row.end());
  }
  ASSERT_GT(missing, 100u) << "the fixture should exercise default directions";
  ModelSession session(model);
  const auto out = session.Predict(flat, input.size());
  std::vector<float> reference(model->output_width());
  for (size_t r = 0; r < input.size(); ++r) {
    model->trees()->ScoreRow(input[r], reference);
    for (size_t o = 0; o < model->output_width(); ++o) {
      const float got = out[r * model->output_width() + o];
      const float want = expected[r][o];
      EXPECT_NEAR(got, want, 1e-5f + 1e-5f * std::fabs(want)) << name << " row " << r << " output " << o;
      EXPECT_EQ(got, reference[o]) << name << ": the batched walk differs from the plain one, row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Objectives, XGBoostModels,
                         ::testing::Values("regression", "binary", "softprob", "softmax", "poisson", "dart", "forest"));

TEST_F(XGBoostTest, InspectNamesTheShapeAndOutputs) {
  auto model = LoadModel(Fixture("softprob.json"));
  const auto lines = model->Describe();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("60 trees"), std::string::npos) << lines[0];  // 20 rounds x 3 classes
  EXPECT_NE(lines[0].find("3 output group(s)"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("softmax"), std::string::npos) << lines[1];
}

// Each corruption of a real model file is refused with an error naming the file and
// what is wrong, never a crash or an endless walk.
TEST_F(XGBoostTest, HostileFilesAreRefusedNamingWhatIsWrong) {
  const json good = json::parse(ReadFileBytes(Fixture("binary.json")));
  auto refused = [&](const std::function<void(json&)>& corrupt) -> std::string {
    json doc = good;
    corrupt(doc);
    try {
      LoadModelFromBytes(doc.dump(), "bad.json", "v");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Model);
      EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "loaded";
    return "";
  };
  auto tree0 = [](json& doc) -> json& { return doc["learner"]["gradient_booster"]["model"]["trees"][0]; };
  EXPECT_NE(refused([&](json& d) { tree0(d)["left_children"][0] = 0; }).find("tree 0: node 0 has children"),
            std::string::npos);  // a loop back to itself
  EXPECT_NE(refused([&](json& d) { tree0(d)["right_children"][0] = 100000; }).find("outside"), std::string::npos);
  EXPECT_NE(refused([&](json& d) { tree0(d)["split_indices"][0] = 6; }).find("splits on feature 6"), std::string::npos);
  EXPECT_NE(refused([&](json& d) { tree0(d)["split_conditions"].erase(0); }).find("differ in length"),
            std::string::npos);
  EXPECT_NE(refused([&](json& d) { tree0(d)["split_type"][0] = 1; }).find("categorical"), std::string::npos);
  EXPECT_NE(refused([&](json& d) { tree0(d)["left_children"][0] = "x"; }).find("not a number"), std::string::npos);
  EXPECT_NE(refused([&](json& d) { d["learner"]["objective"]["name"] = "survival:cox"; }).find("not supported"),
            std::string::npos);
  EXPECT_NE(refused([&](json& d) { d["learner"]["gradient_booster"]["name"] = "gblinear"; }).find("gblinear"),
            std::string::npos);
  EXPECT_NE(refused([&](json& d) { d["learner"]["learner_model_param"]["base_score"] = "2"; }).find("base_score"),
            std::string::npos);
  EXPECT_NE(
      refused([&](json& d) { d["learner"]["gradient_booster"]["model"]["tree_info"][0] = 1; }).find("output group 1"),
      std::string::npos);
  EXPECT_NE(refused([&](json& d) { d.erase("learner"); }).find("not an XGBoost model"), std::string::npos);
  try {
    LoadModelFromBytes("{\"learner\": [1, 2", "bad.json", "v");
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace runnel::model
