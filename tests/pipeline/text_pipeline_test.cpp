// The ticket workload through PostgreSQL: text columns feed the TF-IDF + logistic
// regression model of examples/tickets (trained by Debian's python3-sklearn), the
// predicted queue is stored and written back as text, and every label and probability
// equals scikit-learn's predict() / predict_proba(). And the reviews workload of
// examples/reviews: a transformer with its Hugging Face tokenizer, whose stored emotion
// and probabilities follow PyTorch's logits.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <fstream>

#include "../support/pg_environment.hpp"
#include "../support/python_fixtures.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/core/file.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/load.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/outputs.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"

namespace runnel::pipeline {
namespace {

using postgres::Params;
using runnel::testing::PythonFixtures;

PythonFixtures& Tickets() {
  static PythonFixtures fixtures("../../examples/tickets/build_tickets.py");
  return fixtures;
}

std::vector<std::string> Lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

int64_t Count(postgres::Connection& conn, const std::string& sql) {
  return conn.Exec(sql, Params()).Get<int64_t>(0, 0);
}

// Two workers serving until the queue is empty.
RunOptions UntilIdle() {
  RunOptions options;
  options.workers = 2;
  options.until_idle = true;
  options.idle_wait = std::chrono::milliseconds(50);
  return options;
}

class TextPipelineTest : public runnel::testing::PostgresTest {
 protected:
  void SetUp() override {
    if (!Tickets().Ready("python3-sklearn and python3-onnx")) GTEST_SKIP();
    PostgresTest::SetUp();
    conn_ = std::make_unique<postgres::Connection>(Connect());
    conn_->Exec(
        "CREATE TABLE tickets (id bigint PRIMARY KEY, subject text NOT NULL, body text, queue text, "
        "priority text)");
    labels_ = Lines(Tickets() / "labels.txt");
  }

  PipelineConfig Config() {
    std::vector<std::string> outputs = {"queue"};
    for (const auto& label : labels_) outputs.push_back("p_" + label);
    const std::string list = fmt::format("\"{}\"", fmt::join(outputs, "\", \""));
    const std::string toml = fmt::format(
        "name = \"tickets\"\n[source]\ntable = \"tickets\"\nkey = \"id\"\ntext_columns = [\"subject\", \"body\"]\n"
        "[model]\npath = \"{}\"\noutputs = [{}]\nlabels = [\"queue\"]\n"
        "[features]\ntext = [\"subject || ' ' || body\"]\n[output]\ncolumns = [{}]\n"
        "[write_back]\ncolumns = [\"queue\"]\n",
        (Tickets() / "tickets_model.onnx").string(), list, list);
    runnel::testing::WriteFile(dir_ / "tickets.toml", toml);
    return LoadPipelineConfig(dir_ / "tickets.toml");
  }

  // The test split into the table; returns how many rows.
  size_t InsertTestSplit() {
    std::ifstream in(Tickets() / "tickets_test.csv");
    CsvReader reader(in, ',');
    std::vector<std::string> fields;
    reader.Next(fields);  // header
    size_t n = 0;
    while (reader.Next(fields)) {
      conn_->Exec("INSERT INTO tickets (id, subject, body) VALUES ($1::bigint, $2, $3)",
                  Params().Add(fields[0]).Add(fields[1]).Add(fields[2]));
      ++n;
    }
    return n;
  }

  std::unique_ptr<postgres::Connection> conn_;
  std::vector<std::string> labels_;
  runnel::testing::TempDir dir_{"runnel-text"};
};

TEST_F(TextPipelineTest, TicketsAreRoutedAsScikitLearnRoutesThemAndALabelIsWrittenBackAsText) {
  const auto config = Config();
  Migrate(*conn_, config);
  const size_t n = InsertTestSplit();
  // A ticket without a body: `subject || ' ' || body` is NULL, so it fails alone.
  conn_->Exec("INSERT INTO tickets (id, subject, body) VALUES (-1, 'no body', NULL)");
  const RunOptions options = UntilIdle();
  const auto summary =
      RunPipeline(config, ModelProvider::Fixed(model::LoadModel(*config.model_path)), conninfo(), options);
  EXPECT_EQ(summary.done, n);
  EXPECT_EQ(summary.failed, 1u);

  const auto expected = runnel::testing::ReadCsv(Tickets() / "tickets_expected.csv");
  std::string probabilities;
  for (const auto& label : labels_) probabilities += fmt::format(", r.p_{}", label);
  auto rows = conn_->Exec(fmt::format("SELECT r.key, r.queue, t.queue{} FROM runnel_tickets_results r JOIN tickets t "
                                      "ON t.id = r.key WHERE r.status = 'done' ORDER BY r.key",
                                      probabilities),
                          Params());
  ASSERT_EQ(static_cast<size_t>(rows.rows()), expected.size());
  for (int i = 0; i < rows.rows(); ++i) {
    const auto& want = expected[static_cast<size_t>(i)];
    const std::string label = labels_.at(static_cast<size_t>(want[0]));
    EXPECT_EQ(rows.Get<std::string>(i, 1), label) << "ticket " << rows.Get<int64_t>(i, 0);
    EXPECT_EQ(rows.Get<std::string>(i, 2), label) << "written back, ticket " << rows.Get<int64_t>(i, 0);
    for (size_t c = 0; c < labels_.size(); ++c)
      EXPECT_NEAR(rows.Get<double>(i, 3 + static_cast<int>(c)), want[c + 1], 1e-5)
          << "ticket " << rows.Get<int64_t>(i, 0);
  }
  auto failed = conn_->Exec("SELECT error FROM runnel_tickets_results WHERE key = -1", Params());
  ASSERT_EQ(failed.rows(), 1);
  EXPECT_EQ(failed.Get<std::string>(0, 0), "id = -1: text feature 'subject || ' ' || body' is NULL");
}

// `runnel load` fills a text pipeline's text columns with words, and every synthetic
// ticket is routed to a queue of the model's.
TEST_F(TextPipelineTest, SyntheticTicketsHaveTextAndAreRouted) {
  const auto config = Config();
  Migrate(*conn_, config);
  LoadOptions load;
  load.rows = 250;
  load.rows_per_txn = 100;
  load.seed = 7;
  EXPECT_EQ(LoadSyntheticRequests(*conn_, config, load).inserted, 250);
  EXPECT_EQ(Count(*conn_, "SELECT count(*) FROM tickets WHERE length(subject) > 5 AND length(body) > 5"), 250);
  EXPECT_GT(Count(*conn_, "SELECT count(DISTINCT body) FROM tickets"), 200) << "texts vary";
  const auto summary =
      RunPipeline(config, ModelProvider::Fixed(model::LoadModel(*config.model_path)), conninfo(), UntilIdle());
  EXPECT_EQ(summary.done, 250u);
  std::string queues;
  for (const auto& label : labels_) queues += (queues.empty() ? "'" : ", '") + label + "'";
  EXPECT_EQ(Count(*conn_, fmt::format("SELECT count(*) FROM tickets WHERE queue IN ({})", queues)), 250);
}

TEST_F(TextPipelineTest, AnOutputListedAsALabelMustBeOneAndKeepsItsType) {
  auto config = Config();
  Migrate(*conn_, config);
  // The model gives labels only for its first output.
  config.label_outputs = {"p_" + labels_[0]};
  EXPECT_THROW(Migrate(*conn_, config), Error) << "the results column is double precision";
  try {
    OutputPlan::Resolve(config, features::FeatureProgram::Compile(config.features, "t.toml"),
                        *model::LoadModel(*config.model_path));
    ADD_FAILURE() << "resolved";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lists 'p_" + labels_[0] + "' in model.labels, but"), std::string::npos)
        << e.what();
  }
}

// Random weights (--epochs 0): what is checked is the serving, not the training.
PythonFixtures& Reviews() {
  static PythonFixtures fixtures("../../examples/reviews/build_reviews.py", "--epochs 0 --reviews 300");
  return fixtures;
}

class ReviewsPipelineTest : public runnel::testing::PostgresTest {
 protected:
  void SetUp() override {
    if (!Reviews().Ready("python3-torch, python3-onnx and python3-regex")) GTEST_SKIP();
    PostgresTest::SetUp();
    conn_ = std::make_unique<postgres::Connection>(Connect());
    conn_->Exec(ReadFileBytes(std::filesystem::path(RUNNEL_SOURCE_DIR) / "examples/reviews/schema.sql"));
  }
  std::unique_ptr<postgres::Connection> conn_;
};

TEST_F(ReviewsPipelineTest, EmotionsFollowPyTorchsLogitsThroughTheDatabase) {
  const auto config = LoadPipelineConfig(Reviews() / "pipeline.toml");  // as build_reviews.py writes it
  Migrate(*conn_, config);
  std::ifstream in(Reviews() / "reviews.csv");
  CsvReader reader(in, ',');
  std::vector<std::string> fields;
  reader.Next(fields);  // id, title, body, emotion, split
  size_t n = 0;
  while (reader.Next(fields)) {
    conn_->Exec("INSERT INTO reviews (id, title, body) VALUES ($1::bigint, $2, $3)",
                Params().Add(fields[0]).Add(fields[1]).Add(fields[2]));
    ++n;
  }
  const RunOptions options = UntilIdle();
  const auto summary = RunPipeline(config, ModelProvider::Fixed(LoadFileModel(config, "")), conninfo(), options);
  EXPECT_EQ(summary.done, n);
  EXPECT_EQ(summary.failed, 0u);

  const auto labels = Lines(Reviews() / "labels.txt");
  ASSERT_EQ(labels.size(), 6u);
  size_t checked = 0;
  for (const auto& row : runnel::testing::ReadCsv(Reviews() / "reviews_expected.csv")) {
    std::string probabilities;
    for (const auto& label : labels) probabilities += ", r.p_" + label;
    auto got = conn_->Exec(
        fmt::format("SELECT r.emotion, v.emotion{} FROM runnel_reviews_results r JOIN reviews v ON v.id = r.key "
                    "WHERE r.key = $1 AND r.status = 'done'",
                    probabilities),
        Params().Add(static_cast<int64_t>(row[0])));
    ASSERT_EQ(got.rows(), 1) << "review " << row[0];
    const std::vector<float> logits(row.begin() + 1, row.end());
    const size_t best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(got.Get<std::string>(0, 0), labels[best]) << "review " << row[0];
    EXPECT_EQ(got.Get<std::string>(0, 1), labels[best]) << "written back, review " << row[0];
    double sum = 0;
    for (const float z : logits) sum += std::exp(z - logits[best]);
    for (size_t c = 0; c < labels.size(); ++c)
      EXPECT_NEAR(got.Get<double>(0, 2 + static_cast<int>(c)), std::exp(logits[c] - logits[best]) / sum, 1e-5)
          << "review " << row[0] << ", p_" << labels[c];
    ++checked;
  }
  EXPECT_EQ(checked, 64u);
}

}  // namespace
}  // namespace runnel::pipeline
