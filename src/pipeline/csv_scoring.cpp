#include "runnel/pipeline/csv_scoring.hpp"

#include "runnel/pipeline/outputs.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <map>

#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"

namespace runnel::pipeline {
namespace {

std::optional<double> ParseNumber(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

// Where the pipeline's columns are in the input's header (matched as NormalizeColumnName
// matches them). Without the key columns (a bare data file), rows are numbered from 1.
struct CsvColumns {
  std::vector<std::string> header;
  bool has_key = false;
  std::vector<size_t> key, inputs, texts;

  CsvColumns(std::vector<std::string> names, const PipelineConfig& config, const features::FeatureProgram& program,
             const std::string& input_name)
      : header(std::move(names)) {
    std::map<std::string, size_t> by_name;
    for (size_t i = 0; i < header.size(); ++i) by_name.emplace(NormalizeColumnName(header[i]), i);
    auto locate = [&](const std::string& column) {
      auto it = by_name.find(NormalizeColumnName(column));
      if (it == by_name.end()) {
        throw Error(ErrorCode::InvalidInput, fmt::format("{}: no column matches '{}' (columns: {})", input_name, column,
                                                         fmt::join(header, ", ")));
      }
      return it->second;
    };
    has_key = std::all_of(config.key_columns.begin(), config.key_columns.end(),
                          [&](const std::string& c) { return by_name.contains(NormalizeColumnName(c)); });
    if (has_key) {
      for (const auto& column : config.key_columns) key.push_back(locate(column));
    }
    for (const auto& column : program.input_columns()) inputs.push_back(locate(column));
    for (const auto& column : program.text_columns()) texts.push_back(locate(column));
  }
};

// The header line: the key columns (or the first, for row numbers), the pipeline's
// [output].columns whatever the model's format, as the live pipeline writes them, and
// `error`.
std::string HeaderLine(const PipelineConfig& config, bool has_key) {
  std::string line;
  for (size_t k = 0; k < config.key_columns.size(); ++k) {
    if (k > 0) line += ',';
    AppendCsvField(line, has_key ? config.key_columns[k] : config.key_columns.front(), ',');
    if (!has_key) break;
  }
  for (const auto& column : config.output_columns) {
    line += ',';
    AppendCsvField(line, column, ',');
  }
  line += ",error\n";
  return line;
}

// One batch of input rows: their keys as written out, their columns, and the reason a
// row could not be read (empty: it could).
struct CsvBatch {
  ColumnBatch columns;
  std::vector<std::string> keys;
  std::vector<std::string> errors;
};

// The key's fields, CSV-escaped and joined: written out as they are.
std::string KeyText(const CsvColumns& columns, const std::vector<std::string>& fields, size_t row_number) {
  if (!columns.has_key) return std::to_string(row_number);
  std::string key;
  for (size_t k = 0; k < columns.key.size(); ++k) {
    if (k > 0) key += ',';
    AppendCsvField(key, columns.key[k] < fields.size() ? fields[columns.key[k]] : "", ',');
  }
  return key;
}

// Appends one row's inputs to the batch. A field that is not a number fails the row
// (the first such field is named); an empty one is a NULL, reported by the features.
void AppendRow(const CsvColumns& columns, const std::vector<std::string>& fields, size_t line, std::string& error,
               ColumnBatch& batch) {
  for (size_t c = 0; c < columns.inputs.size(); ++c) {
    batch.values[c].push_back(0.0);
    batch.nulls[c].push_back(1);
    if (!error.empty() || columns.inputs[c] >= fields.size()) continue;
    const std::string& text = fields[columns.inputs[c]];
    if (text.empty()) continue;
    if (auto value = ParseNumber(text)) {
      batch.values[c].back() = *value;
      batch.nulls[c].back() = 0;
    } else {
      error = fmt::format("line {}: column '{}' is not a number: '{}'", line, columns.header[columns.inputs[c]], text);
    }
  }
  for (size_t c = 0; c < columns.texts.size(); ++c) {  // a CSV field is never a NULL text
    const bool present = error.empty() && columns.texts[c] < fields.size();
    batch.texts[c].push_back(present ? fields[columns.texts[c]] : std::string());
    batch.text_nulls[c].push_back(0);
  }
}

// Reads up to `limit` rows (blank lines skipped) into `batch`; false at the end of the
// input.
bool ReadBatch(CsvReader& reader, const CsvColumns& columns, const features::FeatureProgram& program, size_t limit,
               size_t& row_number, CsvBatch& batch) {
  batch.columns.Reset(program.input_columns(), 0, program.text_columns());
  batch.keys.clear();
  batch.errors.clear();
  std::vector<std::string> fields;
  while (batch.keys.size() < limit) {
    if (!reader.Next(fields)) return false;
    if (fields.size() == 1 && fields[0].empty()) continue;
    batch.keys.push_back(KeyText(columns, fields, ++row_number));
    std::string error;
    if (reader.malformed()) {
      error = fmt::format("line {}: unterminated quoted field", reader.line());
    } else if (fields.size() != columns.header.size()) {
      error = fmt::format("line {}: {} fields, the header has {}", reader.line(), fields.size(), columns.header.size());
    }
    AppendRow(columns, fields, reader.line(), error, batch.columns);
    batch.errors.push_back(std::move(error));
  }
  return true;
}

// One output row: the key, each output (empty when the row failed), the error.
std::string OutputLine(const OutputPlan& plan, const std::string& key, const std::string& error, size_t r,
                       const std::vector<float>& mapped, const features::FeatureOutput& features) {
  std::string line = key;
  for (size_t o = 0; o < plan.size(); ++o) {
    line += ',';
    if (!error.empty()) continue;
    if (plan.IsLabel(o)) {
      AppendCsvField(line, plan.Label(o, r, mapped).value_or(""), ',');
    } else if (const double v = plan.Value(o, r, mapped, features); !std::isnan(v)) {
      fmt::format_to(std::back_inserter(line), "{}", static_cast<float>(v));
    }
  }
  line += ',';
  AppendCsvField(line, error, ',');
  line += '\n';
  return line;
}

}  // namespace

CsvScoringSummary ScoreCsv(const PipelineConfig& config, std::shared_ptr<const model::Model> model, std::istream& in,
                           std::ostream& out, const CsvScoringOptions& options,
                           const std::function<void(const CsvScoringSummary&)>& progress) {
  auto program = features::FeatureProgram::Compile(config.features, config.file.string());
  const OutputPlan plan = OutputPlan::Resolve(config, program, *model);

  CsvReader reader(in, options.delimiter);
  std::vector<std::string> header = options.columns;
  if (header.empty() && !reader.Next(header))
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: empty input, no header", options.input_name));
  const CsvColumns columns(std::move(header), config, program, options.input_name);
  out << HeaderLine(config, columns.has_key);

  const bool named = !model->output_names().empty();
  model::ModelSession session(model);
  std::vector<float> model_input, mapped;
  features::FeatureOutput features;
  CsvBatch batch;
  CsvScoringSummary summary;
  size_t row_number = 0;
  for (bool more = true; more;) {
    more = ReadBatch(reader, columns, program, options.batch_size, row_number, batch);
    const size_t rows = batch.keys.size();
    if (rows == 0) break;
    batch.columns.rows = rows;
    program.Evaluate(batch.columns, features);
    auto predictions = session.Predict(plan.ModelInput(features.matrix, rows, model_input), rows, features.texts);
    mapped.resize(rows * config.model_outputs.size());
    plan.MapOutputs(predictions, rows, mapped.data());
    for (size_t r = 0; r < rows; ++r) {
      std::string error = !batch.errors[r].empty() ? batch.errors[r] : features.errors[r];
      if (error.empty() && std::isnan(predictions[r * model->output_width()]) && named)
        error = "the model made no prediction for this row (a missing or invalid input)";
      out << OutputLine(plan, batch.keys[r], error, r, mapped, features);
      ++summary.rows;
      if (!error.empty()) ++summary.failed;
    }
    if (progress) progress(summary);
  }
  out.flush();
  if (!out) throw Error(ErrorCode::Io, "cannot write the output");
  return summary;
}

}  // namespace runnel::pipeline
