#include "duckdb.hpp"

#include <fmt/format.h>

#include <memory>

#include "runnel/core/error.hpp"

namespace runnel::snapshot::duck {

namespace {

struct ConfigDeleter {
  void operator()(duckdb_config* config) const { duckdb_destroy_config(config); }
};

}  // namespace

Database::Database(const std::string& path, const std::vector<std::pair<std::string, std::string>>& settings) {
  duckdb_config config = nullptr;
  if (duckdb_create_config(&config) == DuckDBError) throw Error(ErrorCode::Io, "DuckDB: cannot make a configuration");
  std::unique_ptr<duckdb_config, ConfigDeleter> owned(&config);
  for (const auto& [name, value] : settings) {
    if (duckdb_set_config(config, name.c_str(), value.c_str()) == DuckDBError) {
      throw Error(ErrorCode::Config, fmt::format("DuckDB: setting {} = '{}' is refused", name, value));
    }
  }
  char* error = nullptr;
  if (duckdb_open_ext(path.c_str(), &db_, config, &error) == DuckDBError) {
    std::string message = error != nullptr ? error : "unknown error";
    duckdb_free(error);
    throw Error(ErrorCode::Io, fmt::format("{}: {}", path, message));
  }
}

Database::~Database() {
  duckdb_close(&db_);
}

Connection::Connection(const Database& db) {
  if (duckdb_connect(db.raw(), &conn_) == DuckDBError) throw Error(ErrorCode::Io, "DuckDB: cannot connect");
}

Connection::~Connection() {
  duckdb_disconnect(&conn_);
}

void ThrowResultError(duckdb_result& result, std::string_view what) {
  const duckdb_error_type type = duckdb_result_error_type(&result);
  const char* raw = duckdb_result_error(&result);
  std::string message = fmt::format("{}: {}", what, raw != nullptr ? raw : "failed");
  switch (type) {
    case DUCKDB_ERROR_INTERRUPT:
    case DUCKDB_ERROR_OUT_OF_MEMORY: throw Error(ErrorCode::Unavailable, message);
    case DUCKDB_ERROR_IO: throw Error(ErrorCode::Io, message);
    default: throw Error(ErrorCode::InvalidInput, message);
  }
}

void Connection::Exec(const std::string& sql, std::string_view what) {
  duckdb_result result{};
  ResultOwner owned(&result);
  if (duckdb_query(conn_, sql.c_str(), &result) == DuckDBError) ThrowResultError(result, what);
}

std::string Connection::Scalar(const std::string& sql, std::string_view what) {
  duckdb_result result{};
  ResultOwner owned(&result);
  if (duckdb_query(conn_, sql.c_str(), &result) == DuckDBError) ThrowResultError(result, what);
  std::string value;
  if (duckdb_column_count(&result) > 0 && duckdb_row_count(&result) > 0) {
    char* text = duckdb_value_varchar(&result, 0, 0);
    if (text != nullptr) value = text;
    duckdb_free(text);
  }
  return value;
}

namespace {

// `text` between `quote`s, each `quote` in it doubled: SQL's quoting of both.
std::string Quoted(std::string_view text, char quote) {
  std::string out(1, quote);
  for (char c : text) {
    if (c == quote) out += quote;
    out += c;
  }
  return out + quote;
}

}  // namespace

std::string Literal(std::string_view text) {
  return Quoted(text, '\'');
}

std::string Identifier(std::string_view name) {
  return Quoted(name, '"');
}

bool ForEachTextRow(duckdb_result& result,
                    const std::function<bool(const std::vector<std::optional<std::string_view>>&)>& row) {
  const idx_t columns = duckdb_column_count(&result);
  std::vector<std::optional<std::string_view>> values(columns);
  for (;;) {
    duckdb_data_chunk chunk = duckdb_fetch_chunk(result);
    if (chunk == nullptr) return true;
    std::unique_ptr<duckdb_data_chunk, void (*)(duckdb_data_chunk*)> owned(&chunk, duckdb_destroy_data_chunk);
    const idx_t size = duckdb_data_chunk_get_size(chunk);
    std::vector<duckdb_string_t*> data(columns);
    std::vector<uint64_t*> validity(columns);
    for (idx_t c = 0; c < columns; ++c) {
      duckdb_vector vector = duckdb_data_chunk_get_vector(chunk, c);
      data[c] = static_cast<duckdb_string_t*>(duckdb_vector_get_data(vector));
      validity[c] = duckdb_vector_get_validity(vector);
    }
    for (idx_t r = 0; r < size; ++r) {
      for (idx_t c = 0; c < columns; ++c) {
        if (validity[c] != nullptr && !duckdb_validity_row_is_valid(validity[c], r)) {
          values[c] = std::nullopt;
          continue;
        }
        duckdb_string_t* value = &data[c][r];
        values[c] = std::string_view(duckdb_string_t_data(value), duckdb_string_t_length(*value));
      }
      if (!row(values)) return false;
    }
  }
}

}  // namespace runnel::snapshot::duck
