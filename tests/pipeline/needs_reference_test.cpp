// The real needs models from ../shared, with examples/needs/pipeline.toml, reproduce
// the predictions their own tools made (Keras for .h5/.keras, a Rust/burn runtime for
// .onnx) within 1e-5, whatever the batch size.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "../support/random.hpp"
#include "../support/shared_fixtures.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/pipeline/csv_scoring.hpp"

namespace runnel::pipeline {
namespace {

using runnel::testing::SharedDir;

std::map<std::string, std::map<std::string, double>> ReadCsvByKey(std::istream& in, const std::string& key) {
  CsvReader reader(in, ',');
  std::vector<std::string> header, fields;
  EXPECT_TRUE(reader.Next(header));
  std::map<std::string, std::map<std::string, double>> rows;
  size_t key_index = std::find(header.begin(), header.end(), key) - header.begin();
  while (reader.Next(fields)) {
    for (size_t i = 0; i < fields.size() && i < header.size(); ++i) {
      if (i != key_index && !fields[i].empty() && header[i] != "error")
        rows[fields[key_index]][header[i]] = std::stod(fields[i]);
    }
  }
  return rows;
}

std::string Score(const std::string& model_file, size_t batch_size) {
  auto config = LoadPipelineConfig(std::filesystem::path(RUNNEL_SOURCE_DIR) / "examples/needs/pipeline.toml");
  auto model = model::LoadModel(SharedDir() / "models/needs" / model_file);
  std::ifstream in(SharedDir() / "data/needs/Needs.csv", std::ios::binary);
  std::ostringstream out;
  CsvScoringOptions options;
  options.batch_size = batch_size;
  auto summary = ScoreCsv(config, model, in, out, options);
  EXPECT_EQ(summary.rows, 5000u);
  EXPECT_EQ(summary.failed, 0u);
  return out.str();
}

void ExpectMatchesReference(const std::string& scored, const std::string& reference_file,
                            const std::vector<std::string>& columns) {
  std::istringstream scored_in(scored);
  auto ours = ReadCsvByKey(scored_in, "id");
  std::ifstream ref_in(SharedDir() / "data/needs" / reference_file);
  auto reference = ReadCsvByKey(ref_in, "id");
  ASSERT_EQ(reference.size(), 200u);
  for (const auto& [id, values] : reference) {
    ASSERT_TRUE(ours.contains(id)) << "row " << id << " missing";
    for (const auto& column : columns) {
      EXPECT_NEAR(ours[id][column], values.at(column), 1e-5) << reference_file << " id " << id << " " << column;
    }
  }
}

TEST(NeedsReference, KerasHdf5ReproducesKeras) {
  RUNNEL_REQUIRE_SHARED();
  ExpectMatchesReference(Score("deep_model.h5", 1024), "reference_keras.csv", {"risk_propensity", "financial_status"});
}

TEST(NeedsReference, KerasV3ReproducesKeras) {
  RUNNEL_REQUIRE_SHARED();
  ExpectMatchesReference(Score("deep_model.keras", 1024), "reference_keras.csv",
                         {"risk_propensity", "financial_status"});
}

TEST(NeedsReference, OnnxReproducesItsReference) {
  RUNNEL_REQUIRE_SHARED();
  ExpectMatchesReference(Score("deep_model.onnx", 1024), "reference_onnx.csv", {"risk_propensity"});
}

TEST(NeedsReference, BatchSizeDoesNotChangeResults) {
  RUNNEL_REQUIRE_SHARED();
  std::mt19937_64 rng(runnel::testing::TestSeed());
  const std::string baseline = Score("deep_model.h5", 1);
  for (int i = 0; i < 3; ++i) {
    const size_t batch = std::uniform_int_distribution<size_t>(2, 700)(rng);
    EXPECT_EQ(Score("deep_model.h5", batch), baseline) << "batch size " << batch;
  }
}

}  // namespace
}  // namespace runnel::pipeline
