#include "runnel/registry/registry.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include <thread>

#include "runnel/core/error.hpp"
#include "runnel/postgres/sqlstate.hpp"

namespace runnel::registry {

using postgres::Params;

namespace {

constexpr const char* kVersionColumns =
    "name, version, format, description, data_type, extract(epoch FROM created_at)::float8 AS created_at, status, "
    "error, octet_length(bytes)::bigint AS size";

ModelVersion ReadVersion(const postgres::Result& r, int row) {
  ModelVersion v;
  v.name = r.Get<std::string>(row, "name");
  v.version = r.Get<int64_t>(row, "version");
  v.format = r.Get<std::string>(row, "format");
  v.description = r.Get<std::string>(row, "description");
  v.data_type = r.GetOptional<std::string>(row, "data_type");
  v.created_at = r.Get<double>(row, "created_at");
  v.status = ParseModelStatus(r.Get<std::string>(row, "status"));
  v.error = r.GetOptional<std::string>(row, "error");
  v.size = r.Get<int64_t>(row, "size");
  return v;
}

}  // namespace

std::string_view ModelStatusName(ModelStatus status) {
  switch (status) {
    case ModelStatus::kPending: return "pending";
    case ModelStatus::kReady: return "ready";
    case ModelStatus::kRejected: return "rejected";
    case ModelStatus::kRolledBack: return "rolled_back";
  }
  return "?";
}

ModelStatus ParseModelStatus(std::string_view name) {
  for (auto status : {ModelStatus::kPending, ModelStatus::kReady, ModelStatus::kRejected, ModelStatus::kRolledBack}) {
    if (ModelStatusName(status) == name) return status;
  }
  throw Error(ErrorCode::Database, fmt::format("runnel_models holds an unknown status '{}'", name));
}

namespace {

void CheckRequest(const PushRequest& request) {
  if (request.name.empty() || request.name.size() > 100)
    throw Error(ErrorCode::InvalidInput, "model name must be 1 to 100 characters");
  if (request.bytes.empty())
    throw Error(ErrorCode::InvalidInput, fmt::format("model '{}': the model file is empty", request.name));
  if (request.data_type && (request.data_type->empty() || request.data_type->size() > 100))
    throw Error(ErrorCode::InvalidInput,
                fmt::format("model '{}': data type must be 1 to 100 characters", request.name));
}

// COPY's binary format (PostgreSQL docs, "COPY", Binary Format): a header, tuples of
// length-prefixed fields in network byte order, a trailer.
std::string BinaryCopyInt(uint32_t value, int bytes) {
  std::string out(static_cast<size_t>(bytes), '\0');
  for (int i = 0; i < bytes; ++i) out[static_cast<size_t>(i)] = static_cast<char>(value >> (8 * (bytes - 1 - i)));
  return out;
}

std::string BinaryCopyField(std::optional<std::string_view> value) {
  if (!value) return BinaryCopyInt(0xFFFFFFFFu, 4);  // -1: NULL
  return BinaryCopyInt(static_cast<uint32_t>(value->size()), 4) + std::string(*value);
}

// The version row for `request`, its bytes sent by a binary COPY in pieces (never a
// second whole copy of the model in this process, unlike a bytea parameter). Runs in
// the caller's transaction.
ModelVersion Insert(postgres::Connection& conn, const PushRequest& request) {
  if (request.bytes.size() > 0x3FFFFFFFu)
    throw Error(ErrorCode::InvalidInput,
                fmt::format("model '{}': {} bytes is more than PostgreSQL stores in one value (1 GiB)", request.name,
                            request.bytes.size()));
  const std::string head = std::string("PGCOPY\n\377\r\n\0", 11) + BinaryCopyInt(0, 4) + BinaryCopyInt(0, 4) +
                           BinaryCopyInt(4, 2) + BinaryCopyField(request.name) +
                           BinaryCopyInt(static_cast<uint32_t>(request.bytes.size()), 4);
  const std::string tail = BinaryCopyField(request.description) + BinaryCopyField(request.data_type) +
                           BinaryCopyInt(0xFFFFu, 2);  // -1: end of data
  const std::string_view pieces[] = {head, request.bytes, tail};
  conn.CopyIn("COPY runnel_models (name, bytes, description, data_type) FROM STDIN (FORMAT binary)", pieces);
  // The numbering trigger holds the name's advisory lock until commit: the newest
  // version of the name is the one just copied.
  auto r = conn.Exec(
      fmt::format("SELECT {} FROM runnel_models WHERE name = $1 ORDER BY version DESC LIMIT 1", kVersionColumns),
      Params().Add(request.name));
  return ReadVersion(r, 0);
}

}  // namespace

namespace {

void CreateRegistry(postgres::Connection& conn) {
  postgres::Transaction tx(conn);
  postgres::LockMigrations(conn);
  conn.Exec(
      "CREATE TABLE IF NOT EXISTS runnel_models ("
      "  name text NOT NULL, version bigint NOT NULL, format text NOT NULL DEFAULT '', bytes bytea NOT NULL,"
      "  description text NOT NULL DEFAULT '', data_type text,"
      "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
      "  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'rejected', 'rolled_back')),"
      "  error text, PRIMARY KEY (name, version))");
  // Versions number themselves, so a plain INSERT (name, bytes) joins the stream. The
  // advisory lock serialises two pushes of one name.
  conn.Exec(
      "CREATE OR REPLACE FUNCTION runnel_models_number() RETURNS trigger LANGUAGE plpgsql AS $runnel$\n"
      "BEGIN\n"
      "  PERFORM pg_advisory_xact_lock(hashtext('runnel_models:' || NEW.name));\n"
      "  IF NEW.version IS NULL THEN\n"
      "    SELECT coalesce(max(version), 0) + 1 INTO NEW.version FROM runnel_models WHERE name = NEW.name;\n"
      "  END IF;\n"
      "  RETURN NEW;\n"
      "END $runnel$");
  conn.Exec(
      "CREATE OR REPLACE FUNCTION runnel_models_notify() RETURNS trigger LANGUAGE plpgsql AS $runnel$\n"
      "BEGIN PERFORM pg_notify('runnel_models', ''); RETURN NULL; END $runnel$");
  auto triggers = conn.Exec("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'runnel_models'::regclass");
  if (triggers.Get<int64_t>(0, 0) == 0) {
    conn.Exec(
        "CREATE TRIGGER runnel_models_number BEFORE INSERT ON runnel_models FOR EACH ROW "
        "EXECUTE FUNCTION runnel_models_number()");
    conn.Exec(
        "CREATE TRIGGER runnel_models_notify AFTER INSERT OR UPDATE ON runnel_models FOR EACH STATEMENT "
        "EXECUTE FUNCTION runnel_models_notify()");
  }
  conn.Exec(
      "CREATE TABLE IF NOT EXISTS runnel_model_state ("
      "  process text NOT NULL, pipeline text NOT NULL, name text NOT NULL, version bigint NOT NULL,"
      "  data_type text, loaded_at timestamptz NOT NULL, heartbeat timestamptz NOT NULL,"
      "  invocations bigint NOT NULL, rows bigint NOT NULL, total_ms float8 NOT NULL, min_ms float8 NOT NULL,"
      "  max_ms float8 NOT NULL, PRIMARY KEY (process, pipeline, name, version))");
  tx.Commit();
}

}  // namespace

void MigrateRegistry(postgres::Connection& conn) {
  try {
    CreateRegistry(conn);
  } catch (const postgres::DatabaseError& e) {
    // A serving role without the right to create or replace (least privilege) uses
    // the registry its owner set up.
    if (e.sqlstate() != postgres::kInsufficientPrivilege) throw;
    if (!postgres::TableExists(conn, "runnel_models") || !postgres::TableExists(conn, "runnel_model_state")) throw;
  }
}

ModelVersion Push(postgres::Connection& conn, const PushRequest& request) {
  CheckRequest(request);
  postgres::Transaction tx(conn);
  auto version = Insert(conn, request);
  tx.Commit();
  return version;
}

std::optional<ModelVersion> PushIfEmpty(postgres::Connection& conn, const PushRequest& request) {
  CheckRequest(request);
  postgres::Transaction tx(conn);
  conn.Exec("SELECT pg_advisory_xact_lock(hashtext('runnel_models:' || $1))", Params().Add(request.name));
  auto count = conn.Exec("SELECT count(*) FROM runnel_models WHERE name = $1", Params().Add(request.name));
  if (count.Get<int64_t>(0, 0) > 0) return std::nullopt;
  auto version = Insert(conn, request);
  tx.Commit();
  return version;
}

ModelVersion AwaitVerdict(postgres::Connection& conn, ModelVersion pushed, std::chrono::milliseconds wait,
                          const std::atomic<bool>* stop) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (pushed.status == ModelStatus::kPending && std::chrono::steady_clock::now() < deadline &&
         (stop == nullptr || !stop->load())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (auto& v : Versions(conn, pushed.name)) {
      if (v.version == pushed.version) pushed = std::move(v);
    }
  }
  return pushed;
}

std::vector<ModelVersion> Versions(postgres::Connection& conn, std::string_view name) {
  auto r = conn.Exec(fmt::format("SELECT {} FROM runnel_models WHERE name = $1 ORDER BY version DESC", kVersionColumns),
                     Params().Add(name));
  std::vector<ModelVersion> versions;
  versions.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) versions.push_back(ReadVersion(r, i));
  return versions;
}

std::vector<std::string> Names(postgres::Connection& conn) {
  auto r = conn.Exec("SELECT DISTINCT name FROM runnel_models ORDER BY name", Params());
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) names.push_back(r.Get<std::string>(i, 0));
  return names;
}

std::string FetchBytes(postgres::Connection& conn, std::string_view name, int64_t version) {
  auto r =
      conn.Exec("SELECT bytes FROM runnel_models WHERE name = $1 AND version = $2", Params().Add(name).Add(version));
  if (r.rows() == 0) throw Error(ErrorCode::NotFound, fmt::format("model '{}' has no version {}", name, version));
  return r.Get<std::string>(0, 0);
}

ModelStatus SetValidated(postgres::Connection& conn, std::string_view name, int64_t version, bool ok,
                         std::string_view format, std::string_view error) {
  conn.Exec(
      "UPDATE runnel_models SET status = $3, format = $4, error = nullif($5, '') "
      "WHERE name = $1 AND version = $2 AND status = 'pending'",
      Params()
          .Add(name)
          .Add(version)
          .Add(ModelStatusName(ok ? ModelStatus::kReady : ModelStatus::kRejected))
          .Add(format)
          .Add(error));
  auto r =
      conn.Exec("SELECT status FROM runnel_models WHERE name = $1 AND version = $2", Params().Add(name).Add(version));
  if (r.rows() == 0) throw Error(ErrorCode::NotFound, fmt::format("model '{}' has no version {}", name, version));
  return ParseModelStatus(r.Get<std::string>(0, 0));
}

ModelVersion Rollback(postgres::Connection& conn, std::string_view name, const std::optional<std::string>& data_type) {
  postgres::Transaction tx(conn);
  conn.Exec("SELECT pg_advisory_xact_lock(hashtext('runnel_models:' || $1))", Params().Add(name));
  Params params;
  params.Add(name);
  if (data_type) {
    params.Add(*data_type);
  } else {
    params.AddNull(postgres::type_oid::kText);
  }
  auto ready = conn.Exec(
      "SELECT version FROM runnel_models WHERE name = $1 AND data_type IS NOT DISTINCT FROM $2 AND status = 'ready' "
      "ORDER BY version DESC LIMIT 2",
      params);
  const std::string what =
      data_type ? fmt::format("model '{}' (data type '{}')", name, *data_type) : fmt::format("model '{}'", name);
  if (ready.rows() == 0) throw Error(ErrorCode::NotFound, fmt::format("{} has no serving version", what));
  if (ready.rows() < 2) {
    throw Error(ErrorCode::Unavailable,
                fmt::format("{} has no earlier good version to roll back to (v{} is the only one)", what,
                            ready.Get<int64_t>(0, 0)));
  }
  conn.Exec("UPDATE runnel_models SET status = 'rolled_back' WHERE name = $1 AND version = $2",
            Params().Add(name).Add(ready.Get<int64_t>(0, 0)));
  auto r = conn.Exec(fmt::format("SELECT {} FROM runnel_models WHERE name = $1 AND version = $2", kVersionColumns),
                     Params().Add(name).Add(ready.Get<int64_t>(1, 0)));
  auto current = ReadVersion(r, 0);
  tx.Commit();
  return current;
}

void ReportState(postgres::Connection& conn, const std::string& process, const std::string& pipeline,
                 const std::vector<LoadedState>& loaded) {
  postgres::Transaction tx(conn);
  conn.Exec("DELETE FROM runnel_model_state WHERE process = $1 AND pipeline = $2", Params().Add(process).Add(pipeline));
  for (const auto& s : loaded) {
    Params params;
    params.Add(process).Add(pipeline).Add(s.name).Add(s.version);
    if (s.data_type) {
      params.Add(*s.data_type);
    } else {
      params.AddNull(postgres::type_oid::kText);
    }
    params.Add(s.loaded_at).Add(s.invocations).Add(s.rows).Add(s.total_ms).Add(s.min_ms).Add(s.max_ms);
    conn.Exec(
        "INSERT INTO runnel_model_state (process, pipeline, name, version, data_type, loaded_at, heartbeat, "
        "invocations, rows, total_ms, min_ms, max_ms) "
        "VALUES ($1, $2, $3, $4, $5, to_timestamp($6), clock_timestamp(), $7, $8, $9, $10, $11)",
        params);
  }
  tx.Commit();
}

namespace {

// Fresh rows of runnel_model_state whose `column` (a constant: name or pipeline) is `value`.
std::vector<LoadedState> ReadStateWhere(postgres::Connection& conn, std::string_view column, std::string_view value,
                                        double fresh_seconds) {
  auto r = conn.Exec(
      fmt::format("SELECT process, pipeline, name, version, data_type, extract(epoch FROM loaded_at)::float8 AS "
                  "loaded_at, invocations, rows, total_ms, min_ms, max_ms FROM runnel_model_state WHERE {} = $1 AND "
                  "heartbeat > "
                  "clock_timestamp() - make_interval(secs => $2) ORDER BY version DESC, process",
                  column),
      Params().Add(value).Add(fresh_seconds));
  std::vector<LoadedState> states;
  for (int i = 0; i < r.rows(); ++i) {
    LoadedState s;
    s.process = r.Get<std::string>(i, "process");
    s.pipeline = r.Get<std::string>(i, "pipeline");
    s.name = r.Get<std::string>(i, "name");
    s.version = r.Get<int64_t>(i, "version");
    s.data_type = r.GetOptional<std::string>(i, "data_type");
    s.loaded_at = r.Get<double>(i, "loaded_at");
    s.invocations = r.Get<int64_t>(i, "invocations");
    s.rows = r.Get<int64_t>(i, "rows");
    s.total_ms = r.Get<double>(i, "total_ms");
    s.min_ms = r.Get<double>(i, "min_ms");
    s.max_ms = r.Get<double>(i, "max_ms");
    states.push_back(std::move(s));
  }
  return states;
}

}  // namespace

std::vector<LoadedState> ReadState(postgres::Connection& conn, std::string_view name, double fresh_seconds) {
  return ReadStateWhere(conn, "name", name, fresh_seconds);
}

std::vector<LoadedState> ReadPipelineState(postgres::Connection& conn, std::string_view pipeline,
                                           double fresh_seconds) {
  if (!postgres::TableExists(conn, "runnel_model_state")) return {};
  return ReadStateWhere(conn, "pipeline", pipeline, fresh_seconds);
}

std::string ProcessId() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return fmt::format("{}:{}", host[0] ? host : "localhost", ::getpid());
}

}  // namespace runnel::registry
