// A transformer text classifier served with its Hugging Face tokenizer.json: the
// reviews model of examples/reviews (RoBERTa's shape, exported by Debian's
// python3-torch), its logits checked against PyTorch's on 64 reviews of 21 to 128
// tokens, each of which PyTorch ran alone (so a batch's padding must change nothing).
#include <gtest/gtest.h>
#include <onnx/onnx-ml.pb.h>

#include <cmath>
#include <fstream>
#include <map>

#include "../support/error_message.hpp"
#include "../support/python_fixtures.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

using runnel::testing::PythonFixtures;
using runnel::testing::ReadCsv;

// Random weights (--epochs 0): training takes a minute here and changes nothing the
// test checks.
PythonFixtures& Reviews() {
  static PythonFixtures fixtures("../../examples/reviews/build_reviews.py", "--epochs 0 --reviews 600");
  return fixtures;
}

class TransformerModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Reviews().Ready("python3-torch, python3-onnx and python3-regex")) GTEST_SKIP();
    std::ifstream in(Reviews() / "reviews.csv");
    CsvReader reader(in, ',');
    std::vector<std::string> fields;
    std::map<int, std::string> texts;
    ASSERT_TRUE(reader.Next(fields));  // id, title, body, emotion, split
    while (reader.Next(fields)) texts[std::stoi(fields[0])] = fields[1] + ". " + fields[2];
    for (const auto& row : ReadCsv(Reviews() / "reviews_expected.csv")) {
      texts_.push_back(texts.at(static_cast<int>(row[0])));
      logits_.emplace_back(row.begin() + 1, row.end());
    }
    ASSERT_EQ(texts_.size(), 64u);
    tokens_.tokenizer = text::Tokenizer::Load(Reviews() / "tokenizer.json");
  }

  std::vector<std::string> texts_;
  std::vector<std::vector<float>> logits_;
  TokenInputs tokens_;
};

TEST_F(TransformerModel, LogitsEqualPyTorchsInBatchesAndAlone) {
  auto model = LoadModel(Reviews() / "reviews_model.onnx", {tokens_, {}});
  ASSERT_EQ(model->text_width(), 1u);
  ASSERT_EQ(model->input_width(), 0u);
  ASSERT_EQ(model->output_width(), 6u);
  ModelSession session(model);
  for (const size_t batch : {size_t{64}, size_t{32}, size_t{1}}) {
    for (size_t start = 0; start < texts_.size(); start += batch) {
      const auto out = session.Predict({}, batch, std::span(texts_).subspan(start, batch));
      for (size_t r = 0; r < batch; ++r) {
        for (size_t c = 0; c < 6; ++c)
          EXPECT_NEAR(out[r * 6 + c], logits_[start + r][c], 1e-4f)
              << "review " << start + r << " in batches of " << batch;
      }
    }
  }
}

TEST_F(TransformerModel, LabelsFileTurnsLogitsIntoLabelAndProbabilities) {
  const std::vector<std::string> labels = {"anger", "fear", "joy", "sadness", "surprise", "neutral"};
  auto model = LoadModel(Reviews() / "reviews_model.onnx", {tokens_, labels});
  ASSERT_EQ(model->output_width(), 7u);
  ASSERT_EQ(model->output_labels(0).size(), 6u);
  EXPECT_EQ(model->output_labels(0)[2], "joy");
  EXPECT_TRUE(model->output_labels(1).empty());
  ModelSession session(model);
  const auto out = session.Predict({}, texts_.size(), texts_);
  for (size_t r = 0; r < texts_.size(); ++r) {
    const auto& z = logits_[r];
    const size_t best = std::max_element(z.begin(), z.end()) - z.begin();
    EXPECT_EQ(out[r * 7], static_cast<float>(best)) << "review " << r;
    double sum = 0;
    for (const float v : z) sum += std::exp(v - z[best]);
    for (size_t c = 0; c < 6; ++c)
      EXPECT_NEAR(out[r * 7 + 1 + c], std::exp(z[c] - z[best]) / sum, 1e-5) << "review " << r << " class " << c;
  }
}

// The emotions in the model's own metadata (id2label, as onnx.helper.set_model_props
// writes it) serve as a labels file does; a malformed entry refuses the model naming
// it; labels that do not fit the output are left unused.
TEST_F(TransformerModel, MetadataLabelsNameTheLogits) {
  const std::vector<std::string> labels = {"anger", "fear", "joy", "sadness", "surprise", "neutral"};
  auto labelled = LoadModel(Reviews() / "reviews_model_labelled.onnx", {tokens_, {}});
  ASSERT_EQ(labelled->output_width(), 7u);
  EXPECT_EQ(std::vector<std::string>(labelled->output_labels(0).begin(), labelled->output_labels(0).end()), labels);
  auto with_file = LoadModel(Reviews() / "reviews_model.onnx", {tokens_, labels});
  ModelSession from_metadata(labelled), from_file(with_file);
  const auto a = from_metadata.Predict({}, texts_.size(), texts_);
  const auto b = from_file.Predict({}, texts_.size(), texts_);
  EXPECT_EQ(std::vector<float>(a.begin(), a.end()), std::vector<float>(b.begin(), b.end()));
  EXPECT_EQ(LoadModel(Reviews() / "reviews_model_labelled.onnx", {tokens_, {"a", "b", "c", "d", "e", "f"}})
                ->output_labels(0)[0],
            "a")
      << "labels given override the metadata";

  std::ifstream in(Reviews() / "reviews_model_labelled.onnx", std::ios::binary);
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromIstream(&in));
  auto with_metadata = [&](const std::string& id2label) {
    proto.mutable_metadata_props(0)->set_value(id2label);
    return LoadModelFromBytes(proto.SerializeAsString(), "m.onnx", "", {tokens_, {}});
  };
  ASSERT_EQ(proto.metadata_props(0).key(), "id2label");
  EXPECT_EQ(testing::MessageOf([&] { with_metadata(R"({"0": "a", "2": "b"})"); }),
            "m.onnx: metadata 'id2label': id2label: '2' is not one of the ids 0 to 1, each once");
  EXPECT_EQ(testing::MessageOf([&] { with_metadata("[1, 2]"); }),
            "m.onnx: metadata 'id2label': is not a JSON object of id -> label");
  EXPECT_EQ(with_metadata(R"({"0": "neg", "1": "pos"})")->output_width(), 6u) << "two labels for six logits: unused";
}

TEST_F(TransformerModel, ARowThatCannotBeTokenizedFailsAlone) {
  auto model = LoadModel(Reviews() / "reviews_model.onnx", {tokens_, {}});
  ModelSession session(model);
  std::vector<std::string> texts = {texts_[0], "bad \xff utf-8", texts_[1]};
  const auto out = session.Predict({}, 3, texts);
  EXPECT_NEAR(out[0], logits_[0][0], 1e-4f);
  EXPECT_TRUE(std::isnan(out[6]));
  EXPECT_NEAR(out[12], logits_[1][0], 1e-4f);
}

TEST_F(TransformerModel, TokenInputsWithoutATokenizerAndTheOppositeAreRefused) {
  const std::string no_tokenizer = testing::MessageOf([] { LoadModel(Reviews() / "reviews_model.onnx"); });
  EXPECT_NE(no_tokenizer.find("input 'input_ids' takes token ids: give the model its tokenizer"), std::string::npos)
      << no_tokenizer;
  const std::string wrong_labels = testing::MessageOf([&] {
    LoadModel(Reviews() / "reviews_model.onnx", {tokens_, {"a", "b"}});
  });
  EXPECT_NE(wrong_labels.find("2 class labels are given, so the model must have one float output of [batch, 2] "
                              "logits; it has [batch, 6]"),
            std::string::npos)
      << wrong_labels;
}

}  // namespace
}  // namespace runnel::model
