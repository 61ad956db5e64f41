// A thin RAII layer over libpq: connections, results, transactions and parameters in
// binary format. Every Runnel module that talks to PostgreSQL goes through it.
//
// Errors: every failure throws DatabaseError (an Error with code Database) carrying the
// server's SQLSTATE when there is one, or a libpq-side class-08 code for connection
// failures. Thread safety: a Connection (and its Transactions) belongs to one thread
// at a time; Results are immutable and may be read from any thread.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runnel/core/error.hpp"
#include "runnel/postgres/sqlstate.hpp"

namespace runnel::postgres {

class DatabaseError : public Error {
 public:
  DatabaseError(const std::string& message, std::string sqlstate, std::string primary = {}, std::string context = {})
      : Error(ErrorCode::Database, message),
        sqlstate_(std::move(sqlstate)),
        primary_(primary.empty() ? std::string(message) : std::move(primary)),
        context_(std::move(context)) {}

  // Five characters, e.g. "42P01". "08001" when no connection could be made, "08006"
  // when an open connection broke without the server saying why.
  const std::string& sqlstate() const { return sqlstate_; }

  // Whether the connection is gone (class 08, or the server shutting it down, 57P0x):
  // the caller should reconnect rather than retry on the same connection.
  bool IsConnectionLost() const;
  // The server's primary message alone (no detail, no statement), e.g. for a failed
  // request's stored reason.
  const std::string& primary() const { return primary_; }
  // The server's CONTEXT, where the error arose (e.g. `COPY t, line 3, column c: "x"`);
  // may be empty.
  const std::string& context() const { return context_; }
  // What the error means for the caller (sqlstate.hpp): one policy everywhere.
  FailureClass failure_class() const { return ClassifySqlState(sqlstate_); }

 private:
  std::string sqlstate_;
  std::string primary_;
  std::string context_;
};

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultDeleter>;

// Type OIDs of the built-in types Runnel reads and writes (pg_type.h is not in libpq-dev).
namespace type_oid {
inline constexpr Oid kBool = 16;
inline constexpr Oid kBytea = 17;
inline constexpr Oid kName = 19;
inline constexpr Oid kInt8 = 20;
inline constexpr Oid kInt2 = 21;
inline constexpr Oid kInt4 = 23;
inline constexpr Oid kText = 25;
inline constexpr Oid kOid = 26;
inline constexpr Oid kJson = 114;
inline constexpr Oid kFloat4 = 700;
inline constexpr Oid kFloat8 = 701;
inline constexpr Oid kBpchar = 1042;
inline constexpr Oid kVarchar = 1043;
inline constexpr Oid kNumeric = 1700;
inline constexpr Oid kTextArray = 1009;
inline constexpr Oid kInt8Array = 1016;
inline constexpr Oid kFloat8Array = 1022;
inline constexpr Oid kJsonb = 3802;
}  // namespace type_oid

// Query parameters, sent in binary format with their types declared.
class Params {
 public:
  Params& Add(bool value);
  Params& Add(int16_t value);
  Params& Add(int32_t value);
  Params& Add(int64_t value);
  Params& Add(float value);
  Params& Add(double value);
  Params& Add(std::string_view text);  // sent as text
  Params& Add(const char* text) { return Add(std::string_view(text)); }
  Params& AddBytes(std::string_view bytes);  // sent as bytea
  Params& AddNull(Oid type = 0);             // 0 lets the server infer the type
  // One-dimensional arrays (bigint[], float8[], text[]) in binary format: a batch's
  // column as one parameter, without the server parsing a text literal per element.
  // nullopt elements are NULL.
  Params& AddArray(const std::vector<int64_t>& values);
  Params& AddArray(const std::vector<std::optional<double>>& values);
  Params& AddArray(const std::vector<std::optional<std::string>>& values);
  Params& AddArray(const std::vector<std::optional<std::string_view>>& values);
  template <typename T>
  Params& Add(const std::optional<T>& value) {
    return value ? Add(*value) : AddNull();
  }

  int size() const { return static_cast<int>(types_.size()); }
  const Oid* types() const { return types_.data(); }
  const char* const* values() const;
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  Params& Push(Oid type, std::string bytes, bool is_null);

  std::vector<Oid> types_;
  std::vector<std::string> storage_;
  std::vector<bool> nulls_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  mutable std::vector<const char*> pointers_;
};

// The result of one statement. Values are decoded from binary or text format,
// whichever the statement returned. Get<T> accepts: bool from bool; integers from
// int2/int4/int8/oid (range-checked); float/double from float4/float8/numeric and the
// integer types; std::string from any type (text format) or text-like types (binary).
class Result {
 public:
  explicit Result(PgResultPtr result) : result_(std::move(result)) {}

  int rows() const { return PQntuples(result_.get()); }
  int columns() const { return PQnfields(result_.get()); }
  std::string_view ColumnName(int column) const {
    const char* name = PQfname(result_.get(), column);  // NULL when out of range
    return name != nullptr ? name : "?";
  }
  Oid ColumnType(int column) const { return PQftype(result_.get(), column); }
  // Throws DatabaseError naming the column when the result has none by that name.
  int ColumnIndex(std::string_view name) const;
  // Number of rows an INSERT/UPDATE/DELETE touched, 0 for other statements.
  int64_t AffectedRows() const;

  bool IsNull(int row, int column) const { return PQgetisnull(result_.get(), row, column) != 0; }
  // Throws DatabaseError naming the column for NULL, a type mismatch or out-of-range value.
  template <typename T>
  T Get(int row, int column) const;
  template <typename T>
  std::optional<T> GetOptional(int row, int column) const {
    if (IsNull(row, column)) return std::nullopt;
    return Get<T>(row, column);
  }
  // By column name (as the statement's select list or alias spells it): for readers
  // off the hot path, where a name keeps statement and reader in step. Throws
  // DatabaseError (42703) when the result has no such column.
  bool IsNull(int row, std::string_view column) const { return IsNull(row, ColumnIndex(column)); }
  template <typename T>
  T Get(int row, std::string_view column) const {
    return Get<T>(row, ColumnIndex(column));
  }
  template <typename T>
  std::optional<T> GetOptional(int row, std::string_view column) const {
    return GetOptional<T>(row, ColumnIndex(column));
  }

  const PGresult* raw() const { return result_.get(); }  // non-owning

 private:
  PgResultPtr result_;
};

class Connection {
 public:
  // Connects with a libpq connection string (key=value or postgresql:// URL). Throws
  // DatabaseError naming host, port, database and user (never the password). Unless the
  // string (or PGAPPNAME) names one, the session's application_name, which
  // pg_stat_activity and the server's log show, is ApplicationName(`part`): by default
  // the calling thread's name; a session opened on behalf of another thread passes
  // that thread's name (say "w0:needs").
  static Connection Open(const std::string& conninfo);
  static Connection Open(const std::string& conninfo, std::string_view part);
  // "runnel <part>" (say "runnel w0:needs"), or "runnel" for no part (a thread not
  // named for one).
  static std::string ApplicationName(std::string_view part);

  // Runs one or more statements with the simple protocol (text results). Returns the
  // last statement's result.
  Result Exec(std::string_view sql);
  // Runs one statement with parameters $1..$n; results come back in binary format.
  Result Exec(std::string_view sql, const Params& params);
  // As Exec, through a server-side prepared statement made on first use of `sql` on
  // this connection (parsed and analysed once; the server may also keep a generic
  // plan). Every call with the same `sql` must pass parameters of the same types. At
  // most kMaxPrepared statements are prepared per connection; others run as Exec.
  Result ExecPrepared(const std::string& sql, const Params& params);
  static constexpr size_t kMaxPrepared = 64;

  // Runs `COPY ... FROM STDIN` and sends `data` (COPY text format). Returns the rows
  // copied. Throws DatabaseError; the rows are then not copied.
  int64_t CopyIn(std::string_view sql, std::string_view data);
  // As CopyIn, the data being the concatenation of `pieces`, sent in 1 MiB chunks as
  // they are (nothing is copied whole): a binary COPY of one large value.
  int64_t CopyIn(std::string_view sql, std::span<const std::string_view> pieces);

  // Runs `COPY ... TO STDOUT` and hands the data to `sink` as it arrives, in pieces
  // of any size (a row is not split across calls in text and CSV formats). Returns
  // the rows copied. Throws DatabaseError; what `sink` throws propagates after the
  // connection has been drained and stays usable.
  int64_t CopyOut(std::string_view sql, const std::function<void(std::string_view)>& sink);

  // Whether the connection to the server is still usable.
  bool IsOpen() const { return PQstatus(conn_.get()) == CONNECTION_OK; }
  // IsOpen, and the server has not closed the connection meanwhile (a restart): for
  // an idle connection about to be used. One poll(2) when nothing arrived.
  bool IsAlive();

  // A NOTIFY this connection received on a channel it LISTENs to.
  struct Notification {
    std::string channel, payload;
  };
  // The notifications already received, or else those arriving within `timeout`
  // (empty when none). Throws DatabaseError (08006) when the connection broke.
  std::vector<Notification> WaitForNotifications(std::chrono::milliseconds timeout);
  int BackendPid() const { return PQbackendPID(conn_.get()); }
  // Human-readable target (host, port, database, user), for messages.
  const std::string& Describe() const { return description_; }

  PGconn* raw() { return conn_.get(); }  // non-owning; stays valid while *this lives

  // Calls `observer` with the SQL of each statement this connection runs, once it ran
  // (with its $n placeholders; not COPY data): what `migrate --dry-run` shows. An empty
  // function stops observing. Not for the hot path: one call per statement.
  void ObserveStatements(std::function<void(std::string_view sql)> observer) { observer_ = std::move(observer); }

 private:
  Connection(PgConnPtr conn, std::string description) : conn_(std::move(conn)), description_(std::move(description)) {}
  Result Check(PGresult* raw, std::string_view sql);

  PgConnPtr conn_;
  std::string description_;
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
  std::function<void(std::string_view)> observer_;
};

// BEGIN on construction; ROLLBACK on destruction unless committed. Destruction never
// throws (a failed rollback on a broken connection is ignored: the server discards
// the transaction anyway).
class Transaction {
 public:
  explicit Transaction(Connection& conn);  // conn must outlive the transaction
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void Commit();
  void Rollback();
  Connection& connection() { return conn_; }

 private:
  Connection& conn_;
  bool open_ = true;
};

// An SQL expression rendering timestamptz `column` as ISO 8601 in UTC with
// microseconds, "2026-12-02T16:41:43.819515Z", the API's timestamp form.
std::string IsoTimestampSql(std::string_view column);

// Quotes an SQL identifier ("my table" -> "\"my table\"").
std::string QuoteIdentifier(std::string_view name);
// Quotes an SQL string literal.
std::string QuoteLiteral(std::string_view value);

// Whether table (or view) `name`, unquoted, exists in the search path. Throws
// DatabaseError.
bool TableExists(Connection& conn, std::string_view name);

// Takes the advisory lock under which Runnel creates and alters its shared tables
// (migrate, unmigrate, the registry, samples, API keys), so that processes starting
// together take turns instead of racing on CREATE ... IF NOT EXISTS. Precondition: a
// transaction is open on `conn`; the lock is released when it ends. Throws
// DatabaseError.
void LockMigrations(Connection& conn);

}  // namespace runnel::postgres
