// Offline scoring of a CSV file with a pipeline and a model: what `runnel predict`
// runs. Rows stream through in batches; every input row yields exactly one output row,
// in input order, valid or not.
#pragma once

#include <functional>
#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "runnel/model/model.hpp"
#include "runnel/pipeline/pipeline_config.hpp"

namespace runnel::pipeline {

struct CsvScoringOptions {
  char delimiter = ',';
  std::vector<std::string> columns;  // names for a headerless input; empty: first line is the header
  size_t batch_size = 1024;
  std::string input_name = "input";  // for messages
};

struct CsvScoringSummary {
  size_t rows = 0;
  size_t failed = 0;
};

// Writes `key,<outputs...>,error` rows to `out`. A row that cannot be parsed or whose
// features are invalid gets empty outputs and its reason in `error`. Throws
// Error(InvalidInput) when the header lacks a needed column (naming it) or when the
// model's input or output width disagrees with the pipeline. `progress`, when given,
// is called after every batch with the running totals.
CsvScoringSummary ScoreCsv(const PipelineConfig& config, std::shared_ptr<const model::Model> model, std::istream& in,
                           std::ostream& out, const CsvScoringOptions& options,
                           const std::function<void(const CsvScoringSummary&)>& progress = {});

}  // namespace runnel::pipeline
