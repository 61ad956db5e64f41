// Taking a snapshot: one REPEATABLE READ transaction of PostgreSQL copied, table by
// table, through CSV files into a new DuckDB file, then published (store.cpp).
#include "export.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include "duckdb.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/version.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/snapshot/snapshot.hpp"
#include "store_files.hpp"

namespace runnel::snapshot {

namespace fs = std::filesystem;
using postgres::QuoteIdentifier;
using postgres::QuoteLiteral;

namespace {

constexpr int kBackgroundNice = 19;

// PostgreSQL type OIDs (pg_type.dat).
enum : Oid {
  kBool = 16,
  kInt8 = 20,
  kInt2 = 21,
  kInt4 = 23,
  kText = 25,
  kJson = 114,
  kFloat4 = 700,
  kFloat8 = 701,
  kBpchar = 1042,
  kVarchar = 1043,
  kDate = 1082,
  kTimestamp = 1114,
  kTimestamptz = 1184,
  kNumeric = 1700,
  kUuid = 2950,
  kJsonb = 3802,
  kBoolArray = 1000,
  kInt2Array = 1005,
  kInt4Array = 1007,
  kTextArray = 1009,
  kVarcharArray = 1015,
  kInt8Array = 1016,
  kFloat4Array = 1021,
  kFloat8Array = 1022,
};

std::string ScalarDuckType(Oid type) {
  switch (type) {
    case kBool: return "BOOLEAN";
    case kInt2: return "SMALLINT";
    case kInt4: return "INTEGER";
    case kInt8: return "BIGINT";
    case kFloat4: return "FLOAT";
    case kFloat8:
    case kNumeric: return "DOUBLE";
    case kText:
    case kBpchar:
    case kVarchar: return "VARCHAR";
    case kUuid: return "UUID";
    case kDate: return "DATE";
    case kTimestamp: return "TIMESTAMP";
    case kTimestamptz: return "TIMESTAMPTZ";
    default: return "";
  }
}

std::string ListDuckType(Oid type) {
  switch (type) {
    case kBoolArray: return "BOOLEAN[]";
    case kInt2Array: return "SMALLINT[]";
    case kInt4Array: return "INTEGER[]";
    case kInt8Array: return "BIGINT[]";
    case kFloat4Array: return "FLOAT[]";
    case kFloat8Array: return "DOUBLE[]";
    case kTextArray:
    case kVarcharArray: return "VARCHAR[]";
    default: return "";
  }
}

}  // namespace

ColumnPlan PlanColumn(std::string_view name, Oid type) {
  const std::string column = "s." + QuoteIdentifier(name);
  ColumnPlan plan{std::string(name), column, "VARCHAR", "VARCHAR"};
  if (auto scalar = ScalarDuckType(type); !scalar.empty()) {
    plan.csv_type = plan.final_type = scalar;
  } else if (type == kJson || type == kJsonb) {
    plan.copy_expr = column + "::text";
    plan.final_type = "JSON";
  } else if (auto list = ListDuckType(type); !list.empty()) {
    // A list's JSON text ([1,2], ["a","b"]) is what DuckDB's JSON-to-list cast reads.
    plan.copy_expr = fmt::format("to_json({})::text", column);
    plan.csv_type = "JSON";
    plan.final_type = list;
  } else {
    plan.copy_expr = column + "::text";
  }
  return plan;
}

std::vector<TableCopy> TablesToCopy(const pipeline::PipelineConfig& config, const pipeline::SchemaNames& names,
                                    const pipeline::RequestKeys& keys, bool with_models, bool with_samples) {
  std::vector<TableCopy> tables;
  tables.push_back({"results", "SELECT * FROM " + QuoteIdentifier(names.results)});
  std::vector<std::string> inputs;
  const auto add = [&](const std::string& column) {
    if (column.empty() || std::find(inputs.begin(), inputs.end(), column) != inputs.end()) return;
    if (std::find(config.write_back.begin(), config.write_back.end(), column) != config.write_back.end()) return;
    inputs.push_back(column);
  };
  for (const auto& column : config.key_columns) add(column);
  add(config.client_column);
  for (const auto& column : config.features.input_columns) add(column);
  for (const auto& column : config.features.text_columns) add(column);
  add(config.model_type_column);
  std::string select = fmt::format("SELECT {} AS request_id", keys.IdOf("s"));
  for (const auto& column : inputs) select += ", s." + QuoteIdentifier(column);
  select += fmt::format(" FROM {} s WHERE {} AND {} IS NOT NULL", QuoteIdentifier(config.table), keys.KeyComplete("s"),
                        keys.IdOf("s"));
  tables.push_back({"inputs", select});
  tables.push_back({"quota", "SELECT * FROM " + QuoteIdentifier(names.quota)});
  if (with_models) {
    tables.push_back(
        {"models", fmt::format("SELECT name, version, format, description, data_type, created_at, status, "
                               "error, octet_length(bytes) AS bytes FROM runnel_models WHERE name = {} "
                               "ORDER BY version",
                               QuoteLiteral(config.model_name.empty() ? config.name : config.model_name))});
  }
  if (with_samples) {
    tables.push_back(
        {"samples", fmt::format("SELECT * FROM runnel_samples WHERE pipeline = {}", QuoteLiteral(config.name))});
  }
  return tables;
}

std::string CopyOutSql(const std::string& select, const std::vector<ColumnPlan>& columns) {
  std::string list;
  for (const auto& c : columns) {
    if (!list.empty()) list += ", ";
    list += c.copy_expr;
  }
  if (list.empty()) list = "NULL";
  return fmt::format("COPY (SELECT {} FROM ({}) s) TO STDOUT (FORMAT csv)", list, select);
}

std::string LoadCsvSql(const std::string& table, const std::string& csv_path, const std::vector<ColumnPlan>& columns) {
  std::string types, select;
  for (size_t i = 0; i < columns.size(); ++i) {
    const std::string field = fmt::format("c{}", i);
    types += fmt::format("{}{}: {}", i == 0 ? "" : ", ", duck::Literal(field), duck::Literal(columns[i].csv_type));
    select += fmt::format("{}CAST({} AS {}) AS {}", i == 0 ? "" : ", ", field, columns[i].final_type,
                          duck::Identifier(columns[i].name));
  }
  // PostgreSQL's CSV: NULL is an empty unquoted field, an empty text is "".
  return fmt::format(
      "CREATE TABLE {} AS SELECT {} FROM read_csv({}, columns = {{{}}}, header = false, auto_detect = false, "
      "delim = ',', quote = '\"', escape = '\"', allow_quoted_nulls = false, strict_mode = true)",
      duck::Identifier(table), select, duck::Literal(csv_path), types);
}

std::string RequestsViewSql(const std::vector<ColumnPlan>& results, const std::vector<ColumnPlan>& inputs) {
  std::set<std::string> taken;
  std::string select = "r.key AS request_id";
  taken.insert("request_id");
  for (const auto& c : results) {
    if (c.name == "key") continue;
    select += ", r." + duck::Identifier(c.name);
    taken.insert(c.name);
  }
  select += ", 1000 * (epoch(r.finished_at) - epoch(r.enqueued_at)) AS latency_ms";
  taken.insert("latency_ms");
  for (const auto& c : inputs) {
    if (c.name == "request_id") continue;
    std::string alias = c.name;
    while (taken.contains(alias)) alias = "input_" + alias;
    taken.insert(alias);
    select += fmt::format(", i.{} AS {}", duck::Identifier(c.name), duck::Identifier(alias));
  }
  return fmt::format("CREATE VIEW requests AS SELECT {} FROM results r LEFT JOIN inputs i ON i.request_id = r.key",
                     select);
}

namespace {

// Rests between stretches of copying so that the copy works `share` of the time: while
// it rests, PostgreSQL's backend fills the socket and waits too, and serving has the
// cores. Each stretch is kStep bytes.
class Pacer {
 public:
  explicit Pacer(double share) : share_(share) {}
  void Worked(size_t bytes) {
    bytes_ += bytes;
    if (bytes_ < kStep || share_ >= 1.0) return;
    bytes_ = 0;
    const auto busy = std::chrono::steady_clock::now() - since_;
    std::this_thread::sleep_for(
        std::chrono::duration_cast<std::chrono::microseconds>(busy * ((1.0 - share_) / share_)));
    since_ = std::chrono::steady_clock::now();
  }

 private:
  static constexpr size_t kStep = 4 << 20;
  double share_;
  size_t bytes_ = 0;
  std::chrono::steady_clock::time_point since_ = std::chrono::steady_clock::now();
};

// The columns `select` answers, planned.
std::vector<ColumnPlan> PlanColumns(postgres::Connection& conn, const std::string& select) {
  auto probe = conn.Exec(fmt::format("SELECT * FROM ({}) s LIMIT 0", select));
  std::vector<ColumnPlan> plans;
  for (int c = 0; c < probe.columns(); ++c) plans.push_back(PlanColumn(probe.ColumnName(c), probe.ColumnType(c)));
  return plans;
}

// Copies one table: PostgreSQL's COPY to a CSV file beside the snapshot, read by DuckDB.
int64_t CopyTable(postgres::Connection& pg, duck::Connection& duck, const TableCopy& table, const fs::path& csv,
                  double pace, std::vector<ColumnPlan>& plans) {
  plans = PlanColumns(pg, table.select);
  int64_t rows = 0;
  {
    std::ofstream out(csv, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(ErrorCode::Io, fmt::format("{}: cannot write", csv.string()));
    Pacer pacer(pace);
    rows = pg.CopyOut(CopyOutSql(table.select, plans), [&](std::string_view data) {
      out.write(data.data(), static_cast<std::streamsize>(data.size()));
      pacer.Worked(data.size());
    });
    out.flush();
    if (!out) throw Error(ErrorCode::Io, fmt::format("{}: write failed (disk full?)", csv.string()));
  }
  duck.Exec(LoadCsvSql(table.name, csv.string(), plans), fmt::format("snapshot table {}", table.name));
  fs::remove(csv);
  return rows;
}

// Removes what a crashed writer left (temporaries of unpublished versions).
void RemoveLeftovers(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(".v") && name.find(".tmp") != std::string::npos) fs::remove(entry.path(), ec);
  }
}

struct Written {
  std::map<std::string, int64_t> rows;
  std::string pg_snapshot;
};

// Snapshots are background work: the copying thread (and the DuckDB threads it starts,
// which inherit its nice value) and, when PostgreSQL runs on this machine as this
// user, the backend serving the copy run at the lowest CPU priority, so that serving
// keeps the cores. Where the backend cannot be reniced (another host, another user),
// nothing changes there.
void LowerPriority(postgres::Connection& pg) {
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kBackgroundNice);
  const auto pid = pg.Exec("SELECT pg_backend_pid()").Get<int64_t>(0, 0);
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(pid), kBackgroundNice) != 0) {
    spdlog::debug("snapshot: the backend's priority stays ({})", std::strerror(errno));
  }
}

// Undoes LowerPriority for this thread where it may (an unprivileged thread cannot
// raise its priority again: a scheduler thread stays background, which it is).
class PriorityScope {
 public:
  PriorityScope() : before_(::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()))) {}
  ~PriorityScope() { ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), before_); }

 private:
  int before_;
};

Written WriteSnapshot(postgres::Connection& pg, const pipeline::PipelineConfig& config, const fs::path& file,
                      int64_t version) {
  PriorityScope priority;
  LowerPriority(pg);
  const auto names = pipeline::NamesFor(config);
  const auto keys = pipeline::RequestKeys::Resolve(config, pipeline::SourceColumns(pg, config));
  postgres::Transaction tx(pg);
  pg.Exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
  pg.Exec("SET LOCAL TimeZone = 'UTC'");
  auto now = pg.Exec("SELECT pg_current_snapshot()::text AS snapshot, now()::text AS taken_at");
  Written written;
  written.pg_snapshot = now.Get<std::string>(0, "snapshot");
  const auto tables = TablesToCopy(config, names, keys, postgres::TableExists(pg, "runnel_models"),
                                   postgres::TableExists(pg, "runnel_samples"));
  duck::Database db(file.string(), {{"threads", "1"}});
  duck::Connection duck(db);
  std::map<std::string, std::vector<ColumnPlan>> plans;
  for (const auto& table : tables) {
    const fs::path csv = file.parent_path() / (file.filename().string() + "." + table.name + ".csv");
    written.rows[table.name] = CopyTable(pg, duck, table, csv, config.snapshots.pace, plans[table.name]);
  }
  tx.Commit();
  duck.Exec(RequestsViewSql(plans["results"], plans["inputs"]), "snapshot view requests");
  duck.Exec(
      "CREATE VIEW recommendations AS SELECT key AS request_key, unnest(recommended) AS product_key, model_version "
      "FROM results WHERE recommended IS NOT NULL",
      "snapshot view recommendations");
  duck.Exec(fmt::format("CREATE TABLE snapshot AS SELECT {} AS pipeline, {}::BIGINT AS version, "
                        "CAST({} AS TIMESTAMPTZ) AS taken_at, {} AS pg_snapshot, {} AS runnel_version",
                        duck::Literal(config.name), version, duck::Literal(now.Get<std::string>(0, "taken_at")),
                        duck::Literal(written.pg_snapshot), duck::Literal(kVersion)),
            "snapshot table snapshot");
  duck.Exec("CHECKPOINT", "snapshot checkpoint");
  return written;
}

}  // namespace

CreateOutcome SnapshotStore::Create(postgres::Connection& conn, const pipeline::PipelineConfig& config) const {
  const auto started = std::chrono::steady_clock::now();
  MakeDirectory(dir_);
  // One writer at a time per directory, across processes.
  FileDescriptor lock = OpenRegular(dir_ / ".lock", O_RDWR | O_CREAT);
  Flock(lock, LOCK_EX, dir_ / ".lock");
  RemoveLeftovers(dir_);
  const auto versions = List();
  const int64_t version = versions.empty() ? 1 : versions.back().version + 1;
  const fs::path temporary = dir_ / fmt::format(".v{}.duckdb.tmp", version);
  CreateOutcome outcome;
  try {
    auto written = WriteSnapshot(conn, config, temporary, version);
    outcome.rows = std::move(written.rows);
    outcome.pg_snapshot = std::move(written.pg_snapshot);
    PublishFile(dir_, temporary, FileNameOf(version));
  } catch (...) {
    RemoveLeftovers(dir_);  // the temporary file, its WAL and CSV files
    throw;
  }
  for (const auto& info : List()) {
    if (info.version == version) outcome.info = info;
  }
  outcome.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  return outcome;
}

}  // namespace runnel::snapshot
