// The ready-made analyses of a snapshot (snapshot.hpp: Analyses), as SQL over its
// tables and views.
#include <fmt/format.h>

#include "duckdb.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::snapshot {

namespace {

constexpr int kDriftBins = 20;

std::string ClientsPerHourSql(const std::string& client) {
  return fmt::format(
      "SELECT date_trunc('hour', r.finished_at) AS hour, CAST(i.{} AS VARCHAR) AS client, count(*) AS requests, "
      "count(*) FILTER (WHERE r.status = 'throttled') AS throttled, count(*) FILTER (WHERE r.status = 'failed') AS "
      "failed FROM results r LEFT JOIN inputs i ON i.request_id = r.key GROUP BY ALL ORDER BY hour DESC, requests "
      "DESC, client LIMIT 200",
      duck::Identifier(client));
}

std::string OutputsByVersionSql(const std::vector<std::string>& outputs) {
  std::string sql;
  for (const auto& output : outputs) {
    const std::string column = duck::Identifier(output);
    if (!sql.empty()) sql += " UNION ALL ";
    sql += fmt::format(
        "SELECT model_version, {} AS output, count({c}) AS n, avg({c}) AS mean, quantile_cont({c}, 0.05) AS p05, "
        "quantile_cont({c}, 0.5) AS p50, quantile_cont({c}, 0.95) AS p95 FROM results WHERE status = 'done' "
        "GROUP BY model_version",
        duck::Literal(output), fmt::arg("c", column));
  }
  return "SELECT * FROM (" + sql + ") ORDER BY model_version, output";
}

// Per model version and numeric output, a 20-bin histogram over the version's range,
// counted over the version's first hour and over its last hour: drift at a glance.
std::string DriftSql(const std::vector<std::string>& outputs) {
  std::string sql;
  for (const auto& output : outputs) {
    if (!sql.empty()) sql += " UNION ALL ";
    sql += fmt::format(
        "SELECT * FROM (WITH d AS (SELECT model_version, CAST({c} AS DOUBLE) AS x, finished_at FROM results "
        "WHERE status = 'done' AND isfinite({c})), "
        "v AS (SELECT model_version, min(finished_at) AS first_at, max(finished_at) AS last_at, min(x) AS lo, "
        "max(x) AS hi FROM d GROUP BY ALL), "
        "b AS (SELECT d.model_version, v.lo, v.hi, least({n} - 1, CAST(floor((d.x - v.lo) / greatest(v.hi - v.lo, "
        "1e-300) * {n}) AS INTEGER)) AS bin, d.finished_at < v.first_at + INTERVAL 1 HOUR AS first_hour, "
        "d.finished_at > v.last_at - INTERVAL 1 HOUR AS last_hour FROM d JOIN v USING (model_version)) "
        "SELECT model_version, {name} AS output, bin, lo + (hi - lo) * bin / {n} AS lower, count(*) FILTER "
        "(WHERE first_hour) AS first_hour, count(*) FILTER (WHERE last_hour) AS last_hour FROM b GROUP BY ALL)",
        fmt::arg("c", duck::Identifier(output)), fmt::arg("name", duck::Literal(output)), fmt::arg("n", kDriftBins));
  }
  return "SELECT * FROM (" + sql + ") ORDER BY model_version, output, bin";
}

constexpr const char* kLatencySql =
    "SELECT model_version, count(*) AS n, quantile_cont(latency_ms, 0.5) AS p50, quantile_cont(latency_ms, 0.95) AS "
    "p95, quantile_cont(latency_ms, 0.99) AS p99 FROM requests WHERE status = 'done' GROUP BY ALL ORDER BY 1";

std::string StageSql() {
  std::string names;
  for (size_t i = 0; i < pipeline::kStageCount; ++i) {
    names += fmt::format("{}({}, {})", i == 0 ? "" : ", ", i + 1, duck::Literal(pipeline::kStageNames[i]));
  }
  // Each sample is a second of one process: its stages' seconds summed over its batches.
  return fmt::format(
      "SELECT n.name AS stage, quantile_cont(s.ms, 0.5) AS p50, quantile_cont(s.ms, 0.95) AS p95, "
      "quantile_cont(s.ms, 0.99) AS p99 FROM (SELECT unnest(range(1, len(stage_seconds) + 1)) AS i, "
      "unnest(stage_seconds) * 1000.0 / batches AS ms FROM samples WHERE batches > 0) s "
      "JOIN (VALUES {}) AS n(i, name) ON n.i = s.i GROUP BY n.i, n.name ORDER BY n.i",
      names);
}

bool HasTable(const Reader& reader, const std::string& name, const QueryLimits& limits) {
  const auto answer = Query(
      reader, fmt::format("SELECT count(*) FROM duckdb_tables() WHERE table_name = {}", duck::Literal(name)), limits);
  return !answer.rows.empty() && answer.rows[0][0] == "1";
}

}  // namespace

std::vector<Analysis> Analyses(const Reader& reader, const pipeline::PipelineConfig& config,
                               const QueryLimits& limits) {
  std::vector<Analysis> out;
  if (!config.client_column.empty()) {
    out.push_back({"clients_per_hour", Query(reader, ClientsPerHourSql(config.client_column), limits)});
  }
  std::vector<std::string> numeric;
  for (const auto& output : config.output_columns) {
    if (!pipeline::IsLabelOutput(config, output)) numeric.push_back(output);
  }
  if (!numeric.empty()) {
    out.push_back({"outputs_by_version", Query(reader, OutputsByVersionSql(numeric), limits)});
    out.push_back({"drift", Query(reader, DriftSql(numeric), limits)});
  }
  out.push_back({"latency_by_version", Query(reader, kLatencySql, limits)});
  if (HasTable(reader, "samples", limits)) out.push_back({"stage_ms", Query(reader, StageSql(), limits)});
  return out;
}

}  // namespace runnel::snapshot
