// The ticket classifier of examples/tickets: TF-IDF + logistic regression trained by
// Debian's python3-sklearn on the machine's package descriptions, written as the ONNX
// graph skl2onnx makes (StringNormalizer, com.microsoft Tokenizer, TfIdfVectorizer,
// Normalizer, LinearClassifier, ZipMap) and served by the general tensor runtime from
// text: every label and probability of the test split checked against scikit-learn's
// predict() and predict_proba().
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "../support/python_fixtures.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

using runnel::testing::PythonFixtures;
using runnel::testing::ReadCsv;

// Built once for the binary (the script takes a few seconds).
PythonFixtures& Tickets() {
  static PythonFixtures fixtures("../../examples/tickets/build_tickets.py");
  return fixtures;
}

TEST(TextModel, TicketClassifierAnswersAsScikitLearnDoes) {
  PythonFixtures& fixtures = Tickets();
  if (!fixtures.Ready("python3-sklearn and python3-onnx")) GTEST_SKIP();
  auto model = LoadModel(fixtures / "tickets_model.onnx");
  ASSERT_EQ(model->input_width(), 0u);
  ASSERT_EQ(model->text_width(), 1u);
  std::ifstream in(fixtures / "tickets_test.csv");
  CsvReader reader(in, ',');
  std::vector<std::string> fields, texts;
  ASSERT_TRUE(reader.Next(fields));  // id, subject, body
  while (reader.Next(fields)) {
    ASSERT_EQ(fields.size(), 3u) << "line " << reader.line();
    texts.push_back(fields[1] + " " + fields[2]);
  }
  const auto expected = ReadCsv(fixtures / "tickets_expected.csv");
  ASSERT_EQ(texts.size(), expected.size());
  ASSERT_GT(texts.size(), 20u);
  ASSERT_EQ(model->output_width(), expected[0].size());
  ModelSession session(model);
  // In batches of 64 and one by one: the padding of a batch to its longest text must
  // not change any row's answer.
  for (const size_t batch : {size_t{64}, size_t{1}}) {
    for (size_t start = 0; start < texts.size(); start += batch) {
      const size_t n = std::min(batch, texts.size() - start);
      const auto out = session.Predict({}, n, std::span(texts).subspan(start, n));
      const size_t width = model->output_width();
      for (size_t r = 0; r < n; ++r) {
        const auto& want = expected[start + r];
        EXPECT_EQ(out[r * width], want[0]) << "label of test row " << start + r;
        for (size_t o = 1; o < width; ++o)
          EXPECT_NEAR(out[r * width + o], want[o], 1e-5f) << "row " << start + r << " probability " << o;
      }
    }
  }
}

TEST(TextModel, TextInputCountIsChecked) {
  PythonFixtures& fixtures = Tickets();
  if (!fixtures.Ready("python3-sklearn and python3-onnx")) GTEST_SKIP();
  auto model = LoadModel(fixtures / "tickets_model.onnx");
  ModelSession session(model);
  const std::vector<std::string> texts = {"a", "b", "c"};
  EXPECT_THROW(session.Predict({}, 2, texts), Error);
  // Text that is not UTF-8 gets no prediction (NaN; ONNX Runtime's StringNormalizer
  // refuses it too), and the rows beside it do.
  const std::vector<std::string> mixed = {"python module for parsing", "bad \xff byte", "java library"};
  const auto out = session.Predict({}, 3, mixed);
  const size_t width = model->output_width();
  EXPECT_FALSE(std::isnan(out[0]));
  EXPECT_TRUE(std::isnan(out[width]));
  EXPECT_FALSE(std::isnan(out[2 * width]));
}

}  // namespace
}  // namespace runnel::model
