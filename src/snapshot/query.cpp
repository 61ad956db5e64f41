// Read-only SQL over a snapshot, sandboxed, and its answer as JSON or CSV.
#include <fmt/format.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "duckdb.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/mutex.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::snapshot {

namespace {

// Every setting that keeps a query inside the one file: read-only, no file system
// (read_csv, COPY, ATTACH, INSTALL all need it), no extension loading, and the
// configuration locked last so that SET cannot undo any of it.
std::vector<std::pair<std::string, std::string>> SandboxSettings(const QueryLimits& limits) {
  return {{"access_mode", "READ_ONLY"},
          {"enable_external_access", "false"},
          {"autoload_known_extensions", "false"},
          {"autoinstall_known_extensions", "false"},
          {"allow_community_extensions", "false"},
          {"allow_unsigned_extensions", "false"},
          {"memory_limit", fmt::format("{}MB", limits.memory_mb)},
          {"max_temp_directory_size", "0B"},
          {"threads", "1"},
          {"lock_configuration", "true"}};
}

ValueKind KindOf(duckdb_type type) {
  switch (type) {
    case DUCKDB_TYPE_BOOLEAN: return ValueKind::Boolean;
    case DUCKDB_TYPE_TINYINT:
    case DUCKDB_TYPE_SMALLINT:
    case DUCKDB_TYPE_INTEGER:
    case DUCKDB_TYPE_BIGINT:
    case DUCKDB_TYPE_UTINYINT:
    case DUCKDB_TYPE_USMALLINT:
    case DUCKDB_TYPE_UINTEGER:
    case DUCKDB_TYPE_UBIGINT:
    case DUCKDB_TYPE_HUGEINT:
    case DUCKDB_TYPE_UHUGEINT: return ValueKind::Integer;
    case DUCKDB_TYPE_FLOAT:
    case DUCKDB_TYPE_DOUBLE:
    case DUCKDB_TYPE_DECIMAL: return ValueKind::Real;
    default: return ValueKind::Text;
  }
}

struct PreparedDeleter {
  void operator()(duckdb_prepared_statement* p) const { duckdb_destroy_prepare(p); }
};
struct ExtractedDeleter {
  void operator()(duckdb_extracted_statements* e) const { duckdb_destroy_extracted(e); }
};

// The one SELECT `sql` holds, prepared: names and kinds of its columns. Anything but a
// single SELECT is refused naming what it is.
void CheckSelect(duck::Connection& conn, const std::string& sql, QueryAnswer& answer) {
  duckdb_extracted_statements extracted = nullptr;
  const idx_t count = duckdb_extract_statements(conn.raw(), sql.c_str(), &extracted);
  std::unique_ptr<duckdb_extracted_statements, ExtractedDeleter> owned(&extracted);
  if (count == 0) {
    const char* error = duckdb_extract_statements_error(extracted);
    throw Error(ErrorCode::InvalidInput,
                fmt::format("query: {}", error != nullptr && *error != '\0' ? error : "no statement"));
  }
  if (count > 1)
    throw Error(ErrorCode::InvalidInput, fmt::format("query: {} statements; one SELECT is allowed", count));
  duckdb_prepared_statement prepared = nullptr;
  const auto state = duckdb_prepare_extracted_statement(conn.raw(), extracted, 0, &prepared);
  std::unique_ptr<duckdb_prepared_statement, PreparedDeleter> owned_prepared(&prepared);
  if (state == DuckDBError) {
    const char* error = duckdb_prepare_error(prepared);
    throw Error(ErrorCode::InvalidInput, fmt::format("query: {}", error != nullptr ? error : "cannot prepare"));
  }
  if (duckdb_prepared_statement_type(prepared) != DUCKDB_STATEMENT_TYPE_SELECT) {
    throw Error(ErrorCode::InvalidInput, "query: only a SELECT is allowed on a snapshot");
  }
  const idx_t columns = duckdb_prepared_statement_column_count(prepared);
  for (idx_t c = 0; c < columns; ++c) {
    const char* name = duckdb_prepared_statement_column_name(prepared, c);  // ours to free
    answer.columns.emplace_back(name != nullptr ? name : "");
    duckdb_free(const_cast<char*>(name));
    answer.kinds.push_back(KindOf(duckdb_prepared_statement_column_type(prepared, c)));
  }
}

// `sql` without trailing semicolons and spaces, so that it can be a subquery.
std::string Body(std::string_view sql) {
  while (!sql.empty() && (sql.back() == ';' || std::isspace(static_cast<unsigned char>(sql.back())))) {
    sql.remove_suffix(1);
  }
  return std::string(sql);
}

// Interrupts `conn` once `timeout` passes, unless destroyed first.
class Watchdog {
 public:
  Watchdog(duck::Connection& conn, std::chrono::milliseconds timeout)
      : thread_([this, &conn, timeout] { Run(conn, timeout); }) {}
  ~Watchdog() {
    {
      MutexLock lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  bool fired() {
    MutexLock lock(mutex_);
    return fired_;
  }

 private:
  void Run(duck::Connection& conn, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    MutexLock lock(mutex_);
    while (!done_) {
      if (!lock.WaitUntil(wake_, deadline) && !done_) {
        fired_ = true;
        conn.Interrupt();
        return;
      }
    }
  }

  Mutex mutex_;
  std::condition_variable_any wake_;
  bool done_ GUARDED_BY(mutex_) = false;
  bool fired_ GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

// Runs `sql` (a SELECT of text columns) into `result`, streaming; throws naming the
// failure (`result` stays the caller's to destroy).
void Execute(duck::Connection& conn, const std::string& sql, duckdb_result& result) {
  duckdb_prepared_statement prepared = nullptr;
  std::unique_ptr<duckdb_prepared_statement, PreparedDeleter> owned(&prepared);
  if (duckdb_prepare(conn.raw(), sql.c_str(), &prepared) == DuckDBError) {
    const char* error = duckdb_prepare_error(prepared);
    throw Error(ErrorCode::InvalidInput, fmt::format("query: {}", error != nullptr ? error : "cannot prepare"));
  }
  if (duckdb_execute_prepared_streaming(prepared, &result) == DuckDBError) duck::ThrowResultError(result, "query");
}

// Copies the rows of `result` into `answer` up to the row and byte limits.
void Collect(duckdb_result& result, const QueryLimits& limits, QueryAnswer& answer) {
  int64_t bytes = 0;
  duck::ForEachTextRow(result, [&](const std::vector<std::optional<std::string_view>>& values) {
    int64_t row_bytes = 0;
    for (const auto& v : values) row_bytes += v ? static_cast<int64_t>(v->size()) : 0;
    if (static_cast<int64_t>(answer.rows.size()) == limits.max_rows || bytes + row_bytes > limits.max_bytes) {
      answer.truncated = true;
      return false;
    }
    bytes += row_bytes;
    auto& row = answer.rows.emplace_back();
    for (const auto& v : values) row.push_back(v ? std::optional<std::string>(std::string(*v)) : std::nullopt);
    return true;
  });
  // A failure while streaming (an interrupt, the memory limit) ends the chunks early.
  if (duckdb_result_error(&result) != nullptr) duck::ThrowResultError(result, "query");
}

}  // namespace

QueryAnswer Query(const Reader& reader, std::string_view sql, const QueryLimits& limits) {
  const auto started = std::chrono::steady_clock::now();
  if (sql.size() > 1 << 20) throw Error(ErrorCode::InvalidInput, "query: longer than 1 MiB");
  duck::Database db(reader.info().path.string(), SandboxSettings(limits));
  duck::Connection conn(db);
  QueryAnswer answer;
  Watchdog watchdog(conn, limits.timeout);
  try {
    const std::string body = Body(sql);
    CheckSelect(conn, body, answer);
    // Every column as text, one row more than answered (to tell a cut-off).
    duckdb_result result{};
    duck::ResultOwner owned(&result);
    Execute(conn,
            fmt::format("SELECT COLUMNS(*)::VARCHAR FROM (\n{}\n) AS runnel_query LIMIT {}", body, limits.max_rows + 1),
            result);
    Collect(result, limits, answer);
  } catch (const Error& e) {
    if (!watchdog.fired()) throw;
    throw Error(ErrorCode::Unavailable,
                fmt::format("query: cut off after {} ms (the time limit)", limits.timeout.count()));
  }
  answer.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  return answer;
}

namespace {

nlohmann::json ValueJson(const std::optional<std::string>& value, ValueKind kind) {
  if (!value) return nullptr;
  switch (kind) {
    case ValueKind::Boolean: return *value == "true";
    case ValueKind::Integer: {
      int64_t n = 0;
      auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), n);
      if (ec == std::errc() && end == value->data() + value->size()) return n;
      return *value;  // beyond 64 bits: as text
    }
    case ValueKind::Real: {
      char* end = nullptr;
      const double d = std::strtod(value->c_str(), &end);
      if (end != value->c_str() + value->size()) return *value;
      return std::isfinite(d) ? nlohmann::json(d) : nlohmann::json(nullptr);
    }
    case ValueKind::Text: return *value;
  }
  return *value;
}

std::string CsvField(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos && !value.empty()) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string AnswerJson(const QueryAnswer& answer) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : answer.rows) {
    nlohmann::json values = nlohmann::json::array();
    for (size_t c = 0; c < row.size(); ++c) values.push_back(ValueJson(row[c], answer.kinds[c]));
    rows.push_back(std::move(values));
  }
  nlohmann::json out = {{"columns", answer.columns},
                        {"rows", std::move(rows)},
                        {"truncated", answer.truncated},
                        {"took_ms", answer.took.count()}};
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string AnswerCsv(const QueryAnswer& answer) {
  std::string out;
  for (size_t c = 0; c < answer.columns.size(); ++c) {
    if (c) out += ',';
    out += CsvField(answer.columns[c]);
  }
  out += "\r\n";
  for (const auto& row : answer.rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      if (c) out += ',';
      if (row[c]) out += row[c]->empty() ? "\"\"" : CsvField(*row[c]);
    }
    out += "\r\n";
  }
  return out;
}

}  // namespace runnel::snapshot
