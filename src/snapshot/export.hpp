// How a pipeline's PostgreSQL tables become DuckDB tables: the tables copied, and per
// column how it is written by COPY ... (FORMAT csv) and read back by DuckDB's read_csv.
// Pure functions: no database (unit-tested in tests/snapshot).
#pragma once

#include <libpq-fe.h>

#include <string>
#include <string_view>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/schema.hpp"

namespace runnel::snapshot {

struct ColumnPlan {
  std::string name;        // as in PostgreSQL
  std::string copy_expr;   // selected from the row `s` for COPY
  std::string csv_type;    // DuckDB type read_csv reads it as
  std::string final_type;  // DuckDB type of the snapshot's column (cast from csv_type)
};

// The plan of column number `index` named `name` of PostgreSQL type `type`: numbers,
// booleans, text, uuid, dates and timestamps as themselves; json/jsonb as JSON; arrays
// of numbers, booleans or text as DuckDB lists (through their JSON text); any other
// type as its text.
ColumnPlan PlanColumn(std::string_view name, Oid type);

struct TableCopy {
  std::string name;    // in the snapshot
  std::string select;  // a PostgreSQL query
};

// The tables of a snapshot: results, inputs (the source rows' request id, key,
// client and input columns; write-back columns are in results), quota, and when the
// database has them, models (registry versions of the pipeline's model, without their
// bytes) and samples (the per-second dashboard samples).
std::vector<TableCopy> TablesToCopy(const pipeline::PipelineConfig& config, const pipeline::SchemaNames& names,
                                    const pipeline::RequestKeys& keys, bool with_models, bool with_samples);

// COPY (SELECT <copy_expr>... FROM (<select>) s) TO STDOUT (FORMAT csv)
std::string CopyOutSql(const std::string& select, const std::vector<ColumnPlan>& columns);
// CREATE TABLE <table> AS SELECT CAST(...) ... FROM read_csv(<csv_path>, ...)
std::string LoadCsvSql(const std::string& table, const std::string& csv_path, const std::vector<ColumnPlan>& columns);
// The `requests` view: each result with its latency and its row's inputs (an input
// column whose name a results column has is renamed input_<name>).
std::string RequestsViewSql(const std::vector<ColumnPlan>& results, const std::vector<ColumnPlan>& inputs);

}  // namespace runnel::snapshot
