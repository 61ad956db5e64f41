// A thin RAII layer over DuckDB's C API (duckdb.h), for this module only.
// Thread safety: a Database may be shared; a Connection belongs to one thread, except
// Interrupt, which any thread may call. Errors: Error(InvalidInput) for what DuckDB
// refuses, Error(Unavailable) when a query was interrupted or ran out of memory,
// Error(Io) when a file cannot be opened; messages start with `what`.
#pragma once

#include <duckdb.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace runnel::snapshot::duck {

class Database {
 public:
  // Opens (or creates) `path` with these settings (name, value), as duckdb_set_config.
  Database(const std::string& path, const std::vector<std::pair<std::string, std::string>>& settings);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  duckdb_database raw() const { return db_; }

 private:
  duckdb_database db_ = nullptr;
};

class Result;

class Connection {
 public:
  explicit Connection(const Database& db);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs `sql` (one or more statements) to completion; throws naming `what`.
  void Exec(const std::string& sql, std::string_view what);
  // Runs `sql` and returns its single value as text (NULL: empty).
  std::string Scalar(const std::string& sql, std::string_view what);
  // Cancels the running query (any thread).
  void Interrupt() { duckdb_interrupt(conn_); }
  duckdb_connection raw() const { return conn_; }

 private:
  duckdb_connection conn_ = nullptr;
};

// Throws the Error that a failed result of `what` stands for. The result stays the
// caller's to destroy.
[[noreturn]] void ThrowResultError(duckdb_result& result, std::string_view what);

// Destroys a result (zero-initialized, failed or not) with its owner.
struct ResultDeleter {
  void operator()(duckdb_result* result) const { duckdb_destroy_result(result); }
};
using ResultOwner = std::unique_ptr<duckdb_result, ResultDeleter>;

// Quotes `text` as a DuckDB string literal / identifier.
std::string Literal(std::string_view text);
std::string Identifier(std::string_view name);

// Reads the VARCHAR column `column` of every chunk of a streaming result: calls
// `row(values)` once per row with one optional per column (all columns must be
// VARCHAR). Returns false when `row` asked to stop by returning false.
bool ForEachTextRow(duckdb_result& result,
                    const std::function<bool(const std::vector<std::optional<std::string_view>>&)>& row);

}  // namespace runnel::snapshot::duck
