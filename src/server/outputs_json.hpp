// A result row's outputs as the API shows them: {"column": value}, numbers for model
// outputs and derived features, text for class labels ([model].labels), null when
// absent. Shared by GET .../requests and the result events.
#pragma once

#include <nlohmann/json.hpp>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::server {

// The output columns of row `row` of `result`, the first at column `first`, in
// [output].columns order.
nlohmann::json OutputsJson(const pipeline::PipelineConfig& config, const postgres::Result& result, int row, int first);

// The SQL that reads output `column` of results alias `alias` as OutputsJson expects.
std::string OutputSelectSql(const pipeline::PipelineConfig& config, const std::string& column,
                            const std::string& alias);

}  // namespace runnel::server
