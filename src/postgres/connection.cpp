#include "runnel/postgres/connection.hpp"

#include <poll.h>

#include <endian.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include "runnel/core/thread_name.hpp"

namespace runnel::postgres {
namespace {

std::string Trimmed(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  return std::string(text);
}

std::string SqlExcerpt(std::string_view sql) {
  constexpr size_t kMax = 160;
  std::string out(sql.substr(0, kMax));
  for (char& c : out) {
    if (c == '\n' || c == '\t') c = ' ';
  }
  if (sql.size() > kMax) out += "...";
  return out;
}

// "host=/tmp port=5432 dbname=x user=y" from whatever the user passed, without secrets.
std::string DescribeConninfo(PQconninfoOption* options) {
  std::string out;
  for (auto* opt = options; opt != nullptr && opt->keyword != nullptr; ++opt) {
    std::string_view key = opt->keyword;
    if (opt->val == nullptr || *opt->val == '\0') continue;
    if (key == "host" || key == "hostaddr" || key == "port" || key == "dbname" || key == "user") {
      if (!out.empty()) out += ' ';
      out += fmt::format("{}={}", key, opt->val);
    }
  }
  return out.empty() ? "the default server" : out;
}

void NoticeToLog(void* /*arg*/, const char* message) {
  spdlog::debug("postgres: {}", Trimmed(message));
}

template <typename T>
T ReadBigEndian(const char* data) {
  T value;
  std::memcpy(&value, data, sizeof(T));
  if constexpr (sizeof(T) == 2) return static_cast<T>(be16toh(static_cast<uint16_t>(value)));
  if constexpr (sizeof(T) == 4) return static_cast<T>(be32toh(static_cast<uint32_t>(value)));
  if constexpr (sizeof(T) == 8) return static_cast<T>(be64toh(static_cast<uint64_t>(value)));
}

template <typename T>
std::string BigEndianBytes(T value) {
  std::string out(sizeof(T), '\0');
  if constexpr (sizeof(T) == 2) {
    auto v = htobe16(std::bit_cast<uint16_t>(value));
    std::memcpy(out.data(), &v, 2);
  } else if constexpr (sizeof(T) == 4) {
    auto v = htobe32(std::bit_cast<uint32_t>(value));
    std::memcpy(out.data(), &v, 4);
  } else {
    auto v = htobe64(std::bit_cast<uint64_t>(value));
    std::memcpy(out.data(), &v, 8);
  }
  return out;
}

// Binary numeric: int16 ndigits, int16 weight, uint16 sign, int16 dscale, then ndigits
// base-10000 digits; the first digit is worth 10000^weight.
double DecodeNumeric(const char* data, int length, std::string_view column) {
  if (length < 8) throw DatabaseError(fmt::format("column '{}': truncated numeric", column), "22P03");
  auto ndigits = ReadBigEndian<int16_t>(data);
  auto weight = ReadBigEndian<int16_t>(data + 2);
  auto sign = static_cast<uint16_t>(ReadBigEndian<int16_t>(data + 4));
  if (ndigits < 0 || length < 8 + 2 * ndigits) {
    throw DatabaseError(fmt::format("column '{}': truncated numeric", column), "22P03");
  }
  if (sign == 0xC000) return std::numeric_limits<double>::quiet_NaN();
  if (sign == 0xD000) return std::numeric_limits<double>::infinity();
  if (sign == 0xF000) return -std::numeric_limits<double>::infinity();
  double value = 0;
  for (int i = 0; i < ndigits; ++i) {
    value += ReadBigEndian<int16_t>(data + 8 + 2 * static_cast<std::ptrdiff_t>(i)) * std::pow(10000.0, weight - i);
  }
  return sign == 0x4000 ? -value : value;
}

bool IsTextLike(Oid type) {
  using namespace type_oid;
  return type == kText || type == kVarchar || type == kBpchar || type == kName || type == kJson;
}

[[noreturn]] void TypeMismatch(const Result& result, int column, std::string_view wanted) {
  throw DatabaseError(fmt::format("column '{}' has type oid {}, cannot read it as {}", result.ColumnName(column),
                                  result.ColumnType(column), wanted),
                      "42804");
}

template <typename T>
T ParseText(std::string_view text, std::string_view column, std::string_view wanted) {
  T value{};
  if constexpr (std::is_same_v<T, bool>) {
    if (text == "t" || text == "true") return true;
    if (text == "f" || text == "false") return false;
  } else {
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && ptr == text.data() + text.size()) return value;
    if constexpr (std::is_floating_point_v<T>) {
      if (text == "NaN") return std::numeric_limits<T>::quiet_NaN();
      if (text == "Infinity") return std::numeric_limits<T>::infinity();
      if (text == "-Infinity") return -std::numeric_limits<T>::infinity();
    }
  }
  throw DatabaseError(fmt::format("column '{}': cannot read '{}' as {}", column, text, wanted), "22P02");
}

template <typename T>
T NarrowInteger(int64_t value, const Result& result, int column, std::string_view wanted) {
  if (value < std::numeric_limits<T>::min() || value > std::numeric_limits<T>::max()) {
    throw DatabaseError(
        fmt::format("column '{}': value {} is out of range for {}", result.ColumnName(column), value, wanted), "22003");
  }
  return static_cast<T>(value);
}

// Decodes any integer-typed binary value as int64.
std::optional<int64_t> BinaryInteger(Oid type, const char* data, int length) {
  using namespace type_oid;
  if (type == kInt2 && length == 2) return ReadBigEndian<int16_t>(data);
  if (type == kInt4 && length == 4) return ReadBigEndian<int32_t>(data);
  if (type == kOid && length == 4) return static_cast<uint32_t>(ReadBigEndian<int32_t>(data));
  if (type == kInt8 && length == 8) return ReadBigEndian<int64_t>(data);
  return std::nullopt;
}

template <typename T>
T GetInteger(const Result& result, int row, int column, std::string_view wanted) {
  // The column's name only for messages: looking it up costs a strlen per value.
  const PGresult* res = result.raw();
  if (result.IsNull(row, column)) {
    throw DatabaseError(fmt::format("column '{}' is NULL in row {}", result.ColumnName(column), row), "22004");
  }
  const char* data = PQgetvalue(res, row, column);
  int length = PQgetlength(res, row, column);
  if (PQfformat(res, column) == 0) {
    return ParseText<T>(std::string_view(data, static_cast<size_t>(length)), result.ColumnName(column), wanted);
  }
  auto value = BinaryInteger(result.ColumnType(column), data, length);
  if (!value) TypeMismatch(result, column, wanted);
  return NarrowInteger<T>(*value, result, column, wanted);
}

template <typename T>
T GetFloating(const Result& result, int row, int column, std::string_view wanted) {
  using namespace type_oid;
  const PGresult* res = result.raw();
  if (result.IsNull(row, column)) {
    throw DatabaseError(fmt::format("column '{}' is NULL in row {}", result.ColumnName(column), row), "22004");
  }
  const char* data = PQgetvalue(res, row, column);
  int length = PQgetlength(res, row, column);
  if (PQfformat(res, column) == 0) {
    return ParseText<T>(std::string_view(data, static_cast<size_t>(length)), result.ColumnName(column), wanted);
  }
  Oid type = result.ColumnType(column);
  if (type == kFloat4 && length == 4) return static_cast<T>(std::bit_cast<float>(ReadBigEndian<uint32_t>(data)));
  if (type == kFloat8 && length == 8) return static_cast<T>(std::bit_cast<double>(ReadBigEndian<uint64_t>(data)));
  if (type == kNumeric) return static_cast<T>(DecodeNumeric(data, length, result.ColumnName(column)));
  if (auto integer = BinaryInteger(type, data, length)) return static_cast<T>(*integer);
  TypeMismatch(result, column, wanted);
}

}  // namespace

// A server that shut down or restarted has closed the socket (after a FATAL
// message), which makes it readable: consuming that input turns the status bad.
bool Connection::IsAlive() {
  if (!IsOpen()) return false;
  pollfd fd{PQsocket(conn_.get()), POLLIN, 0};
  if (::poll(&fd, 1, 0) == 0) return true;
  return PQconsumeInput(conn_.get()) == 1 && IsOpen();
}

std::vector<Connection::Notification> Connection::WaitForNotifications(std::chrono::milliseconds timeout) {
  PGconn* raw = conn_.get();
  auto drain = [raw] {
    std::vector<Notification> out;
    while (PGnotify* n = PQnotifies(raw)) {
      out.push_back({n->relname, n->extra});
      PQfreemem(n);
    }
    return out;
  };
  if (PQconsumeInput(raw) == 0) throw DatabaseError(PQerrorMessage(raw), "08006");
  if (auto ready = drain(); !ready.empty()) return ready;
  pollfd fd{PQsocket(raw), POLLIN, 0};
  if (::poll(&fd, 1, static_cast<int>(timeout.count())) > 0 && PQconsumeInput(raw) == 0) {
    throw DatabaseError(PQerrorMessage(raw), "08006");
  }
  return drain();
}

bool DatabaseError::IsConnectionLost() const {
  return sqlstate_.starts_with("08") || sqlstate_ == "57P01" || sqlstate_ == "57P02" || sqlstate_ == "57P03";
}

// ---- Params ----

Params& Params::Push(Oid type, std::string bytes, bool is_null) {
  types_.push_back(type);
  lengths_.push_back(static_cast<int>(bytes.size()));
  storage_.push_back(std::move(bytes));
  nulls_.push_back(is_null);
  formats_.push_back(1);
  return *this;
}

Params& Params::Add(bool value) {
  return Push(type_oid::kBool, std::string(1, value ? '\1' : '\0'), false);
}
Params& Params::Add(int16_t value) {
  return Push(type_oid::kInt2, BigEndianBytes(value), false);
}
Params& Params::Add(int32_t value) {
  return Push(type_oid::kInt4, BigEndianBytes(value), false);
}
Params& Params::Add(int64_t value) {
  return Push(type_oid::kInt8, BigEndianBytes(value), false);
}
Params& Params::Add(float value) {
  return Push(type_oid::kFloat4, BigEndianBytes(value), false);
}
Params& Params::Add(double value) {
  return Push(type_oid::kFloat8, BigEndianBytes(value), false);
}
Params& Params::Add(std::string_view text) {
  return Push(type_oid::kText, std::string(text), false);
}
Params& Params::AddBytes(std::string_view bytes) {
  return Push(type_oid::kBytea, std::string(bytes), false);
}
Params& Params::AddNull(Oid type) {
  return Push(type, std::string(), true);
}

namespace {

// The binary array format (array_send): ndim, has-nulls flag, element type, then per
// dimension its length and lower bound, then per element its length (-1: NULL) and
// bytes.
template <typename T, typename Encode>
std::string BinaryArray(Oid element_type, const std::vector<T>& values, Encode encode) {
  std::string out;
  const bool has_nulls = std::any_of(values.begin(), values.end(), [](const T& v) {
    if constexpr (requires { v.has_value(); }) {
      return !v.has_value();
    } else {
      return false;
    }
  });
  out += BigEndianBytes<int32_t>(values.empty() ? 0 : 1);
  out += BigEndianBytes<int32_t>(has_nulls ? 1 : 0);
  out += BigEndianBytes<int32_t>(static_cast<int32_t>(element_type));
  if (!values.empty()) {
    out += BigEndianBytes<int32_t>(static_cast<int32_t>(values.size()));
    out += BigEndianBytes<int32_t>(1);
  }
  for (const auto& v : values) encode(out, v);
  return out;
}

}  // namespace

Params& Params::AddArray(const std::vector<int64_t>& values) {
  return Push(type_oid::kInt8Array,
              BinaryArray(type_oid::kInt8, values,
                          [](std::string& out, int64_t v) {
                            out += BigEndianBytes<int32_t>(8);
                            out += BigEndianBytes(v);
                          }),
              false);
}

Params& Params::AddArray(const std::vector<std::optional<double>>& values) {
  return Push(type_oid::kFloat8Array,
              BinaryArray(type_oid::kFloat8, values,
                          [](std::string& out, const std::optional<double>& v) {
                            if (!v) {
                              out += BigEndianBytes<int32_t>(-1);
                              return;
                            }
                            out += BigEndianBytes<int32_t>(8);
                            out += BigEndianBytes(*v);
                          }),
              false);
}

namespace {

template <class Text>
std::string BinaryTextArray(const std::vector<std::optional<Text>>& values) {
  return BinaryArray(type_oid::kText, values, [](std::string& out, const std::optional<Text>& v) {
    if (!v) {
      out += BigEndianBytes<int32_t>(-1);
      return;
    }
    out += BigEndianBytes<int32_t>(static_cast<int32_t>(v->size()));
    out += *v;
  });
}

}  // namespace

Params& Params::AddArray(const std::vector<std::optional<std::string>>& values) {
  return Push(type_oid::kTextArray, BinaryTextArray(values), false);
}

Params& Params::AddArray(const std::vector<std::optional<std::string_view>>& values) {
  return Push(type_oid::kTextArray, BinaryTextArray(values), false);
}

const char* const* Params::values() const {
  // Built on demand: storage_ may have reallocated since the last call.
  pointers_.resize(storage_.size());
  for (size_t i = 0; i < storage_.size(); ++i) pointers_[i] = nulls_[i] ? nullptr : storage_[i].data();
  return pointers_.data();
}

// ---- Result ----

int Result::ColumnIndex(std::string_view name) const {
  int index = PQfnumber(result_.get(), QuoteIdentifier(name).c_str());
  if (index < 0) throw DatabaseError(fmt::format("result has no column '{}'", name), "42703");
  return index;
}

int64_t Result::AffectedRows() const {
  const char* tuples = PQcmdTuples(result_.get());
  if (tuples == nullptr || *tuples == '\0') return 0;
  return std::strtoll(tuples, nullptr, 10);
}

template <>
bool Result::Get<bool>(int row, int column) const {
  std::string_view name = ColumnName(column);
  if (IsNull(row, column)) throw DatabaseError(fmt::format("column '{}' is NULL in row {}", name, row), "22004");
  const char* data = PQgetvalue(result_.get(), row, column);
  int length = PQgetlength(result_.get(), row, column);
  if (PQfformat(result_.get(), column) == 0) {
    return ParseText<bool>(std::string_view(data, static_cast<size_t>(length)), name, "bool");
  }
  if (ColumnType(column) != type_oid::kBool || length != 1) TypeMismatch(*this, column, "bool");
  return data[0] != 0;
}

template <>
int16_t Result::Get<int16_t>(int row, int column) const {
  return GetInteger<int16_t>(*this, row, column, "int16");
}
template <>
int32_t Result::Get<int32_t>(int row, int column) const {
  return GetInteger<int32_t>(*this, row, column, "int32");
}
template <>
int64_t Result::Get<int64_t>(int row, int column) const {
  return GetInteger<int64_t>(*this, row, column, "int64");
}
template <>
float Result::Get<float>(int row, int column) const {
  return GetFloating<float>(*this, row, column, "float");
}
template <>
double Result::Get<double>(int row, int column) const {
  return GetFloating<double>(*this, row, column, "double");
}

template <>
std::string Result::Get<std::string>(int row, int column) const {
  if (IsNull(row, column)) {
    throw DatabaseError(fmt::format("column '{}' is NULL in row {}", ColumnName(column), row), "22004");
  }
  const char* data = PQgetvalue(result_.get(), row, column);
  auto length = static_cast<size_t>(PQgetlength(result_.get(), row, column));
  if (PQfformat(result_.get(), column) == 0 || IsTextLike(ColumnType(column)) ||
      ColumnType(column) == type_oid::kBytea) {
    return std::string(data, length);
  }
  if (ColumnType(column) == type_oid::kJsonb && length >= 1 && data[0] == 1) {
    return std::string(data + 1, length - 1);  // binary jsonb: version byte 1, then text
  }
  TypeMismatch(*this, column, "string");
}

// ---- Connection ----

Connection Connection::Open(const std::string& conninfo) {
  return Open(conninfo, ThisThreadName());
}

Connection Connection::Open(const std::string& conninfo, std::string_view part) {
  char* parse_error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (options == nullptr) {
    std::string reason = parse_error != nullptr ? Trimmed(parse_error) : "out of memory";
    PQfreemem(parse_error);
    throw DatabaseError(fmt::format("invalid connection string: {}", reason), "08001");
  }
  std::string description = DescribeConninfo(options);
  PQconninfoFree(options);

  // The connection string is expanded as dbname's value; the fallback name yields to an
  // application_name it (or PGAPPNAME) sets.
  const std::array<const char*, 3> keywords{"dbname", "fallback_application_name", nullptr};
  const std::string application_name = ApplicationName(part);
  const std::array<const char*, 3> values{conninfo.c_str(), application_name.c_str(), nullptr};
  PgConnPtr conn(PQconnectdbParams(keywords.data(), values.data(), /*expand_dbname=*/1));
  if (!conn) throw DatabaseError("cannot connect: out of memory", "08001");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    throw DatabaseError(
        fmt::format("cannot connect to PostgreSQL ({}): {}", description, Trimmed(PQerrorMessage(conn.get()))),
        "08001");
  }
  PQsetNoticeProcessor(conn.get(), NoticeToLog, nullptr);
  return Connection(std::move(conn), std::move(description));
}

std::string Connection::ApplicationName(std::string_view part) {
  return part.empty() || part == "runnel" ? std::string("runnel") : fmt::format("runnel {}", part);
}

Result Connection::Check(PGresult* raw, std::string_view sql) {
  PgResultPtr result(raw);
  ExecStatusType status = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_COPY_IN || status == PGRES_COPY_OUT ||
      status == PGRES_EMPTY_QUERY) {
    if (observer_) observer_(sql);
    return Result(std::move(result));
  }
  std::string sqlstate;
  std::string message, primary_message, context;
  if (result) {
    if (const char* where = PQresultErrorField(result.get(), PG_DIAG_CONTEXT)) context = where;
    const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
    if (state != nullptr) sqlstate = state;
    const char* primary = PQresultErrorField(result.get(), PG_DIAG_MESSAGE_PRIMARY);
    message = primary != nullptr ? primary : Trimmed(PQresultErrorMessage(result.get()));
    primary_message = message;
    if (const char* detail = PQresultErrorField(result.get(), PG_DIAG_MESSAGE_DETAIL)) {
      message += fmt::format(" ({})", detail);
    }
  }
  if (message.empty()) message = Trimmed(PQerrorMessage(conn_.get()));
  if (primary_message.empty()) primary_message = message;
  if (sqlstate.empty()) sqlstate = IsOpen() ? "XX000" : "08006";
  throw DatabaseError(fmt::format("{} [SQLSTATE {}] in: {}", message, sqlstate, SqlExcerpt(sql)), sqlstate,
                      std::move(primary_message), std::move(context));
}

Result Connection::Exec(std::string_view sql) {
  return Check(PQexec(conn_.get(), std::string(sql).c_str()), sql);
}

Result Connection::Exec(std::string_view sql, const Params& params) {
  return Check(PQexecParams(conn_.get(), std::string(sql).c_str(), params.size(), params.types(), params.values(),
                            params.lengths(), params.formats(), /*resultFormat=*/1),
               sql);
}

Result Connection::ExecPrepared(const std::string& sql, const Params& params) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    // Callers may build statements from input (a column set per record shape): past the
    // bound the server's and our memory stay as they are and the rest run unprepared.
    if (prepared_.size() >= kMaxPrepared) return Exec(sql, params);
    std::string name = fmt::format("runnel_{}", prepared_.size());
    Check(PQprepare(conn_.get(), name.c_str(), sql.c_str(), params.size(), params.types()), sql);
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  return Check(PQexecPrepared(conn_.get(), it->second.c_str(), params.size(), params.values(), params.lengths(),
                              params.formats(), /*resultFormat=*/1),
               sql);
}

int64_t Connection::CopyIn(std::string_view sql, std::string_view data) {
  const std::string_view pieces[] = {data};
  return CopyIn(sql, pieces);
}

int64_t Connection::CopyIn(std::string_view sql, std::span<const std::string_view> pieces) {
  Check(PQexec(conn_.get(), std::string(sql).c_str()), sql);  // PGRES_COPY_IN
  // Large payloads go in pieces: libpq buffers each call.
  constexpr size_t kChunk = 1 << 20;
  for (const std::string_view data : pieces) {
    for (size_t at = 0; at < data.size(); at += kChunk) {
      const size_t n = std::min(kChunk, data.size() - at);
      if (PQputCopyData(conn_.get(), data.data() + at, static_cast<int>(n)) != 1) {
        throw DatabaseError(fmt::format("COPY: {}", Trimmed(PQerrorMessage(conn_.get()))),
                            IsOpen() ? "XX000" : "08006");
      }
    }
  }
  if (PQputCopyEnd(conn_.get(), nullptr) != 1) {
    throw DatabaseError(fmt::format("COPY: {}", Trimmed(PQerrorMessage(conn_.get()))), IsOpen() ? "XX000" : "08006");
  }
  Result result = Check(PQgetResult(conn_.get()), sql);
  // Drain to the end of the command so the connection is usable again.
  while (PGresult* extra = PQgetResult(conn_.get())) PQclear(extra);
  return result.AffectedRows();
}

int64_t Connection::CopyOut(std::string_view sql, const std::function<void(std::string_view)>& sink) {
  Check(PQexec(conn_.get(), std::string(sql).c_str()), sql);  // PGRES_COPY_OUT
  std::exception_ptr failure;
  for (;;) {
    char* buffer = nullptr;
    const int n = PQgetCopyData(conn_.get(), &buffer, 0);
    if (n == -1) break;  // done: the command's result follows
    if (n == -2) {
      throw DatabaseError(fmt::format("COPY: {}", Trimmed(PQerrorMessage(conn_.get()))), IsOpen() ? "XX000" : "08006");
    }
    std::unique_ptr<char, decltype(&PQfreemem)> owned(buffer, &PQfreemem);
    if (failure) continue;  // drain the rest so the connection stays usable
    try {
      sink(std::string_view(buffer, static_cast<size_t>(n)));
    } catch (...) {
      failure = std::current_exception();
    }
  }
  Result result = Check(PQgetResult(conn_.get()), sql);
  while (PGresult* extra = PQgetResult(conn_.get())) PQclear(extra);
  if (failure) std::rethrow_exception(failure);
  return result.AffectedRows();
}

// ---- Transaction ----

Transaction::Transaction(Connection& conn) : conn_(conn) {
  conn_.Exec("BEGIN");
}

Transaction::~Transaction() {
  if (!open_) return;
  try {
    if (conn_.IsOpen()) conn_.Exec("ROLLBACK");
  } catch (const Error& e) {
    spdlog::debug("rollback failed: {}", e.what());
  }
}

void Transaction::Commit() {
  open_ = false;
  conn_.Exec("COMMIT");
}

void Transaction::Rollback() {
  open_ = false;
  conn_.Exec("ROLLBACK");
}

std::string QuoteIdentifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

std::string IsoTimestampSql(std::string_view column) {
  return fmt::format("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", column);
}

bool TableExists(Connection& conn, std::string_view name) {
  return conn.Exec("SELECT to_regclass($1) IS NOT NULL", Params().Add(QuoteIdentifier(name))).Get<bool>(0, 0);
}

void LockMigrations(Connection& conn) {
  conn.Exec("SELECT pg_advisory_xact_lock(hashtext('runnel_migrate'))");
}

std::string QuoteLiteral(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + '\'';
}

}  // namespace runnel::postgres
