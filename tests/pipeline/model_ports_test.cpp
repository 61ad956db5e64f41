// A model whose inputs are a table's columns by name (as skl2onnx converts a pipeline
// fitted on a DataFrame: "region" int64, "income", "age" floats, each [None, 1]) served
// through PostgreSQL with [model] inputs and output_from, the features listed in
// another order than the graph's inputs: every label and probability equals
// scikit-learn's (tests/model/sklearn_pipeline_fixtures.py). And what a binding that
// does not fit the model is told.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>

#include "../support/pg_environment.hpp"
#include "../support/python_fixtures.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/outputs.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"

namespace runnel::pipeline {
namespace {

using postgres::Params;
using runnel::testing::PythonFixtures;
using runnel::testing::ReadCsv;

PythonFixtures& Sklearn() {
  static PythonFixtures fixtures("sklearn_pipeline_fixtures.py");
  return fixtures;
}

// The binding the tests start from; `model` replaces the [model] lines after `path`.
constexpr const char* kBindings =
    "outputs = [\"approved\", \"p_yes\"]\n"
    "inputs = { region = [\"region\"], income = [\"income\"], age = [\"age\"] }\n"
    "output_from = { approved = \"label\", p_yes = \"output_probability[1]\" }\n";

class ModelPortsTest : public runnel::testing::PostgresTest {
 protected:
  void SetUp() override {
    if (!Sklearn().Ready("python3-sklearn and python3-onnx")) GTEST_SKIP();
    PostgresTest::SetUp();
  }

  PipelineConfig Config(const std::string& model = kBindings) {
    const std::string toml = fmt::format(
        "name = \"applicants\"\n[source]\ntable = \"applicants\"\nkey = \"id\"\n"
        "columns = [\"age\", \"income\", \"region\"]\n"
        "[model]\npath = \"{}\"\n{}"
        "[features]\ninputs = [\"age\", \"income\", \"region\"]\n[output]\ncolumns = [\"approved\", \"p_yes\"]\n",
        (Sklearn() / "column_inputs.onnx").string(), model);
    runnel::testing::WriteFile(dir_ / "applicants.toml", toml);
    return LoadPipelineConfig(dir_ / "applicants.toml");
  }

  // What Resolve says of `model_lines`, or "" when it resolves.
  std::string ResolveError(const std::string& model_lines) {
    const auto config = Config(model_lines);
    try {
      OutputPlan::Resolve(config, features::FeatureProgram::Compile(config.features, "t.toml"),
                          *model::LoadModel(*config.model_path));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  runnel::testing::TempDir dir_{"runnel-ports"};
};

TEST_F(ModelPortsTest, NamedInputsAndOutputsAnswerAsScikitLearn) {
  auto conn = Connect();
  conn.Exec("CREATE TABLE applicants (id bigint PRIMARY KEY, age real, income real, region integer)");
  const auto config = Config();
  Migrate(conn, config);
  // input.csv: region, income, age (the graph's order); expected: label, p(0), p(1).
  const auto input = ReadCsv(Sklearn() / "column_inputs.input.csv");
  const auto expected = ReadCsv(Sklearn() / "column_inputs.expected.csv");
  ASSERT_EQ(input.size(), expected.size());
  for (size_t r = 0; r < input.size(); ++r) {
    conn.Exec(
        "INSERT INTO applicants (id, region, income, age) VALUES ($1, $2, $3, $4)",
        Params().Add(static_cast<int64_t>(r)).Add(static_cast<int64_t>(input[r][0])).Add(input[r][1]).Add(input[r][2]));
  }
  RunOptions options;
  options.workers = 2;
  options.until_idle = true;
  options.idle_wait = std::chrono::milliseconds(50);
  const auto summary =
      RunPipeline(config, ModelProvider::Fixed(model::LoadModel(*config.model_path)), conninfo(), options);
  EXPECT_EQ(summary.done, input.size());
  auto rows = conn.Exec("SELECT key, approved, p_yes FROM runnel_applicants_results ORDER BY key", Params());
  ASSERT_EQ(rows.rows(), static_cast<int>(input.size()));
  int positives = 0;
  for (int i = 0; i < rows.rows(); ++i) {
    const auto r = static_cast<size_t>(rows.Get<int64_t>(i, 0));
    EXPECT_EQ(rows.Get<double>(i, 1), expected[r][0]) << "row " << r;
    EXPECT_NEAR(rows.Get<double>(i, 2), expected[r][2], 1e-4) << "row " << r;
    positives += expected[r][0] == 1.0f;
  }
  // Both classes occur, so a label taken from the wrong place cannot pass.
  EXPECT_GT(positives, 10);
  EXPECT_LT(positives, rows.rows() - 10);
}

TEST_F(ModelPortsTest, ABindingThatDoesNotFitTheModelIsRefusedNamingIt) {
  EXPECT_EQ(ResolveError(kBindings), "");
  const auto refused = [&](const std::string& inputs, const std::string& output_from, const std::string& expected) {
    const std::string error = ResolveError("outputs = [\"approved\", \"p_yes\"]\ninputs = { " + inputs +
                                           " }\noutput_from = { " + output_from + " }\n");
    EXPECT_NE(error.find(expected), std::string::npos) << "inputs " << inputs << ": " << error;
  };
  const std::string inputs = "region = [\"region\"], income = [\"income\"], age = [\"age\"]";
  const std::string outputs = "approved = \"label\", p_yes = \"output_probability[1]\"";
  refused("region = [\"region\"], income = [\"income\"]", outputs, "model.inputs gives nothing for input 'age' of");
  refused(inputs + ", height = [\"age\"]", outputs, "model.inputs names 'height', which");
  refused("region = [\"region\"], income = [\"income\", \"age\"], age = [\"age\"]", outputs,
          "model.inputs.income names 2 feature(s), but input 'income' of");
  refused("region = [\"region\"], income = [\"salary\"], age = [\"age\"]", outputs,
          "model.inputs.income names 'salary', which is not one of [features] inputs (age, income, region)");
  refused(inputs, "approved = \"label\", p_yes = \"probability[1]\"", "names 'probability', which");
  refused(inputs, "approved = \"label\", p_yes = \"output_probability[2]\"",
          "takes element 2 of 'output_probability', which has 2 value(s) a row");
}

}  // namespace
}  // namespace runnel::pipeline
