#include "outputs_json.hpp"

#include <fmt/format.h>

namespace runnel::server {

nlohmann::json OutputsJson(const pipeline::PipelineConfig& config, const postgres::Result& result, int row, int first) {
  nlohmann::json outputs = nlohmann::json::object();
  for (size_t o = 0; o < config.output_columns.size(); ++o) {
    const std::string& name = config.output_columns[o];
    const int c = first + static_cast<int>(o);
    if (result.IsNull(row, c)) {
      outputs[name] = nullptr;
    } else if (pipeline::IsLabelOutput(config, name)) {
      outputs[name] = result.Get<std::string>(row, c);
    } else {
      outputs[name] = result.Get<double>(row, c);
    }
  }
  return outputs;
}

std::string OutputSelectSql(const pipeline::PipelineConfig& config, const std::string& column,
                            const std::string& alias) {
  return fmt::format("{}.{}::{}", alias, postgres::QuoteIdentifier(column),
                     pipeline::IsLabelOutput(config, column) ? "text" : "float8");
}

}  // namespace runnel::server
