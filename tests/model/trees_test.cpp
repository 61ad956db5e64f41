// Tree ensembles. XGBoost JSON models: every objective Runnel reads, trained by
// Debian's python3-xgboost (tests/model/xgboost_fixtures.py) and checked against
// XGBoost's own predictions on rows with missing values. ONNX tree ensembles: the
// scikit-learn trees, forests and boosted models that skl2onnx converts
// (tests/model/sklearn_onnx_fixtures.py), checked against scikit-learn's own
// predictions. Both: the batched walk against the plain one; hostile files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../support/python_fixtures.hpp"
#include "loaders.hpp"
#include "onnx/onnx-ml.pb.h"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

using runnel::testing::PythonFixtures;
using runnel::testing::ReadCsv;

// Predicts every row of NAME.input.csv and compares with NAME.expected.csv (from the
// library that made the model), and the batched walk with the plain one.
void ExpectPredictions(const std::shared_ptr<const Model>& model, const PythonFixtures& fixtures,
                       const std::string& name, float tolerance, size_t min_missing) {
  ASSERT_NE(model->trees(), nullptr);
  const auto input = ReadCsv(fixtures / (name + ".input.csv"));
  const auto expected = ReadCsv(fixtures / (name + ".expected.csv"));
  ASSERT_EQ(input.size(), expected.size());
  ASSERT_EQ(model->input_width(), input[0].size());
  ASSERT_EQ(model->output_width(), expected[0].size());
  std::vector<float> flat;
  size_t missing = 0;
  for (const auto& row : input) {
    for (float v : row) missing += std::isnan(v) ? 1 : 0;
    flat.insert(flat.end(), row.begin(), row.end());
  }
  ASSERT_GE(missing, min_missing) << "the fixture should exercise default directions";
  // All rows at once (blocks of rows through each tree), then three at a time (trees
  // side by side for each row): both walks against the plain one and the library.
  ModelSession session(model);
  const size_t width = model->output_width();
  const auto at_once = session.Predict(flat, input.size());
  const std::vector<float> all(at_once.begin(), at_once.end());
  std::vector<float> few;
  for (size_t r = 0; r < input.size(); r += 3) {
    const size_t n = std::min<size_t>(3, input.size() - r);
    const auto out = session.Predict({flat.data() + r * model->input_width(), n * model->input_width()}, n);
    few.insert(few.end(), out.begin(), out.end());
  }
  std::vector<float> reference(width);
  for (size_t r = 0; r < input.size(); ++r) {
    model->trees()->ScoreRow(input[r], reference);
    for (size_t o = 0; o < width; ++o) {
      const float want = expected[r][o];
      EXPECT_NEAR(reference[o], want, tolerance + tolerance * std::fabs(want))
          << name << " row " << r << " output " << o;
      EXPECT_EQ(all[r * width + o], reference[o]) << name << ": the walk by rows differs from the plain one, row " << r;
      EXPECT_EQ(few[r * width + o], reference[o])
          << name << ": the walk by trees differs from the plain one, row " << r;
    }
  }
}

class XGBoostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { fixtures_ = new PythonFixtures("xgboost_fixtures.py"); }
  static void TearDownTestSuite() {
    delete fixtures_;
    fixtures_ = nullptr;
  }
  void SetUp() override {
    if (!fixtures_->Ready("python3-xgboost")) GTEST_SKIP();
  }
  static std::filesystem::path Fixture(const std::string& name) { return *fixtures_ / name; }

  static inline PythonFixtures* fixtures_ = nullptr;
};

class XGBoostModels : public XGBoostTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(XGBoostModels, PredictAsXGBoostDoesOnRowsWithMissingValues) {
  const std::string name = GetParam();
  auto model = LoadModel(Fixture(name + ".json"));
  EXPECT_EQ(model->info().format, ModelFormat::XGBoostJson);
  EXPECT_NE(model->info().producer.find("XGBoost 1."), std::string::npos) << model->info().producer;
  ExpectPredictions(model, *fixtures_, name, 1e-5f, 100);
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
  EXPECT_THAT(refused([&](json& d) { tree0(d)["left_children"][0] = 0; }),
              HasSubstr("tree 0: node 0 has children"));  // a loop back to itself
  EXPECT_THAT(refused([&](json& d) { tree0(d)["right_children"][0] = 100000; }), HasSubstr("outside"));
  EXPECT_THAT(refused([&](json& d) { tree0(d)["split_indices"][0] = 6; }), HasSubstr("splits on feature 6"));
  EXPECT_THAT(refused([&](json& d) { tree0(d)["split_conditions"].erase(0); }), HasSubstr("differ in length"));
  EXPECT_THAT(refused([&](json& d) { tree0(d)["split_type"][0] = 1; }), HasSubstr("categorical"));
  EXPECT_THAT(refused([&](json& d) { tree0(d)["left_children"][0] = "x"; }), HasSubstr("not a number"));
  EXPECT_THAT(refused([&](json& d) { d["learner"]["objective"]["name"] = "survival:cox"; }),
              HasSubstr("not supported"));
  EXPECT_THAT(refused([&](json& d) { d["learner"]["gradient_booster"]["name"] = "gblinear"; }), HasSubstr("gblinear"));
  EXPECT_THAT(refused([&](json& d) { d["learner"]["learner_model_param"]["base_score"] = "2"; }),
              HasSubstr("base_score"));
  EXPECT_NE(
      refused([&](json& d) { d["learner"]["gradient_booster"]["model"]["tree_info"][0] = 1; }).find("output group 1"),
      std::string::npos);
  EXPECT_THAT(refused([&](json& d) { d.erase("learner"); }), HasSubstr("not an XGBoost model"));
  // A count that would be allocated per row of a batch is checked against the file.
  EXPECT_THAT(refused([&](json& d) { d["learner"]["learner_model_param"]["num_class"] = "1000000000"; }),
              HasSubstr("1000000000 output groups"));
  try {
    LoadModelFromBytes("{\"learner\": [1, 2", "bad.json", "v");
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

class OnnxTreesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { fixtures_ = new PythonFixtures("sklearn_onnx_fixtures.py"); }
  static void TearDownTestSuite() {
    delete fixtures_;
    fixtures_ = nullptr;
  }
  void SetUp() override {
    if (!fixtures_->Ready("python3-sklearn and python3-onnx")) GTEST_SKIP();
  }
  static inline PythonFixtures* fixtures_ = nullptr;
};

class SklearnOnnxModels : public OnnxTreesTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(SklearnOnnxModels, PredictAsScikitLearnDoes) {
  const std::string name = GetParam();
  auto model = LoadModel(*fixtures_ / (name + ".onnx"));
  EXPECT_EQ(model->info().format, ModelFormat::Onnx);
  EXPECT_NE(model->info().producer.find("TreeEnsemble"), std::string::npos) << model->info().producer;
  // scikit-learn sums in double, the ONNX ensemble in float.
  ExpectPredictions(model, *fixtures_, name, 1e-4f, 0);
}

INSTANTIATE_TEST_SUITE_P(Estimators, SklearnOnnxModels,
                         ::testing::Values("tree_regressor", "forest_regressor", "boosted_regressor",
                                           "forest_classifier", "string_labels", "boosted_binary",
                                           "boosted_multiclass"));

onnx::AttributeProto* Attribute(onnx::NodeProto& node, const std::string& name) {
  for (auto& a : *node.mutable_attribute()) {
    if (a.name() == name) return &a;
  }
  auto* a = node.add_attribute();
  a->set_name(name);
  return a;
}

// Each attribute's type from the field it fills, as exporters write it (ONNX's schema
// check refuses an attribute without one).
std::string Serialized(onnx::ModelProto proto) {
  for (auto& node : *proto.mutable_graph()->mutable_node()) {
    for (auto& a : *node.mutable_attribute()) {
      a.set_type(a.ints_size() > 0      ? onnx::AttributeProto::INTS
                 : a.floats_size() > 0  ? onnx::AttributeProto::FLOATS
                 : a.strings_size() > 0 ? onnx::AttributeProto::STRINGS
                 : a.has_s()            ? onnx::AttributeProto::STRING
                 : a.has_f()            ? onnx::AttributeProto::FLOAT
                                        : onnx::AttributeProto::INT);
    }
  }
  return proto.SerializeAsString();
}

// One split on feature 0 at 0.5 (BRANCH_LEQ), leaves 10 (true) and 20 (false).
onnx::ModelProto Stump(bool tracks_true) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(15);
  auto* ml = model.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(1);
  auto* graph = model.mutable_graph();
  auto* input = graph->add_input();
  input->set_name("X");
  auto* tensor = input->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  tensor->mutable_shape()->add_dim()->set_dim_param("N");
  tensor->mutable_shape()->add_dim()->set_dim_value(2);
  auto* node = graph->add_node();
  node->set_op_type("TreeEnsembleRegressor");
  node->set_domain("ai.onnx.ml");
  node->set_name("ensemble");
  node->add_input("X");
  node->add_output("Y");
  auto ints = [&](const char* name, std::vector<int64_t> values) {
    for (auto v : values) Attribute(*node, name)->add_ints(v);
  };
  ints("nodes_treeids", {0, 0, 0});
  ints("nodes_nodeids", {0, 1, 2});
  ints("nodes_featureids", {0, 0, 0});
  ints("nodes_truenodeids", {1, 0, 0});
  ints("nodes_falsenodeids", {2, 0, 0});
  ints("nodes_missing_value_tracks_true", {tracks_true ? 1 : 0, 0, 0});
  for (float v : {0.5f, 0.0f, 0.0f}) Attribute(*node, "nodes_values")->add_floats(v);
  for (const char* mode : {"BRANCH_LEQ", "LEAF", "LEAF"}) Attribute(*node, "nodes_modes")->add_strings(mode);
  ints("target_treeids", {0, 0});
  ints("target_nodeids", {1, 2});
  ints("target_ids", {0, 0});
  for (float v : {10.0f, 20.0f}) Attribute(*node, "target_weights")->add_floats(v);
  return model;
}

float PredictOne(const onnx::ModelProto& proto, std::vector<float> row) {
  auto model = LoadModelFromBytes(Serialized(proto), "stump.onnx", "v");
  ModelSession session(model);
  return session.Predict(row, 1)[0];
}

TEST(OnnxTrees, MissingValuesFollowTheirTrackAndSplitsTheirMode) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(PredictOne(Stump(true), {0.5f, 0}), 10.0f);  // 0.5 <= 0.5
  EXPECT_EQ(PredictOne(Stump(true), {0.6f, 0}), 20.0f);
  EXPECT_EQ(PredictOne(Stump(true), {nan, 0}), 10.0f);  // tracks true
  EXPECT_EQ(PredictOne(Stump(false), {nan, 0}), 20.0f);
  auto lt = Stump(false);
  Attribute(*lt.mutable_graph()->mutable_node(0), "nodes_modes")->set_strings(0, "BRANCH_LT");
  EXPECT_EQ(PredictOne(lt, {0.5f, 0}), 20.0f);
  // Node ids in any order: the same tree listed leaves first.
  auto shuffled = Stump(false);
  auto* node = shuffled.mutable_graph()->mutable_node(0);
  for (const char* name : {"nodes_nodeids", "nodes_truenodeids", "nodes_falsenodeids", "nodes_featureids"}) {
    auto* a = Attribute(*node, name);
    a->mutable_ints()->SwapElements(0, 2);
  }
  Attribute(*node, "nodes_values")->mutable_floats()->SwapElements(0, 2);
  Attribute(*node, "nodes_modes")->mutable_strings()->SwapElements(0, 2);
  EXPECT_EQ(PredictOne(shuffled, {0.4f, 0}), 10.0f);
  EXPECT_EQ(PredictOne(shuffled, {0.6f, 0}), 20.0f);
}

TEST(OnnxTrees, HostileEnsemblesAreRefusedNamingWhatIsWrong) {
  auto refused = [](const std::function<void(onnx::NodeProto&)>& corrupt) -> std::string {
    auto proto = Stump(true);
    corrupt(*proto.mutable_graph()->mutable_node(0));
    try {
      LoadModelFromBytes(Serialized(proto), "bad.onnx", "v");
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.onnx"), std::string::npos) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "loaded";
    return "";
  };
  auto set = [](onnx::NodeProto& n, const char* name, int i, int64_t v) { Attribute(n, name)->set_ints(i, v); };
  // A loop to itself: the root becomes the leaf nobody points to, the rest unreachable.
  EXPECT_THAT(refused([&](auto& n) { set(n, "nodes_truenodeids", 0, 0); }), HasSubstr("cannot be reached"));
  // Both branches to one child: the other leaf becomes a second root.
  EXPECT_THAT(refused([&](auto& n) { set(n, "nodes_falsenodeids", 0, 1); }), HasSubstr("more than one root"));
  // A child listed under another tree.
  EXPECT_THAT(refused([&](auto& n) { set(n, "nodes_treeids", 2, 1); }), HasSubstr("node 0 has no child 2"));
  EXPECT_THAT(refused([&](auto& n) { set(n, "nodes_featureids", 0, 2); }), HasSubstr("splits on feature 2"));
  EXPECT_THAT(refused([&](auto& n) { set(n, "target_ids", 0, 3); }), HasSubstr("output group 3"));
  EXPECT_THAT(refused([&](auto& n) { set(n, "target_nodeids", 0, 0); }), HasSubstr("not a leaf"));
  EXPECT_THAT(refused([&](auto& n) { Attribute(n, "nodes_modes")->set_strings(0, "BRANCH_XX"); }),
              HasSubstr("BRANCH_XX"));
  EXPECT_THAT(refused([&](auto& n) { Attribute(n, "nodes_values")->mutable_floats()->RemoveLast(); }),
              HasSubstr("differ in length"));
  EXPECT_THAT(refused([&](auto& n) { Attribute(n, "aggregate_function")->set_s("MAX"); }), HasSubstr("MAX"));
  EXPECT_THAT(refused([&](auto& n) { Attribute(n, "post_transform")->set_s("PROBIT"); }), HasSubstr("PROBIT"));
  EXPECT_THAT(refused([&](auto& n) { n.set_domain(""); }), HasSubstr("unsupported: TreeEnsembleRegressor (opset 15)"));
  EXPECT_THAT(refused([&](auto& n) { Attribute(n, "n_targets")->set_i(1000000000); }),
              HasSubstr("n_targets is 1000000000 for 2 leaf weights"));
}

}  // namespace
}  // namespace runnel::model
