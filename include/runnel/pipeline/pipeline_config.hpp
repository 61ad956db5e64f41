// The pipeline file: one TOML file declaring a workload. Format (see
// docs/pipeline-format.md for the full reference):
//
//   name = "needs"
//   [source]
//   table   = "needs"                  # the table whose inserts are requests
//   key     = "id"                     # the request key column
//   columns = ["age", "wealth", ...]   # numeric input columns
//   [model]
//   path    = "model.h5"               # relative to this file; --model overrides
//   outputs = ["risk_propensity"]      # names of the model's output columns
//   [[derived]]                        # named expressions, in order
//   name = "financial_status"
//   expr = "financial_education * ln(wealth)"
//   [features]
//   inputs = ["age", "box_cox(income, 0.30)", ...]   # the model input vector
//   means  = [...]                     # optional standard scaling, per feature column
//   scales = [...]
//   [output]
//   columns = ["risk_propensity", "financial_status"]  # model outputs or derived names
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "runnel/features/features.hpp"

namespace runnel::pipeline {

struct PipelineConfig {
  std::filesystem::path file;  // the file read
  std::string name;
  std::string table;
  std::string key_column;
  std::optional<std::filesystem::path> model_path;  // absolute once loaded
  std::vector<std::string> model_outputs;
  features::FeatureSpec features;
  std::vector<std::string> output_columns;
};

// Reads and checks a pipeline file. Throws Error(Config) naming the file, line and
// key; Error(Io) when it cannot be read. Expressions are checked by compiling them.
PipelineConfig LoadPipelineConfig(const std::filesystem::path& file);

}  // namespace runnel::pipeline
