#include "rule_evaluator.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "runnel/pipeline/schema.hpp"

namespace runnel::pipeline {

using postgres::Params;
using postgres::QuoteIdentifier;

std::optional<RuleEvaluator> RuleEvaluator::Prepare(postgres::Connection& conn, const PipelineConfig& config,
                                                    const std::vector<size_t>& write_back_output) {
  if (!config.recommend) return std::nullopt;
  std::string why_not;
  auto parsed = RecommendRule::Parse(config.recommend->where, &why_not);
  if (!parsed) {
    spdlog::debug("[recommend] where is evaluated by PostgreSQL: {}", why_not);
    return std::nullopt;
  }
  const auto types = SourceColumns(conn, config);
  std::vector<RequestColumn> columns;
  for (const auto& name : parsed->request_columns()) {
    RequestColumn column;
    const auto type = types.find(name);
    const auto kind = type != types.end() ? ColumnKindFor(type->second) : std::nullopt;
    // Not bigint: inputs are read as float8 (inexact past 2^53). Other types do not
    // compare as doubles.
    if (!kind || *kind == RuleColumnKind::kBigint) {
      spdlog::debug("[recommend] where is evaluated by PostgreSQL: r.{} is {}", name,
                    type != types.end() ? type->second : "not a column of " + config.table);
      return std::nullopt;
    }
    column.kind = *kind;
    const auto written = std::find(config.write_back.begin(), config.write_back.end(), name);
    const auto& inputs = config.features.input_columns;
    const auto input = std::find(inputs.begin(), inputs.end(), name);
    if (written != config.write_back.end()) {
      column.output = static_cast<int>(write_back_output[static_cast<size_t>(written - config.write_back.begin())]);
    } else if (input != inputs.end()) {
      column.input = static_cast<int>(input - inputs.begin());
    } else {
      spdlog::debug("[recommend] where is evaluated by PostgreSQL: r.{} is neither an input nor written back", name);
      return std::nullopt;
    }
    columns.push_back(column);
  }
  std::string select = fmt::format("SELECT p.{}::bigint", QuoteIdentifier(config.recommend->key_column));
  for (const auto& name : parsed->product_columns()) select += ", p." + QuoteIdentifier(name);
  auto sql =
      fmt::format("{} FROM {} p LIMIT {}", select, QuoteIdentifier(config.recommend->table), kSmallCatalogue + 1);
  return RuleEvaluator(std::move(*parsed), std::move(columns), std::move(sql));
}

bool RuleEvaluator::ReadCatalogue(postgres::Connection& conn) {
  auto products = conn.ExecPrepared(catalogue_sql_, Params());
  if (products.rows() > kSmallCatalogue) return false;
  const size_t width = rule_.product_columns().size();
  using namespace postgres::type_oid;
  for (size_t c = 0; c < width; ++c) {
    const Oid type = products.ColumnType(static_cast<int>(c + 1));
    if (type != kInt2 && type != kInt4 && type != kInt8 && type != kFloat4 && type != kFloat8) return false;
  }
  const auto rows = static_cast<size_t>(products.rows());
  catalogue_keys_.resize(rows);
  catalogue_values_.assign(rows * width, 0.0);
  catalogue_nulls_.assign(rows * width, 0);
  for (size_t p = 0; p < rows; ++p) {
    if (products.IsNull(static_cast<int>(p), 0)) return false;
    catalogue_keys_[p] = products.Get<int64_t>(static_cast<int>(p), 0);
    for (size_t c = 0; c < width; ++c) {
      const int column = static_cast<int>(c + 1);
      if (products.IsNull(static_cast<int>(p), column)) {
        catalogue_nulls_[p * width + c] = 1;
        continue;
      }
      const double value = products.Get<double>(static_cast<int>(p), column);
      if (products.ColumnType(column) == kInt8 && std::fabs(value) >= 9007199254740992.0) return false;
      catalogue_values_[p * width + c] = value;
    }
  }
  return true;
}

bool RuleEvaluator::Recommend(postgres::Connection& conn, const std::vector<std::optional<RequestStatus>>& status,
                              const std::vector<std::vector<std::optional<double>>>& outputs,
                              const ColumnBatch& inputs) {
  if (!ReadCatalogue(conn)) return false;
  const size_t rows = catalogue_keys_.size();
  const size_t width = rule_.product_columns().size();
  const size_t n = status.size();
  const size_t request_width = request_.size();
  request_values_.assign(request_width, 0.0);
  request_nulls_.assign(request_width, 0);
  recommended_keys_.clear();
  recommended_from_.assign(n, 1);
  recommended_to_.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (status[i] != RequestStatus::kDone) continue;
    // r as written back: outputs take the column's type as the UPDATE casts them.
    for (size_t c = 0; c < request_width; ++c) {
      const RequestColumn& column = request_[c];
      std::optional<double> value;
      if (column.output >= 0) {
        value = outputs[static_cast<size_t>(column.output)][i];
        if (value && column.kind == RuleColumnKind::kFloat4) value = static_cast<double>(static_cast<float>(*value));
        if (value && column.kind == RuleColumnKind::kInteger) value = std::nearbyint(*value);
      } else if (!inputs.nulls[static_cast<size_t>(column.input)][i]) {
        value = inputs.values[static_cast<size_t>(column.input)][i];
      }
      request_nulls_[c] = value ? 0 : 1;
      request_values_[c] = value.value_or(0.0);
    }
    recommended_from_[i] = static_cast<int64_t>(recommended_keys_.size()) + 1;
    const RuleValues request{request_values_.data(), request_nulls_.data()};
    for (size_t p = 0; p < rows; ++p) {
      if (rule_.Matches({catalogue_values_.data() + p * width, catalogue_nulls_.data() + p * width}, request)) {
        recommended_keys_.push_back(catalogue_keys_[p]);
      }
    }
    recommended_to_[i] = static_cast<int64_t>(recommended_keys_.size());
  }
  return true;
}

}  // namespace runnel::pipeline
