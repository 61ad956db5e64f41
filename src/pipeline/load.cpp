#include "runnel/pipeline/load.hpp"

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "runnel/core/error.hpp"
#include "runnel/postgres/arrays.hpp"

namespace runnel::pipeline {
namespace {

struct Range {
  double lo, hi;
  bool integer;
};

const std::map<std::string, Range>& KnownRanges() {
  static const std::map<std::string, Range> kRanges = {
      {"age", {18, 90, true}},
      {"gender", {0, 1, true}},
      {"family_members", {0, 5, true}},
      {"financial_education", {0.036, 0.903, false}},
      {"income", {1.54, 365.3, false}},
      {"wealth", {1.06, 2233.2, false}},
      {"income_investment", {0, 1, true}},
      {"accumulation_investment", {0, 1, true}},
  };
  return kRanges;
}

}  // namespace

LoadSummary LoadSyntheticRequests(postgres::Connection& conn, const PipelineConfig& config,
                                  const LoadOptions& options) {
  if (options.rows < 0 || options.rows_per_txn < 1 || options.clients < 1) {
    throw Error(ErrorCode::InvalidInput, "rows, rows per transaction and clients must be positive");
  }
  const std::string table = postgres::QuoteIdentifier(config.table);
  const std::string key = postgres::QuoteIdentifier(config.key_column);
  LoadSummary summary;
  // A key with its own sequence (serial, identity) is left to it, so that rows from
  // other writers (the HTTP API) never collide; otherwise keys continue after max().
  const bool sequenced =
      !conn.Exec("SELECT pg_get_serial_sequence($1, $2)", postgres::Params().Add(table).Add(config.key_column))
           .IsNull(0, 0);
  int64_t next = sequenced
                     ? 1
                     : conn.Exec(fmt::format("SELECT coalesce(max({}), 0) + 1 FROM {}", key, table), postgres::Params())
                           .Get<int64_t>(0, 0);
  if (!sequenced) summary.first_key = next;
  std::vector<std::string> columns;
  if (!sequenced) columns.push_back(config.key_column);
  if (!config.client_column.empty()) columns.push_back(config.client_column);
  const size_t fixed = columns.size();
  for (const auto& c : config.features.input_columns) columns.push_back(c);
  std::string names, types;
  for (size_t i = 0; i < columns.size(); ++i) {
    names += (i ? ", " : "") + postgres::QuoteIdentifier(columns[i]);
    types += fmt::format("{}${}::{}", i ? ", " : "", i + 1, i < fixed ? "bigint[]" : "float8[]");
  }
  const std::string sql =
      fmt::format("INSERT INTO {} ({}) SELECT * FROM unnest({}) RETURNING {}", table, names, types, key);
  std::mt19937_64 rng(options.seed);
  const auto start = std::chrono::steady_clock::now();
  while (summary.inserted < options.rows) {
    if (options.cancelled != nullptr && (*options.cancelled)()) break;
    const int64_t n = std::min(options.rows_per_txn, options.rows - summary.inserted);
    std::vector<int64_t> keys, clients;
    std::vector<std::vector<std::optional<double>>> values(config.features.input_columns.size());
    for (int64_t i = 0; i < n; ++i) {
      keys.push_back(next + i);
      clients.push_back((next + i - 1) % options.clients + 1);
      for (size_t c = 0; c < values.size(); ++c) {
        auto it = KnownRanges().find(config.features.input_columns[c]);
        const Range range = it != KnownRanges().end() ? it->second : Range{0, 1, false};
        values[c].push_back(range.integer ? static_cast<double>(std::uniform_int_distribution<int64_t>(
                                                static_cast<int64_t>(range.lo), static_cast<int64_t>(range.hi))(rng))
                                          : std::uniform_real_distribution<double>(range.lo, range.hi)(rng));
      }
    }
    postgres::Params params;
    if (!sequenced) params.Add(postgres::ArrayLiteral(keys));
    if (!config.client_column.empty()) params.Add(postgres::ArrayLiteral(clients));
    for (const auto& v : values) params.Add(postgres::ArrayLiteral(v));
    auto inserted = conn.Exec(sql, params);
    if (summary.inserted == 0 && inserted.rows() > 0) summary.first_key = inserted.Get<int64_t>(0, 0);
    summary.inserted += n;
    next += n;
    if (options.rate > 0) {
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(static_cast<double>(summary.inserted) / options.rate)));
    }
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace runnel::pipeline
