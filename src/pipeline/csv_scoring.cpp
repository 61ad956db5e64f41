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

}  // namespace

CsvScoringSummary ScoreCsv(const PipelineConfig& config, std::shared_ptr<const model::Model> model, std::istream& in,
                           std::ostream& out, const CsvScoringOptions& options,
                           const std::function<void(const CsvScoringSummary&)>& progress) {
  auto program = features::FeatureProgram::Compile(config.features, config.file.string());
  const OutputPlan plan = OutputPlan::Resolve(config, program, *model);

  CsvReader reader(in, options.delimiter);
  std::vector<std::string> header = options.columns;
  std::vector<std::string> fields;
  if (header.empty()) {
    if (!reader.Next(header))
      throw Error(ErrorCode::InvalidInput, fmt::format("{}: empty input, no header", options.input_name));
  }
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < header.size(); ++i) by_name.emplace(NormalizeColumnName(header[i]), i);
  auto locate = [&](const std::string& column) {
    auto it = by_name.find(NormalizeColumnName(column));
    if (it == by_name.end()) {
      throw Error(ErrorCode::InvalidInput, fmt::format("{}: no column matches '{}' (columns: {})", options.input_name,
                                                       column, fmt::join(header, ", ")));
    }
    return it->second;
  };
  // Without the key columns (a bare data file), rows are numbered from 1.
  const bool has_key = std::all_of(config.key_columns.begin(), config.key_columns.end(),
                                   [&](const std::string& c) { return by_name.contains(NormalizeColumnName(c)); });
  std::vector<size_t> key_index;
  if (has_key) {
    for (const auto& column : config.key_columns) key_index.push_back(locate(column));
  }
  size_t row_number = 0;
  std::vector<size_t> input_index;
  for (const auto& column : program.input_columns()) input_index.push_back(locate(column));
  std::vector<size_t> text_index;
  for (const auto& column : program.text_columns()) text_index.push_back(locate(column));

  // The columns are the pipeline's [output].columns, whatever the model's format, as
  // the live pipeline writes them (PMML outputs are matched by name, missing ones empty).
  const bool named = !model->output_names().empty();
  const std::vector<std::string>& columns = config.output_columns;
  {
    std::string line;
    for (size_t k = 0; k < config.key_columns.size(); ++k) {
      if (k > 0) line += ',';
      AppendCsvField(line, has_key ? config.key_columns[k] : config.key_columns.front(), ',');
      if (!has_key) break;
    }
    for (const auto& column : columns) {
      line += ',';
      AppendCsvField(line, column, ',');
    }
    line += ",error\n";
    out << line;
  }
  std::vector<float> model_input, mapped;

  model::ModelSession session(model);
  ColumnBatch batch;
  features::FeatureOutput features;
  std::vector<std::string> keys;
  std::vector<std::string> parse_errors;
  CsvScoringSummary summary;
  std::string line;
  bool done = false;
  while (!done) {
    batch.Reset(program.input_columns(), 0, program.text_columns());
    keys.clear();
    parse_errors.clear();
    size_t rows = 0;
    while (rows < options.batch_size) {
      if (!reader.Next(fields)) {
        done = true;
        break;
      }
      if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
      ++row_number;
      if (!has_key) {
        keys.push_back(std::to_string(row_number));
      } else {  // the key's fields, CSV-escaped and joined: written as they are
        std::string key;
        for (size_t k = 0; k < key_index.size(); ++k) {
          if (k > 0) key += ',';
          AppendCsvField(key, key_index[k] < fields.size() ? fields[key_index[k]] : "", ',');
        }
        keys.push_back(std::move(key));
      }
      std::string error;
      if (reader.malformed()) {
        error = fmt::format("line {}: unterminated quoted field", reader.line());
      } else if (fields.size() != header.size()) {
        error = fmt::format("line {}: {} fields, the header has {}", reader.line(), fields.size(), header.size());
      }
      for (size_t c = 0; c < input_index.size(); ++c) {
        batch.values[c].push_back(0.0);
        batch.nulls[c].push_back(1);
        if (!error.empty() || input_index[c] >= fields.size()) continue;
        const std::string& text = fields[input_index[c]];
        if (text.empty()) continue;  // NULL: reported by the features
        if (auto value = ParseNumber(text)) {
          batch.values[c].back() = *value;
          batch.nulls[c].back() = 0;
        } else {
          error =
              fmt::format("line {}: column '{}' is not a number: '{}'", reader.line(), header[input_index[c]], text);
        }
      }
      for (size_t c = 0; c < text_index.size(); ++c) {  // a CSV field is never a NULL text
        const bool present = error.empty() && text_index[c] < fields.size();
        batch.texts[c].push_back(present ? fields[text_index[c]] : std::string());
        batch.text_nulls[c].push_back(0);
      }
      parse_errors.push_back(std::move(error));
      ++rows;
    }
    if (rows == 0) break;
    batch.rows = rows;
    program.Evaluate(batch, features);
    auto predictions = session.Predict(plan.ModelInput(features.matrix, rows, model_input), rows, features.texts);
    mapped.resize(rows * config.model_outputs.size());
    plan.MapOutputs(predictions, rows, mapped.data());
    const size_t model_width = model->output_width();
    for (size_t r = 0; r < rows; ++r) {
      std::string error = !parse_errors[r].empty() ? parse_errors[r] : features.errors[r];
      if (error.empty() && std::isnan(predictions[r * model_width]) && named) {
        error = "the model made no prediction for this row (a missing or invalid input)";
      }
      line.clear();
      line += keys[r];
      auto put = [&](double v) {
        line += ',';
        if (error.empty() && !std::isnan(v)) fmt::format_to(std::back_inserter(line), "{}", static_cast<float>(v));
      };
      for (size_t o = 0; o < plan.size(); ++o) {
        if (!plan.IsLabel(o)) {
          put(error.empty() ? plan.Value(o, r, mapped, features) : 0.0);
          continue;
        }
        line += ',';
        if (error.empty()) AppendCsvField(line, plan.Label(o, r, mapped).value_or(""), ',');
      }
      line += ',';
      AppendCsvField(line, error, ',');
      line += '\n';
      out << line;
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
