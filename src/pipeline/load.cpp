#include "runnel/pipeline/load.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>

#include "runnel/core/csv.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/schema.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <random>
#include <thread>

#include "runnel/core/error.hpp"

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

void PaceTo(std::chrono::steady_clock::time_point start, int64_t rows, double rate) {
  if (rate <= 0) return;
  std::this_thread::sleep_until(start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                            std::chrono::duration<double>(static_cast<double>(rows) / rate)));
}

namespace {

// n rows of input values, each column's drawn from its known range (0..1 otherwise).
std::vector<std::vector<std::optional<double>>> RandomInputs(const PipelineConfig& config, int64_t n,
                                                             std::mt19937_64& rng) {
  std::vector<std::vector<std::optional<double>>> values(config.features.input_columns.size());
  for (size_t c = 0; c < values.size(); ++c) {
    auto it = KnownRanges().find(config.features.input_columns[c]);
    const Range range = it != KnownRanges().end() ? it->second : Range{0, 1, false};
    for (int64_t i = 0; i < n; ++i) {
      values[c].push_back(range.integer ? static_cast<double>(std::uniform_int_distribution<int64_t>(
                                              static_cast<int64_t>(range.lo), static_cast<int64_t>(range.hi))(rng))
                                        : std::uniform_real_distribution<double>(range.lo, range.hi)(rng));
    }
  }
  return values;
}

// n texts per text column: 3 to 60 words from a small English vocabulary (what a
// ticket or a review costs to tokenize and score, not what it says).
std::vector<std::vector<std::optional<std::string>>> RandomTexts(const PipelineConfig& config, int64_t n,
                                                                 std::mt19937_64& rng) {
  static constexpr std::string_view kWords[] = {
      "the",     "server",  "package", "cannot",  "install", "library", "python", "network", "error",
      "after",   "update",  "works",   "great",   "slow",    "screen",  "driver", "support", "please",
      "printer", "crashes", "when",    "opening", "file",    "manager", "sound",  "missing", "font",
      "kernel",  "module",  "tool",    "data",    "with",    "and",     "for",    "not",     "user"};
  std::vector<std::vector<std::optional<std::string>>> texts(config.features.text_columns.size());
  std::uniform_int_distribution<size_t> word(0, std::size(kWords) - 1), length(3, 60);
  for (auto& column : texts) {
    for (int64_t i = 0; i < n; ++i) {
      std::string text;
      for (size_t w = length(rng); w > 0; --w) text.append(text.empty() ? "" : " ").append(kWords[word(rng)]);
      column.push_back(std::move(text));
    }
  }
  return texts;
}

// The source columns a synthetic row fills besides its key — the client, the numeric
// inputs, the text columns — and the array type each travels as.
struct DataColumn {
  std::string name;
  const char* array_type;
};

std::vector<DataColumn> DataColumns(const PipelineConfig& config) {
  std::vector<DataColumn> columns;
  if (!config.client_column.empty()) columns.push_back({config.client_column, "bigint[]"});
  for (const auto& c : config.features.input_columns) columns.push_back({c, "float8[]"});
  for (const auto& c : config.features.text_columns) columns.push_back({c, "text[]"});
  return columns;
}

// Adds DataColumns' arrays for n rows, the clients given.
void AddRandomData(const PipelineConfig& config, const std::vector<int64_t>& clients, std::mt19937_64& rng,
                   postgres::Params& params) {
  const auto n = static_cast<int64_t>(clients.size());
  if (!config.client_column.empty()) params.AddArray(clients);
  for (const auto& v : RandomInputs(config, n, rng)) params.AddArray(v);
  for (const auto& t : RandomTexts(config, n, rng)) params.AddArray(t);
}

// Mapped keys are made by the database: a uuid column gets gen_random_uuid(), a text
// one a uuid's text, an integer column of a composite key the values after its
// largest. first_key stays 0 (there is no integer key to report).
LoadSummary LoadMappedKeys(postgres::Connection& conn, const PipelineConfig& config, const RequestKeys& keys,
                           const LoadOptions& options) {
  const std::string table = postgres::QuoteIdentifier(config.table);
  std::string names, selects, types, aliases;
  bool counted = false;  // $1 (rows inserted so far) is used
  for (const auto& key : keys.columns()) {
    names += (names.empty() ? "" : ", ") + postgres::QuoteIdentifier(key.name);
    std::string value = key.type == "uuid" ? "gen_random_uuid()" : "gen_random_uuid()::text";
    if (IsIntegerKeyType(key.type)) {
      const auto base = conn.Exec(fmt::format("SELECT coalesce(max({}), 0)::bigint + 1 FROM {}",
                                              postgres::QuoteIdentifier(key.name), table))
                            .Get<int64_t>(0, 0);
      value = fmt::format("{} + u.ord - 1 + $1", base);
      counted = true;
    }
    selects += (selects.empty() ? "" : ", ") + value;
  }
  const auto data = DataColumns(config);
  for (size_t i = 0; i < data.size(); ++i) {
    names += ", " + postgres::QuoteIdentifier(data[i].name);
    selects += fmt::format(", u.c{}", i);
    types += fmt::format("{}${}::{}", i ? ", " : "", i + (counted ? 2 : 1), data[i].array_type);
    aliases += fmt::format("c{}, ", i);
  }
  const std::string insert = fmt::format("INSERT INTO {} ({}) SELECT {} FROM unnest({}) WITH ORDINALITY AS u({}ord)",
                                         table, names, selects, types, aliases);
  LoadSummary summary;
  std::mt19937_64 rng(options.seed);
  const auto start = std::chrono::steady_clock::now();
  while (summary.inserted < options.rows) {
    if (options.cancelled != nullptr && (*options.cancelled)()) break;
    const int64_t n = std::min(options.rows_per_txn, options.rows - summary.inserted);
    std::vector<int64_t> clients;
    for (int64_t i = 0; i < n; ++i) clients.push_back((summary.inserted + i) % options.clients + 1);
    postgres::Params params;
    if (counted) params.Add(summary.inserted);
    AddRandomData(config, clients, rng, params);
    conn.Exec(insert, params);
    summary.inserted += n;
    PaceTo(start, summary.inserted, options.rate);
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace

int64_t ThrottledByLoad(int64_t rows, int64_t clients, int64_t max_requests, const std::map<int64_t, int64_t>& used) {
  if (rows <= 0 || clients <= 0) return 0;
  int64_t throttled = 0;
  for (int64_t c = 1; c <= clients; ++c) {
    const int64_t share = rows / clients + (c <= rows % clients ? 1 : 0);
    const auto it = used.find(c);
    const int64_t before = it == used.end() ? 0 : it->second;
    const int64_t room = std::max<int64_t>(0, max_requests - before);
    throttled += std::max<int64_t>(0, share - room);
  }
  return throttled;
}

std::optional<std::string> QuotaWarning(postgres::Connection& conn, const PipelineConfig& config,
                                        const LoadOptions& options) {
  if (!config.quota_max_requests || config.client_column.empty()) return std::nullopt;
  std::map<int64_t, int64_t> used;
  if (postgres::TableExists(conn, NamesFor(config).quota)) {
    // runnel load names its clients 1..clients. Every counter is read (as many as the
    // table holds), not one per client asked for: --clients may be any number.
    for (const auto& c : quota::Read(conn, config, {}).clients) {
      int64_t client = 0;
      const char* end = c.client.data() + c.client.size();
      auto [stop, ec] = std::from_chars(c.client.data(), end, client);
      if (ec == std::errc() && stop == end && client >= 1 && client <= options.clients) used[client] = c.requests;
    }
  }
  const int64_t throttled = ThrottledByLoad(options.rows, options.clients, *config.quota_max_requests, used);
  if (throttled == 0) return std::nullopt;
  return fmt::format(
      "about {} of these {} requests will be throttled: the quota is {} ({}), and {} clients share them; "
      "`runnel quota reset` starts the counts again",
      throttled, options.rows, quota::Describe(config), config.file.string(), options.clients);
}

std::vector<std::string> SyntheticRecords(const PipelineConfig& config, int64_t first, int64_t n, int64_t clients,
                                          uint64_t seed) {
  if (DataColumns(config).empty() || clients < 1) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("pipeline '{}' reads no column of '{}' (no input, text or client column), or no client: a "
                            "synthetic record would hold nothing",
                            config.name, config.table));
  }
  std::mt19937_64 rng(seed);
  const auto inputs = RandomInputs(config, n, rng);
  const auto texts = RandomTexts(config, n, rng);
  std::vector<std::string> records;
  records.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) {
    nlohmann::json record = nlohmann::json::object();
    if (!config.client_column.empty()) record[config.client_column] = (first + i) % clients + 1;
    for (size_t c = 0; c < inputs.size(); ++c)
      record[config.features.input_columns[c]] = *inputs[c][static_cast<size_t>(i)];
    for (size_t c = 0; c < texts.size(); ++c)
      record[config.features.text_columns[c]] = *texts[c][static_cast<size_t>(i)];
    records.push_back(record.dump());
  }
  return records;
}

LoadSummary LoadSyntheticRequests(postgres::Connection& conn, const PipelineConfig& config,
                                  const LoadOptions& options) {
  if (options.rows < 0 || options.rows_per_txn < 1 || options.clients < 1) {
    throw Error(ErrorCode::InvalidInput, "rows, rows per transaction and clients must be positive");
  }
  if (DataColumns(config).empty()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("pipeline '{}' reads no column of '{}' (no input, text or client column): a synthetic "
                            "row would hold nothing",
                            config.name, config.table));
  }
  const std::string table = postgres::QuoteIdentifier(config.table);
  const auto request_keys = RequestKeys::Resolve(config, SourceColumns(conn, config));
  if (request_keys.mapped()) return LoadMappedKeys(conn, config, request_keys, options);
  const std::string& key_column = request_keys.columns().front().name;
  const std::string key = postgres::QuoteIdentifier(key_column);
  LoadSummary summary;
  // A key with its own sequence (serial, identity) is left to it, so that rows from
  // other writers (the HTTP API) never collide; otherwise keys continue after max().
  const bool sequenced =
      !conn.Exec("SELECT pg_get_serial_sequence($1, $2)", postgres::Params().Add(table).Add(key_column)).IsNull(0, 0);
  int64_t next = sequenced
                     ? 1
                     : conn.Exec(fmt::format("SELECT coalesce(max({}), 0) + 1 FROM {}", key, table), postgres::Params())
                           .Get<int64_t>(0, 0);
  if (!sequenced) summary.first_key = next;
  std::vector<DataColumn> columns;
  if (!sequenced) columns.push_back({key_column, "bigint[]"});
  for (auto& c : DataColumns(config)) columns.push_back(std::move(c));
  std::string names, types;
  for (size_t i = 0; i < columns.size(); ++i) {
    names += (i ? ", " : "") + postgres::QuoteIdentifier(columns[i].name);
    types += fmt::format("{}${}::{}", i ? ", " : "", i + 1, columns[i].array_type);
  }
  // Only the first statement reports its first key (for the summary).
  const std::string insert = fmt::format("INSERT INTO {} ({}) SELECT * FROM unnest({})", table, names, types);
  const std::string first_sql =
      fmt::format("WITH inserted AS ({} RETURNING {} AS key) SELECT min(key) FROM inserted", insert, key);
  std::mt19937_64 rng(options.seed);
  const auto start = std::chrono::steady_clock::now();
  while (summary.inserted < options.rows) {
    if (options.cancelled != nullptr && (*options.cancelled)()) break;
    const int64_t n = std::min(options.rows_per_txn, options.rows - summary.inserted);
    std::vector<int64_t> keys, clients;
    for (int64_t i = 0; i < n; ++i) {
      keys.push_back(next + i);
      clients.push_back((next + i - 1) % options.clients + 1);
    }
    postgres::Params params;
    if (!sequenced) params.AddArray(keys);
    AddRandomData(config, clients, rng, params);
    if (summary.inserted == 0) {
      auto inserted = conn.Exec(first_sql, params);
      if (!inserted.IsNull(0, 0)) summary.first_key = inserted.Get<int64_t>(0, 0);
    } else {
      conn.Exec(insert, params);
    }
    summary.inserted += n;
    next += n;
    PaceTo(start, summary.inserted, options.rate);
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

CsvRows ReadCsvRows(const PipelineConfig& config, const std::map<std::string, std::string>& table_columns,
                    const CsvLoadOptions& options, std::vector<std::string>* ignored) {
  if (!options.data_type.empty() && config.model_type_column.empty()) {
    throw Error(
        ErrorCode::InvalidInput,
        fmt::format("--data-type needs a pipeline with [model].type_column ({} has none)", config.file.string()));
  }
  std::ifstream in(options.input, std::ios::binary);
  if (!in) throw Error(ErrorCode::Io, fmt::format("{}: cannot open", options.input));
  CsvReader reader(in, options.delimiter);
  std::vector<std::string> header = options.columns;
  std::vector<std::string> fields;
  if (header.empty() && !reader.Next(header))
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: empty file, no header", options.input));
  const auto keys = RequestKeys::Resolve(config, table_columns);
  std::map<std::string, std::string> by_normal;  // normalized -> table column
  for (const auto& [name, type] : table_columns) by_normal.emplace(NormalizeColumnName(name), name);
  std::vector<size_t> used;  // file columns, in order
  CsvRows out;
  for (size_t i = 0; i < header.size(); ++i) {
    auto it = by_normal.find(NormalizeColumnName(header[i]));
    // A direct key is the database's to assign; mapped keys (uuid, text, ...) are data.
    if (it != by_normal.end() && (keys.mapped() || it->second != keys.columns().front().name)) {
      used.push_back(i);
      out.columns.push_back(it->second);
    } else if (ignored != nullptr) {
      ignored->push_back(header[i]);
    }
  }
  if (used.empty()) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: no column matches a column of table '{}' (file columns: {})",
                                                     options.input, config.table, fmt::join(header, ", ")));
  }
  // All rows first: files replayed as streams are small, and --reverse needs them.
  while (reader.Next(fields)) {
    if (fields.size() == 1 && fields[0].empty()) continue;
    if (reader.malformed() || fields.size() != header.size()) {
      throw Error(ErrorCode::InvalidInput, fmt::format("{}:{}: {} fields, expected {}", options.input, reader.line(),
                                                       fields.size(), header.size()));
    }
    std::vector<std::optional<std::string>> row;
    for (const size_t file_column : used) {
      const std::string& v = fields[file_column];
      row.push_back(v.empty() ? std::nullopt : std::optional<std::string>(v));
    }
    out.rows.push_back(std::move(row));
  }
  if (options.reverse) std::reverse(out.rows.begin(), out.rows.end());
  return out;
}

namespace {

// A CSV field as the JSON value a column of `type` takes; a field that is not one
// stays a string (the record's checks name it).
nlohmann::json FieldJson(const std::string& field, const std::string& type) {
  if (type == "smallint" || type == "integer" || type == "bigint") {
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
    if (ec == std::errc() && end == field.data() + field.size()) return v;
  } else if (type == "real" || type == "double precision" || type == "numeric" || type.starts_with("numeric(")) {
    char* end = nullptr;
    const double v = std::strtod(field.c_str(), &end);
    if (!field.empty() && end == field.c_str() + field.size() && std::isfinite(v)) return v;
  } else if (type == "boolean") {
    if (field == "true" || field == "t" || field == "1") return true;
    if (field == "false" || field == "f" || field == "0") return false;
  } else if (type == "json" || type == "jsonb") {
    auto parsed = nlohmann::json::parse(field, nullptr, false);
    if (!parsed.is_discarded()) return parsed;
  }
  return field;
}

}  // namespace

std::string CsvRecordJson(const CsvRows& rows, size_t row, const std::map<std::string, std::string>& table_columns,
                          const PipelineConfig& config, const std::string& data_type) {
  nlohmann::json record = nlohmann::json::object();
  for (size_t c = 0; c < rows.columns.size(); ++c) {
    const auto& field = rows.rows.at(row)[c];
    record[rows.columns[c]] = field ? FieldJson(*field, table_columns.at(rows.columns[c])) : nlohmann::json(nullptr);
  }
  if (!data_type.empty()) record[config.model_type_column] = data_type;
  return record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

LoadSummary LoadCsvRequests(postgres::Connection& conn, const PipelineConfig& config, const CsvLoadOptions& options,
                            std::vector<std::string>* ignored) {
  const auto table_columns = SourceColumns(conn, config);
  const auto keys = RequestKeys::Resolve(config, table_columns);
  CsvRows csv = ReadCsvRows(config, table_columns, options, ignored);
  auto& rows = csv.rows;
  const auto& used = csv.columns;  // table columns, the file's order
  std::string names, selects;
  for (size_t c = 0; c < used.size(); ++c) {
    names += (c ? ", " : "") + postgres::QuoteIdentifier(used[c]);
    selects += fmt::format("{}v{}::{}", c ? ", " : "", c, table_columns.at(used[c]));
  }
  std::string sources;
  for (size_t c = 0; c < used.size(); ++c) sources += fmt::format("{}${}::text[]", c ? ", " : "", c + 1);
  std::string aliases;
  for (size_t c = 0; c < used.size(); ++c) aliases += fmt::format("{}v{}", c ? ", " : "", c);
  const bool typed = !options.data_type.empty();  // ReadCsvRows checked the pipeline has the column
  if (typed) {
    names += ", " + postgres::QuoteIdentifier(config.model_type_column);
    selects += fmt::format(", ${}", used.size() + 1);
  }
  const std::string sql = fmt::format("INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS r({}) RETURNING {}",
                                      postgres::QuoteIdentifier(config.table), names, selects, sources, aliases,
                                      keys.mapped() ? "0::bigint" : keys.IdOf(""));
  const int64_t per_txn = options.rate > 0 && options.rate <= 1000 ? 1 : std::max<int64_t>(1, options.rows_per_txn);
  LoadSummary summary;
  const auto start = std::chrono::steady_clock::now();
  size_t at = 0;
  while (!rows.empty()) {
    if (options.cancelled != nullptr && (*options.cancelled)()) break;
    if (at >= rows.size()) {
      if (!options.loop) break;
      at = 0;
    }
    const size_t n = std::min(rows.size() - at, static_cast<size_t>(per_txn));
    std::vector<std::vector<std::optional<std::string>>> columns(used.size());
    for (size_t r = at; r < at + n; ++r) {
      for (size_t c = 0; c < used.size(); ++c) columns[c].push_back(rows[r][c]);
    }
    postgres::Params params;
    for (const auto& column : columns) params.AddArray(column);
    if (typed) params.Add(options.data_type);
    auto inserted = conn.Exec(sql, params);
    if (summary.inserted == 0 && inserted.rows() > 0) summary.first_key = inserted.Get<int64_t>(0, 0);
    summary.inserted += static_cast<int64_t>(n);
    at += n;
    if (options.progress) options.progress(summary.inserted);
    PaceTo(start, summary.inserted, options.rate);
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace runnel::pipeline
