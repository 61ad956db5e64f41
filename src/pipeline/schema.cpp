#include "runnel/pipeline/schema.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <set>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/serving_stages.hpp"
#include "runnel/postgres/sqlstate.hpp"

namespace runnel::pipeline {

using postgres::Params;
using postgres::QuoteIdentifier;

SchemaNames NamesFor(const PipelineConfig& config) {
  return NamesFor(config.name);
}

SchemaNames NamesFor(std::string_view pipeline_name) {
  const std::string prefix = "runnel_" + std::string(pipeline_name);
  return {prefix + "_queue",           prefix + "_results",        prefix + "_quota",
          prefix + "_recommendations", prefix + "_capture",        prefix + "_capture",
          prefix + "_capture_update",  prefix + "_capture_update", prefix,
          prefix + "_events",          prefix + "_served",         prefix + "_keys",
          prefix + "_jetstream",       prefix + "_published",      prefix + "_id",
          prefix + "_id_seq",          prefix + "_gone_keys",      prefix + "_capture_delete",
          prefix + "_capture_truncate"};
}

int64_t QueueChunk(const PipelineConfig& config) {
  return std::max<int64_t>(1, static_cast<int64_t>(config.max_batch) / 4);
}

std::string QueueInsertSql(const PipelineConfig& config, const std::string& keys_sql, const std::string& job_sql) {
  return fmt::format(
      "INSERT INTO {queue} (keys, n, job) SELECT range_agg({range}), count(*), {job} FROM "
      "(SELECT k, (row_number() OVER (ORDER BY k) - 1) / {chunk} AS chunk FROM ({keys}) AS s(k) WHERE k IS NOT NULL) c "
      "GROUP BY chunk",
      fmt::arg("queue", QuoteIdentifier(NamesFor(config).queue)), fmt::arg("job", job_sql),
      fmt::arg("chunk", QueueChunk(config)), fmt::arg("keys", keys_sql), fmt::arg("range", KeyRangeSql("k")));
}

std::string KeyRangeSql(const std::string& key) {
  // '[k,k]' would be canonicalised to [k, k + 1), which overflows for the largest
  // bigint; a range unbounded above holds exactly the keys from k to that bigint.
  return fmt::format("int8range({k}, CASE WHEN {k} < 9223372036854775807 THEN {k} + 1 END)", fmt::arg("k", key));
}

namespace {

QueueState ReadQueue(postgres::Connection& conn, const SchemaNames& names) {
  auto r = conn.Exec(fmt::format("SELECT coalesce(sum(n), 0)::bigint AS requests, coalesce(extract(epoch FROM "
                                 "clock_timestamp() - min(enqueued_at)), 0)::float8 AS oldest_seconds FROM {}",
                                 QuoteIdentifier(names.queue)),
                     Params());
  return {r.Get<int64_t>(0, "requests"), r.Get<double>(0, "oldest_seconds")};
}

}  // namespace

QueueState ReadQueueState(postgres::Connection& conn, const PipelineConfig& config) {
  return ReadQueue(conn, NamesFor(config));
}

std::map<RequestStatus, int64_t> CountResults(postgres::Connection& conn, const SchemaNames& names) {
  auto r = conn.Exec(
      fmt::format("SELECT status, count(*) AS n FROM {} GROUP BY status", QuoteIdentifier(names.results)), Params());
  std::map<RequestStatus, int64_t> out;
  for (int i = 0; i < r.rows(); ++i) {
    out[ParseRequestStatus(r.Get<std::string>(i, "status")).value_or(RequestStatus::kFailed)] += r.Get<int64_t>(i, "n");
  }
  return out;
}

std::vector<InstalledPipeline> ListPipelines(postgres::Connection& conn) {
  std::vector<InstalledPipeline> out;
  if (!postgres::TableExists(conn, "runnel_migrations")) return out;
  auto r = conn.Exec(
      "SELECT pipeline, max(version) AS version FROM runnel_migrations GROUP BY pipeline ORDER BY pipeline", Params());
  for (int i = 0; i < r.rows(); ++i) {
    InstalledPipeline p;
    p.name = r.Get<std::string>(i, "pipeline");
    p.schema_version = r.Get<int32_t>(i, "version");
    const auto names = NamesFor(p.name);
    if (postgres::TableExists(conn, names.queue)) p.queue = ReadQueue(conn, names);
    if (postgres::TableExists(conn, names.results)) p.results = CountResults(conn, names);
    out.push_back(std::move(p));
  }
  return out;
}

int64_t UnclaimedRequests(postgres::Connection& conn, const PipelineConfig& config) {
  postgres::Transaction tx(conn);
  auto r = conn.Exec(fmt::format("SELECT coalesce(sum(n), 0)::bigint FROM (SELECT n FROM {} FOR UPDATE SKIP LOCKED) s",
                                 QuoteIdentifier(NamesFor(config).queue)),
                     Params());
  const auto n = r.Get<int64_t>(0, 0);
  tx.Rollback();  // the locks were only a way to skip rows being served
  return n;
}

namespace {

std::map<std::string, std::string> ColumnTypes(postgres::Connection& conn, const std::string& table) {
  auto columns = conn.Exec(
      "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a "
      "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
      Params().Add(QuoteIdentifier(table)));
  std::map<std::string, std::string> types;
  for (int r = 0; r < columns.rows(); ++r)
    types[columns.Get<std::string>(r, "name")] = columns.Get<std::string>(r, "type");
  return types;
}

// The results table's output columns: double precision, text for class labels. A
// column of the other type (the file changed an output's kind) is refused, naming it.
void EnsureOutputColumns(postgres::Connection& conn, const PipelineConfig& config, const SchemaNames& names) {
  const auto existing = ColumnTypes(conn, names.results);
  for (const auto& column : config.output_columns) {
    const char* type = IsLabelOutput(config, column) ? "text" : "double precision";
    const auto it = existing.find(column);
    if (it == existing.end()) {
      conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN {} {}", QuoteIdentifier(names.results), QuoteIdentifier(column),
                            type));
    } else if (it->second != type) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: output column '{}' of {} is {}, but the pipeline makes it {} (model.labels); "
                              "rename the output or drop the column",
                              config.file.string(), column, names.results, it->second, type));
    }
  }
}

}  // namespace

std::map<std::string, std::string> SourceColumns(postgres::Connection& conn, const PipelineConfig& config) {
  return ColumnTypes(conn, config.table);
}

void CheckInputTypes(const PipelineConfig& config, const std::map<std::string, std::string>& types) {
  for (const auto& column : config.features.input_columns) {
    const auto type = types.find(column);
    if (type == types.end()) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: table '{}' has no column '{}'", config.file.string(), config.table, column));
    }
    if (!IsNumericInputType(type->second)) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: input column '{}' of '{}' is {}; the features read numbers (smallint, integer, "
                              "bigint, real, double precision or numeric)",
                              config.file.string(), column, config.table, type->second));
    }
  }
  for (const auto& column : config.features.text_columns) {  // any type: read as its text form
    if (!types.contains(column)) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: table '{}' has no text column '{}'", config.file.string(), config.table, column));
    }
  }
}

namespace {

// The source table and every column the pipeline names must exist, of usable types.
// Returns how its rows are keyed.
RequestKeys CheckSourceTable(postgres::Connection& conn, const PipelineConfig& config) {
  if (config.table.empty()) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: [source].table is required to run", config.file.string()));
  }
  std::map<std::string, std::string> types = SourceColumns(conn, config);
  if (types.empty()) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: table '{}' does not exist: create it before `runnel migrate`",
                                                     config.file.string(), config.table));
  }
  std::vector<std::string> needed = config.key_columns;
  if (!config.client_column.empty()) needed.push_back(config.client_column);
  for (const auto& c : config.features.input_columns) needed.push_back(c);
  for (const auto& c : config.write_back) needed.push_back(c);
  if (!config.model_type_column.empty()) needed.push_back(config.model_type_column);
  for (const auto& column : needed) {
    if (!types.contains(column)) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: table '{}' has no column '{}'", config.file.string(), config.table, column));
    }
  }
  CheckInputTypes(config, types);
  const auto keys = RequestKeys::Resolve(config, types);
  if (keys.mapped() && config.capture == CaptureMode::Notify) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{}: capture mode \"notify\" carries integer keys; key ({}) needs mode \"queue\"",
                            config.file.string(), keys.Signature()));
  }
  return keys;
}

// Version 1: the queue, results, quota and recommendations tables. Returns what it did.
std::string CreateTables(postgres::Connection& conn, const SchemaNames& names) {
  conn.Exec(
      fmt::format("CREATE TABLE IF NOT EXISTS {} (seq bigserial PRIMARY KEY, key bigint NOT NULL, "
                  "enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                  QuoteIdentifier(names.queue)));
  conn.Exec(fmt::format(
      "CREATE TABLE IF NOT EXISTS {} (key bigint PRIMARY KEY, "
      "status text NOT NULL CHECK (status IN ('done', 'throttled', 'failed')), error text, model_version text, "
      "enqueued_at timestamptz, finished_at timestamptz NOT NULL DEFAULT clock_timestamp())",
      QuoteIdentifier(names.results)));
  conn.Exec(fmt::format("CREATE INDEX IF NOT EXISTS {} ON {} (status)", QuoteIdentifier(names.results + "_status"),
                        QuoteIdentifier(names.results)));
  conn.Exec(fmt::format("CREATE TABLE IF NOT EXISTS {} (client text PRIMARY KEY, requests bigint NOT NULL)",
                        QuoteIdentifier(names.quota)));
  // No primary key: a request's rows are written once, DISTINCT, by the one worker
  // that claimed it (rescoring deletes the old ones first), and a unique index
  // doubles the cost of the hottest insert.
  conn.Exec(fmt::format(
      "CREATE TABLE IF NOT EXISTS {} (request_key bigint NOT NULL, product_key bigint NOT NULL, model_version text)",
      QuoteIdentifier(names.recommendations)));
  conn.Exec(fmt::format("CREATE INDEX IF NOT EXISTS {} ON {} (request_key)",
                        QuoteIdentifier(names.recommendations + "_request"), QuoteIdentifier(names.recommendations)));
  return fmt::format("created {}, {}, {} and {}", names.queue, names.results, names.quota, names.recommendations);
}

// Version 2: batch jobs. Returns what it did.
std::string AddBatchJobs(postgres::Connection& conn, const SchemaNames& names) {
  // Batch jobs: a queue row may belong to a job (rescoring; not counted by quota).
  conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN IF NOT EXISTS job bigint", QuoteIdentifier(names.queue)));
  conn.Exec(
      "CREATE TABLE IF NOT EXISTS runnel_jobs (id bigserial PRIMARY KEY, pipeline text NOT NULL, "
      "filter text NOT NULL DEFAULT '', batch_size int NOT NULL, "
      "state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'cancelled', 'failed')), "
      "total bigint NOT NULL DEFAULT 0, enqueued bigint NOT NULL DEFAULT 0, served bigint NOT NULL DEFAULT 0, "
      "cursor bigint, until_key bigint, enqueue_done boolean NOT NULL DEFAULT false, error text, "
      "created_at timestamptz NOT NULL DEFAULT clock_timestamp(), updated_at timestamptz NOT NULL DEFAULT "
      "clock_timestamp(), finished_at timestamptz)");
  return fmt::format("added batch jobs to {}", names.queue);
}

// Version 3: one queue row per statement, recommendations in the result row. Returns what it did.
std::string QueueStatements(postgres::Connection& conn, const SchemaNames& names) {
  // One queue row per inserting statement (a multirange of its keys, in chunks)
  // instead of one per request, and recommendations stored as an array in the
  // request's result row behind a view of the old shape: per-request writes were
  // what bounded the burst throughput (docs/performance.md).
  const std::string queue = QuoteIdentifier(names.queue);
  const std::string results = QuoteIdentifier(names.results);
  const std::string recommendations = QuoteIdentifier(names.recommendations);
  conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN keys int8multirange, ADD COLUMN n integer", queue));
  conn.Exec(fmt::format("UPDATE {} SET keys = int8multirange({}), n = 1", queue, KeyRangeSql("key")));
  conn.Exec(fmt::format("ALTER TABLE {q} ALTER keys SET NOT NULL, ALTER n SET NOT NULL, DROP COLUMN key",
                        fmt::arg("q", queue)));
  conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN recommended bigint[]", results));
  conn.Exec(fmt::format(
      "UPDATE {} r SET recommended = x.products FROM (SELECT request_key, array_agg(DISTINCT product_key) AS "
      "products FROM {} GROUP BY request_key) x WHERE r.key = x.request_key",
      results, recommendations));
  conn.Exec(fmt::format("UPDATE {} SET recommended = '{{}}' WHERE status = 'done' AND recommended IS NULL", results));
  conn.Exec(fmt::format("DROP TABLE {}", recommendations));
  conn.Exec(
      fmt::format("CREATE VIEW {} AS SELECT r.key AS request_key, p.product_key, r.model_version FROM {} r "
                  "CROSS JOIN LATERAL unnest(r.recommended) AS p(product_key)",
                  recommendations, results));
  // Most results are 'done': only the others are worth an index.
  conn.Exec(fmt::format("DROP INDEX IF EXISTS {}", QuoteIdentifier(names.results + "_status")));
  conn.Exec(fmt::format("CREATE INDEX {} ON {} (status) WHERE status <> 'done'",
                        QuoteIdentifier(names.results + "_unfinished"), results));
  return fmt::format("one queue row per inserting statement in {}, recommendations in {}", names.queue, names.results);
}

// Version 4: failure reasons, attempts and pauses. Returns what it did.
std::string IsolateFailures(postgres::Connection& conn, const SchemaNames& names) {
  // Fault isolation: a request keeps its failure's SQLSTATE and how often it was
  // tried; `runnel retry` re-queues failed ones (status 'queued'); a request deferred
  // because its row stayed locked goes back to the queue with its attempts counted.
  const std::string results = QuoteIdentifier(names.results);
  conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0",
                        QuoteIdentifier(names.queue)));
  conn.Exec(fmt::format(
      "ALTER TABLE {} ADD COLUMN IF NOT EXISTS sqlstate text, ADD COLUMN IF NOT EXISTS attempts integer NOT NULL "
      "DEFAULT 1",
      results));
  conn.Exec(fmt::format("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}", results,
                        QuoteIdentifier(names.results + "_status_check")));
  conn.Exec(fmt::format("ALTER TABLE {} ADD CONSTRAINT {} CHECK (status IN ('queued', 'done', 'throttled', 'failed'))",
                        results, QuoteIdentifier(names.results + "_status_check")));
  conn.Exec(
      "CREATE TABLE IF NOT EXISTS runnel_pauses (pipeline text NOT NULL, process text NOT NULL, reason text NOT "
      "NULL, "
      "since timestamptz NOT NULL DEFAULT clock_timestamp(), seen_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
      "PRIMARY KEY (pipeline, process))");
  return fmt::format("failure reasons, attempts and replay in {}", names.results);
}

// Version 5: result events. Returns what it did.
std::string AddResultEvents(postgres::Connection& conn, const SchemaNames& names) {
  // Result events: each batch's served keys, in a total order readers can resume
  // from: (txid, id) of rows whose transaction is older than every running one
  // (pg_snapshot_xmin) never gain a predecessor (server/event_hub.hpp).
  conn.Exec(
      fmt::format("CREATE TABLE IF NOT EXISTS {} (txid xid8 NOT NULL DEFAULT pg_current_xact_id(), id bigserial, "
                  "keys bigint[] NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (txid, id))",
                  QuoteIdentifier(names.events)));
  return fmt::format("result events in {}", names.events);
}

// Version 7: a request whose row was deleted before it was served is 'gone'. Returns
// what it did.
std::string AddGoneStatus(postgres::Connection& conn, const SchemaNames& names) {
  const std::string results = QuoteIdentifier(names.results);
  const std::string check = QuoteIdentifier(names.results + "_status_check");
  conn.Exec(fmt::format("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}", results, check));
  conn.Exec(fmt::format(
      "ALTER TABLE {} ADD CONSTRAINT {} CHECK (status IN ('queued', 'done', 'throttled', 'failed', 'gone'))", results,
      check));
  return fmt::format("status 'gone' in {}", names.results);
}

// Version 6: quota windows. Returns what it did.
std::string AddQuotaWindows(postgres::Connection& conn, const SchemaNames& names) {
  // -infinity: counters from before windows count over all time, as they did.
  conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN IF NOT EXISTS window_start timestamptz NOT NULL DEFAULT '-infinity'",
                        QuoteIdentifier(names.quota)));
  return fmt::format("quota windows in {}", names.quota);
}

// Version 8: update capture's 'superseded' requests. Returns what it did.
std::string AddSupersededStatus(postgres::Connection& conn, const SchemaNames& names) {
  const std::string results = QuoteIdentifier(names.results);
  const std::string check = QuoteIdentifier(names.results + "_status_check");
  conn.Exec(fmt::format("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}", results, check));
  conn.Exec(
      fmt::format("ALTER TABLE {} ADD CONSTRAINT {} CHECK (status IN ('queued', 'done', 'throttled', 'failed', "
                  "'gone', 'superseded'))",
                  results, check));
  return fmt::format("status 'superseded' in {}", names.results);
}

// Version 9: failed requests by key, so that the latest ones (the dashboard) are read
// without a scan; only failed rows are indexed, served ones cost nothing. Returns what
// it did.
std::string IndexFailedRequests(postgres::Connection& conn, const SchemaNames& names) {
  conn.Exec(fmt::format("CREATE INDEX IF NOT EXISTS {} ON {} (key) WHERE status = 'failed'",
                        QuoteIdentifier(names.results + "_failed"), QuoteIdentifier(names.results)));
  return fmt::format("an index of the failed requests of {}", names.results);
}

// Version 10: request ids of mapped keys in a column of the source table, the key map
// replaced by a view (KeyIds, run by every migrate, makes and converts them: it needs
// the key). A version of its own so that an older runnel neither migrates nor serves
// the pipeline (CheckNotNewer). Returns what it did.
std::string RequestIdsInSourceTable(postgres::Connection&, const SchemaNames&) {
  return "request ids of uuid, text and composite keys in a column of the source table";
}

using MigrationStep = std::string (*)(postgres::Connection&, const SchemaNames&);
// Step i takes the schema from version i to i + 1.
constexpr MigrationStep kSteps[] = {CreateTables,        AddBatchJobs,           QueueStatements, IsolateFailures,
                                    AddResultEvents,     AddQuotaWindows,        AddGoneStatus,   AddSupersededStatus,
                                    IndexFailedRequests, RequestIdsInSourceTable};
static_assert(std::size(kSteps) == kSchemaVersion);

// The statements of the capture function's body that set lo, hi and distinct_keys
// (the statement's smallest and largest request id and how many there are), and the
// query of all its request ids for when they are not consecutive.
struct CaptureIds {
  std::string count, ids;
};

// The statement's request ids: the key column's values (direct), or the id column's
// of rows whose key is complete (mapped: only those are requests). Ids a sequence gave
// one statement are consecutive unless another statement drew from it meanwhile.
CaptureIds StatementCaptureIds(const RequestKeys& keys) {
  const std::string id = keys.IdOf("");
  const std::string rows =
      keys.mapped() ? fmt::format("runnel_new_rows WHERE {}", keys.KeyComplete("")) : std::string("runnel_new_rows");
  return {fmt::format("  SELECT min(k), max(k), count(DISTINCT k) INTO lo, hi, distinct_keys\n"
                      "    FROM (SELECT {} AS k FROM {}) s;\n"
                      "  IF distinct_keys = 0 THEN RETURN NULL; END IF;\n",
                      id, rows),
          fmt::format("SELECT {} FROM {}", id, rows)};
}

// A statement-level trigger fires only on the table its statement names: rows
// inserted or deleted straight into a partition fire that partition's triggers, not
// the parent's. So the capture's statement-level triggers are on every partition too
// (at every level), as the parent's: a statement through the parent fires the
// parent's only, so each row is captured once. The statements that find the
// partitions missing a trigger, and the tables holding one that are no longer
// partitions of the source (detached), live here.
class PartitionTriggers {
 public:
  PartitionTriggers(postgres::Connection& conn, const PipelineConfig& config)
      : conn_(conn), table_(QuoteIdentifier(config.table)), source_(config.table) {}

  // Partitions of the source without trigger `name`, in a form usable in SQL.
  std::vector<std::string> Missing(const std::string& name) {
    return Names(conn_.Exec(
        "SELECT p.relid::regclass::text FROM pg_partition_tree(to_regclass($1)) p WHERE p.level > 0 AND NOT EXISTS "
        "(SELECT 1 FROM pg_trigger t WHERE t.tgrelid = p.relid AND t.tgname = $2) ORDER BY p.level, 1",
        Params().Add(table_).Add(name)));
  }

  // Puts trigger `name` (`event`: "AFTER INSERT ON {} REFERENCING ...", {} for the
  // table) on each partition missing it, and removes it from tables that left the
  // source's partition tree. Returns what it did.
  std::vector<std::string> Cover(const std::string& name, const std::string& function, const std::string& event) {
    std::vector<std::string> done;
    for (const auto& partition : Missing(name)) {
      conn_.Exec(fmt::format("CREATE TRIGGER {} {} FOR EACH STATEMENT EXECUTE FUNCTION {}()", QuoteIdentifier(name),
                             fmt::format(fmt::runtime(event), partition), QuoteIdentifier(function)));
      done.push_back(fmt::format("installed trigger {} on partition {} of {}", name, partition, source_));
    }
    for (const auto& table : Stale(name, function)) {
      conn_.Exec(fmt::format("DROP TRIGGER {} ON {}", QuoteIdentifier(name), table));
      done.push_back(fmt::format("removed trigger {} from {}: no longer a partition of {}", name, table, source_));
    }
    return done;
  }

 private:
  std::vector<std::string> Stale(const std::string& name, const std::string& function) {
    return Names(conn_.Exec(
        "SELECT t.tgrelid::regclass::text FROM pg_trigger t WHERE t.tgname = $2 AND t.tgfoid = to_regproc($3) AND "
        "t.tgparentid = 0 AND t.tgrelid <> to_regclass($1) AND t.tgrelid NOT IN (SELECT relid FROM "
        "pg_partition_tree(to_regclass($1))) ORDER BY 1",
        Params().Add(table_).Add(name).Add(QuoteIdentifier(function))));
  }

  static std::vector<std::string> Names(const postgres::Result& r) {
    std::vector<std::string> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(r.Get<std::string>(i, 0));
    return out;
  }

  postgres::Connection& conn_;
  const std::string table_;
  const std::string source_;
};

// Whether `table` (quoted) has a trigger named `name`.
bool HasTrigger(postgres::Connection& conn, const std::string& name, const std::string& table) {
  return conn
      .Exec("SELECT count(*) > 0 FROM pg_trigger WHERE tgname = $1 AND tgrelid = to_regclass($2)",
            Params().Add(name).Add(table))
      .Get<bool>(0, 0);
}

constexpr const char* kInsertCaptureEvent = "AFTER INSERT ON {} REFERENCING NEW TABLE AS runnel_new_rows";
constexpr const char* kDeleteCaptureEvent = "AFTER DELETE ON {} REFERENCING OLD TABLE AS runnel_old_rows";
constexpr const char* kTruncateCaptureEvent = "BEFORE TRUNCATE ON {}";

// The capture function (replaced on every run) and its trigger (queue capture mode).
// Returns what it did when it created the trigger.
std::optional<std::string> InstallCapture(postgres::Connection& conn, const PipelineConfig& config,
                                          const SchemaNames& names, const RequestKeys& keys) {
  const std::string table = QuoteIdentifier(config.table);
  // One queue row per chunk of a statement's request ids: a 1,000-row INSERT costs a
  // few queue rows, not 1,000. Consecutive ids collapse into one range. When the
  // statement's ids are consecutive (a sequence's), the chunks are computed from min
  // and max; otherwise range_agg builds them (~8x the cost per row). A chunk ending at
  // the largest bigint is stored unbounded above (see KeyRangeSql).
  const CaptureIds ids = StatementCaptureIds(keys);
  conn.Exec(fmt::format(
      "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $runnel$\n"
      "DECLARE lo bigint; hi bigint; distinct_keys bigint;\n"
      "BEGIN\n"
      "{count}"
      "  IF hi::numeric - lo + 1 = distinct_keys THEN\n"
      "    INSERT INTO {queue} (keys, n)\n"
      "      SELECT int8multirange(int8range(c, CASE WHEN u <= 9223372036854775807 THEN u::bigint END)), u - c\n"
      "      FROM generate_series(lo, hi, {chunk}) AS c,\n"
      "           LATERAL (SELECT least(c::numeric + {chunk}, hi::numeric + 1) AS u) b;\n"
      "  ELSE\n"
      "    {gaps};\n"
      "  END IF;\n"
      "  PERFORM pg_notify({channel}, '');\n"
      "  RETURN NULL;\n"
      "END $runnel$",
      fmt::arg("fn", QuoteIdentifier(names.capture_function)), fmt::arg("queue", QuoteIdentifier(names.queue)),
      fmt::arg("count", ids.count), fmt::arg("chunk", QueueChunk(config)),
      fmt::arg("channel", postgres::QuoteLiteral(names.channel)),
      fmt::arg("gaps", QueueInsertSql(config, ids.ids, "NULL"))));
  if (!HasTrigger(conn, names.trigger, table)) {
    conn.Exec(fmt::format("CREATE TRIGGER {} {} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                          QuoteIdentifier(names.trigger), fmt::format(fmt::runtime(kInsertCaptureEvent), table),
                          QuoteIdentifier(names.capture_function)));
    return fmt::format("installed statement-level capture trigger {} on {}", names.trigger, config.table);
  }
  return std::nullopt;
}

// The schema objects of mapped keys (request_keys.hpp), made or converted from the
// key map of schema version 9, and checked: a key changed since (other columns, other
// types) would mean other requests: refused, naming the way out.
class KeyIds {
 public:
  KeyIds(postgres::Connection& conn, const PipelineConfig& config, const SchemaNames& names, const RequestKeys& keys)
      : conn_(conn), config_(config), names_(names), keys_(keys), table_(QuoteIdentifier(config.table)) {}

  // Returns what it did, if anything.
  std::optional<std::string> Ensure() {
    const std::string kind = MapKind();
    if (!keys_.mapped()) {
      if (kind.empty()) return std::nullopt;
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: pipeline '{}' was migrated with another key ({} exists); run `runnel unmigrate` "
                              "first to serve it by {}",
                              config_.file.string(), config_.name, names_.keys, keys_.Signature()));
    }
    if (!kind.empty()) CheckSignature();
    if (kind == "v") return std::nullopt;
    if (kind.empty()) RefuseIntegerResults();
    const bool converted = !kind.empty();
    AddIdColumn(converted);
    CreateGoneKeys(converted);
    CreateView();
    InstallDeleteCapture();
    if (converted) {
      return fmt::format("moved the request ids of {} into {}.{} (deleted rows' into {})", names_.keys, config_.table,
                         names_.ids, names_.gone_keys);
    }
    return fmt::format("added request id column {} to {}, view {} of ids and keys {}", names_.ids, config_.table,
                       names_.keys, keys_.Signature());
  }

 private:
  // "r": the key map of schema version 9; "v": the view of version 10; "": none.
  std::string MapKind() {
    auto r = conn_.Exec("SELECT coalesce((SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)), '')",
                        Params().Add(keys_.map_table()));
    return r.Get<std::string>(0, 0);
  }

  void CheckSignature() {
    const auto recorded =
        conn_.Exec("SELECT coalesce(obj_description(to_regclass($1), 'pg_class'), '')", Params().Add(keys_.map_table()))
            .Get<std::string>(0, 0);
    if (recorded == keys_.Signature()) return;
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{}: pipeline '{}' was migrated with key ({}), not ({}); run `runnel unmigrate` first",
                            config_.file.string(), config_.name, recorded, keys_.Signature()));
  }

  void RefuseIntegerResults() {
    if (!postgres::TableExists(conn_, names_.results) ||
        !conn_.Exec(fmt::format("SELECT EXISTS (SELECT 1 FROM {})", QuoteIdentifier(names_.results))).Get<bool>(0, 0))
      return;
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{}: pipeline '{}' has results keyed by {} and now names key ({}); run `runnel "
                            "unmigrate` first",
                            config_.file.string(), config_.name, "an integer column", keys_.Signature()));
  }

  // The id column, its sequence and index; existing rows get ids: a converted map's
  // where it had one (the sequence continues after them), new ones otherwise. The
  // default is set after the backfill: ADD COLUMN with a volatile default would
  // rewrite the table, then the map's ids would rewrite it again.
  void AddIdColumn(bool converted) {
    const std::string column = QuoteIdentifier(names_.ids);
    const std::string sequence = QuoteIdentifier(names_.ids_sequence);
    const std::string next = fmt::format("nextval({})", postgres::QuoteLiteral(sequence));
    conn_.Exec(fmt::format("CREATE SEQUENCE {}", sequence));
    conn_.Exec(fmt::format("ALTER TABLE {} ADD COLUMN {} bigint", table_, column));
    if (converted) {
      conn_.Exec(fmt::format("SELECT setval({}, max({})) FROM {} HAVING count(*) > 0", postgres::QuoteLiteral(sequence),
                             RequestKeys::kIdColumn, keys_.map_table()));
      conn_.Exec(fmt::format("UPDATE {} s SET {} = m.{} FROM {} m WHERE {}", table_, column, RequestKeys::kIdColumn,
                             keys_.map_table(), keys_.SameKey("s", "m")));
    }
    conn_.Exec(fmt::format("UPDATE {} SET {} = {} WHERE {} IS NULL AND {}", table_, column, next, column,
                           keys_.KeyComplete("")));
    conn_.Exec(fmt::format("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}", table_, column, next));
    conn_.Exec(fmt::format("ALTER SEQUENCE {} OWNED BY {}.{}", sequence, table_, column));
    conn_.Exec(fmt::format("CREATE INDEX {} ON {} ({})", QuoteIdentifier(names_.ids), table_, column));
  }

  // Request ids and keys of deleted rows; a converted map's keys no row has any more.
  void CreateGoneKeys(bool converted) {
    std::string columns;
    for (const auto& c : keys_.columns()) columns += fmt::format(", {} {} NOT NULL", QuoteIdentifier(c.name), c.type);
    const std::string gone = QuoteIdentifier(names_.gone_keys);
    conn_.Exec(fmt::format("CREATE TABLE {} ({} bigint PRIMARY KEY{})", gone, RequestKeys::kIdColumn, columns));
    conn_.Exec(fmt::format("CREATE INDEX ON {} ({})", gone, keys_.ColumnList("")));
    if (!converted) return;
    conn_.Exec(
        fmt::format("INSERT INTO {gone} SELECT m.* FROM {map} m WHERE NOT EXISTS (SELECT 1 FROM {table} s "
                    "WHERE s.{id} = m.{map_id})",
                    fmt::arg("gone", gone), fmt::arg("map", keys_.map_table()), fmt::arg("table", table_),
                    fmt::arg("id", QuoteIdentifier(names_.ids)), fmt::arg("map_id", RequestKeys::kIdColumn)));
    conn_.Exec(fmt::format("DROP TABLE {}", keys_.map_table()));
  }

  void CreateView() {
    conn_.Exec(fmt::format(
        "CREATE VIEW {map} AS SELECT {id} AS {map_id}, {cols} FROM {table} WHERE {id} IS NOT NULL AND {complete} "
        "UNION ALL SELECT {map_id}, {cols} FROM {gone}",
        fmt::arg("map", keys_.map_table()), fmt::arg("id", QuoteIdentifier(names_.ids)),
        fmt::arg("map_id", RequestKeys::kIdColumn), fmt::arg("cols", keys_.ColumnList("")), fmt::arg("table", table_),
        fmt::arg("complete", keys_.KeyComplete("")), fmt::arg("gone", QuoteIdentifier(names_.gone_keys))));
    conn_.Exec(fmt::format("COMMENT ON VIEW {} IS {}", keys_.map_table(), postgres::QuoteLiteral(keys_.Signature())));
  }

  // Run by whoever deletes (as the insert capture is by whoever inserts).
  void InstallDeleteCapture() {
    const std::string function = QuoteIdentifier(names_.delete_function);
    conn_.Exec(fmt::format(
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $runnel$\n"
        "BEGIN\n"
        "  INSERT INTO {gone} SELECT {id}, {cols} FROM runnel_old_rows WHERE {id} IS NOT NULL AND {complete}\n"
        "    ON CONFLICT DO NOTHING;\n"
        "  RETURN NULL;\n"
        "END $runnel$",
        fmt::arg("fn", function), fmt::arg("gone", QuoteIdentifier(names_.gone_keys)),
        fmt::arg("id", QuoteIdentifier(names_.ids)), fmt::arg("cols", keys_.ColumnList("")),
        fmt::arg("complete", keys_.KeyComplete(""))));
    conn_.Exec(fmt::format("CREATE TRIGGER {} {} FOR EACH STATEMENT EXECUTE FUNCTION {}()", function,
                           fmt::format(fmt::runtime(kDeleteCaptureEvent), table_), function));
  }

  postgres::Connection& conn_;
  const PipelineConfig& config_;
  const SchemaNames& names_;
  const RequestKeys& keys_;
  const std::string table_;
};

// Mapped keys: TRUNCATE fires no DELETE trigger, so this BEFORE TRUNCATE one keeps the
// keys of the rows about to go, as the delete capture does (on every run: installs
// made before it existed get it). It reads the table the trigger fires on, so the same
// function serves the partitions' triggers. Returns what it did, if anything.
std::optional<std::string> EnsureTruncateCapture(postgres::Connection& conn, const PipelineConfig& config,
                                                 const SchemaNames& names, const RequestKeys& keys) {
  const std::string function = QuoteIdentifier(names.truncate_function);
  const std::string id = QuoteIdentifier(names.ids);
  // format()'s template: %s for the table, every % of our (quoted) names doubled.
  auto escaped = [](std::string text) {
    for (size_t at = text.find('%'); at != std::string::npos; at = text.find('%', at + 2)) text.insert(at, 1, '%');
    return text;
  };
  const std::string insert =
      escaped(fmt::format("INSERT INTO {} SELECT {}, {} FROM ", QuoteIdentifier(names.gone_keys), id,
                          keys.ColumnList(""))) +
      "%s" + escaped(fmt::format(" WHERE {} IS NOT NULL AND {} ON CONFLICT DO NOTHING", id, keys.KeyComplete("")));
  conn.Exec(
      fmt::format("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $runnel$\n"
                  "BEGIN\n"
                  "  EXECUTE format({}, TG_RELID::regclass);\n"
                  "  RETURN NULL;\n"
                  "END $runnel$",
                  function, postgres::QuoteLiteral(insert)));
  const std::string table = QuoteIdentifier(config.table);
  if (HasTrigger(conn, names.truncate_function, table)) return std::nullopt;
  conn.Exec(fmt::format("CREATE TRIGGER {} {} FOR EACH STATEMENT EXECUTE FUNCTION {}()", function,
                        fmt::format(fmt::runtime(kTruncateCaptureEvent), table), function));
  return fmt::format("installed trigger {} on {}: a truncated row's request keeps its key", names.truncate_function,
                     config.table);
}

// The request id of the updated row NEW, into `id` (plpgsql statements).
std::string UpdatedRowId(const RequestKeys& keys) {
  // A mapped key's id column is NULL only where a client set it so: no request.
  return fmt::format("  id := {};\n  IF id IS NULL THEN RETURN NULL; END IF;\n", keys.IdOf("NEW"));
}

// Update capture ([capture] on = ["insert", "update"]): a row-level trigger on the
// watched columns. A column list keeps Runnel's own write-back (which sets only output
// columns) from firing it at all, and the WHEN clause skips updates that leave the
// watched values as they were; each changed row is one queue entry. (A statement-level
// trigger with transition tables cannot have a column list, so it would fire on every
// write-back.) The watched columns are recorded in the trigger's comment: a change of
// them recreates it. Returns what it did, if anything.
std::optional<std::string> InstallUpdateCapture(postgres::Connection& conn, const PipelineConfig& config,
                                                const SchemaNames& names, const RequestKeys& keys) {
  const std::string table = QuoteIdentifier(config.table);
  const std::string& trigger = names.update_trigger;
  const std::string& function = names.update_function;
  const auto existing = conn.Exec(
      "SELECT coalesce(obj_description(oid, 'pg_trigger'), '') FROM pg_trigger WHERE tgname = $1 AND tgrelid = "
      "to_regclass($2)",
      Params().Add(trigger).Add(table));
  if (!config.capture_updates) {
    if (existing.rows() == 0) return std::nullopt;
    conn.Exec(fmt::format("DROP TRIGGER {} ON {}", QuoteIdentifier(trigger), table));
    return fmt::format("removed update capture trigger {} (capture.on has no \"update\")", trigger);
  }
  std::string columns, old_values, new_values;
  for (const auto& column : CaptureUpdateColumns(config)) {
    const std::string c = QuoteIdentifier(column);
    columns += (columns.empty() ? "" : ", ") + c;
    old_values += (old_values.empty() ? "OLD." : ", OLD.") + c;
    new_values += (new_values.empty() ? "NEW." : ", NEW.") + c;
  }
  conn.Exec(
      fmt::format("CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $runnel$\n"
                  "DECLARE id bigint;\n"
                  "BEGIN\n"
                  "{id}"
                  "  INSERT INTO {queue} (keys, n) VALUES (int8multirange({range}), 1);\n"
                  "  PERFORM pg_notify({channel}, '');\n"
                  "  RETURN NULL;\n"
                  "END $runnel$",
                  fmt::arg("fn", QuoteIdentifier(function)), fmt::arg("queue", QuoteIdentifier(names.queue)),
                  fmt::arg("id", UpdatedRowId(keys)), fmt::arg("range", KeyRangeSql("id")),
                  fmt::arg("channel", postgres::QuoteLiteral(names.channel))));
  const std::string watched = "runnel update capture of: " + columns;
  if (existing.rows() > 0 && existing.Get<std::string>(0, 0) == watched) return std::nullopt;
  conn.Exec(fmt::format("DROP TRIGGER IF EXISTS {} ON {}", QuoteIdentifier(trigger), table));
  conn.Exec(fmt::format(
      "CREATE TRIGGER {trigger} AFTER UPDATE OF {columns} ON {table} FOR EACH ROW WHEN (({old}) IS DISTINCT FROM "
      "({new}) AND {complete}) EXECUTE FUNCTION {fn}()",
      fmt::arg("trigger", QuoteIdentifier(trigger)), fmt::arg("columns", columns), fmt::arg("table", table),
      fmt::arg("old", old_values), fmt::arg("new", new_values), fmt::arg("complete", keys.KeyComplete("NEW")),
      fmt::arg("fn", QuoteIdentifier(function))));
  conn.Exec(fmt::format("COMMENT ON TRIGGER {} ON {} IS {}", QuoteIdentifier(trigger), table,
                        postgres::QuoteLiteral(watched)));
  return fmt::format("installed update capture trigger {} on {} ({})", trigger, config.table, columns);
}

bool HasColumn(postgres::Connection& conn, const std::string& table, const char* column) {
  return conn.Exec(
                 "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT "
                 "attisdropped",
                 Params().Add(QuoteIdentifier(table)).Add(column))
             .Get<int64_t>(0, 0) > 0;
}

// The result of a record scored without becoming a row ([jetstream] mode "direct"):
// status NULL on every other row (a record that became a row, or a dead letter).
constexpr const char* kDirectResultColumns =
    "ADD COLUMN status text, ADD COLUMN sqlstate text, ADD COLUMN model_version text, ADD COLUMN client text, "
    "ADD COLUMN outputs jsonb";

// A [jetstream] table made by an earlier version: published_at, then the record's place
// in its message (`item`, in the primary key), then the direct results' columns added.
// What it did, if anything. Asked first: ALTER needs the owner.
std::optional<std::string> UpgradeJetStreamTable(postgres::Connection& conn, const SchemaNames& names) {
  const std::string table = QuoteIdentifier(names.jetstream);
  std::vector<std::string> done;
  if (!HasColumn(conn, names.jetstream, "published_at")) {
    conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN published_at timestamptz", table));
    done.push_back("column published_at");
  }
  if (!HasColumn(conn, names.jetstream, "item")) {
    const auto key = conn.Exec("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'",
                               Params().Add(table));
    conn.Exec(fmt::format("ALTER TABLE {} ADD COLUMN item integer NOT NULL DEFAULT 0", table));
    if (key.rows() > 0)
      conn.Exec(fmt::format("ALTER TABLE {} DROP CONSTRAINT {}", table, QuoteIdentifier(key.Get<std::string>(0, 0))));
    conn.Exec(fmt::format("ALTER TABLE {} ADD PRIMARY KEY (stream, seq, item)", table));
    done.push_back("column item (in the primary key)");
  }
  if (!HasColumn(conn, names.jetstream, "status")) {
    conn.Exec(fmt::format("ALTER TABLE {} {}", table, kDirectResultColumns));
    done.push_back("the columns of results scored directly");
  }
  if (done.empty()) return std::nullopt;
  return fmt::format("added {} to {}", fmt::join(done, " and "), names.jetstream);
}

// [jetstream]: one row per record taken in — its message's stream and sequence, its
// place in the message (0 unless the message is a batch), the request it became, its
// result when scored directly, or why it was refused — written in the transaction that
// inserts its row (or stores its result), so a message delivered again is recognised.
std::optional<std::string> EnsureJetStreamTable(postgres::Connection& conn, const PipelineConfig& config,
                                                const SchemaNames& names) {
  if (!config.jetstream) return std::nullopt;
  if (postgres::TableExists(conn, names.jetstream)) return UpgradeJetStreamTable(conn, names);
  // published_at: when the stream stored the message (the request's start, end to end).
  conn.Exec(fmt::format(
      "CREATE TABLE {} (stream text NOT NULL, seq bigint NOT NULL, item integer NOT NULL DEFAULT 0, request_id bigint, "
      "error text, taken_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz, "
      "PRIMARY KEY (stream, seq, item))",
      QuoteIdentifier(names.jetstream)));
  conn.Exec(fmt::format("ALTER TABLE {} {}", QuoteIdentifier(names.jetstream), kDirectResultColumns));
  // The position of the last result event published (one row), for resuming.
  conn.Exec(
      fmt::format("CREATE TABLE IF NOT EXISTS {} (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
                  "txid xid8 NOT NULL, id bigint NOT NULL, ord bigint NOT NULL)",
                  QuoteIdentifier(names.published)));
  return fmt::format("created tables {} and {}", names.jetstream, names.published);
}

// Write-back and the recommendation join look rows up by key: an index on the key
// columns (one led by the first of them will do), unless there is one. Returns what
// it did when it created one.
std::optional<std::string> EnsureKeyIndex(postgres::Connection& conn, const PipelineConfig& config,
                                          const RequestKeys& keys) {
  const std::string table = QuoteIdentifier(config.table);
  auto indexed = conn.Exec(
      "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
      "WHERE i.indrelid = to_regclass($1) AND a.attname = $2",
      Params().Add(table).Add(keys.columns().front().name));
  if (indexed.Get<int64_t>(0, 0) == 0) {
    const std::string index = "runnel_" + config.name + "_key";
    conn.Exec(fmt::format("CREATE INDEX {} ON {} ({})", QuoteIdentifier(index), table, keys.ColumnList("")));
    return fmt::format("created index {} on {} ({}): there was none on the key column", index, config.table,
                       fmt::join(config.key_columns, ", "));
  }
  return std::nullopt;
}

}  // namespace

int32_t SchemaVersion(postgres::Connection& conn, const PipelineConfig& config) {
  if (!postgres::TableExists(conn, "runnel_migrations")) return 0;
  return conn
      .Exec("SELECT coalesce(max(version), 0) FROM runnel_migrations WHERE pipeline = $1", Params().Add(config.name))
      .Get<int32_t>(0, 0);
}

namespace {

// The check of CheckNotNewer on a version already read (Migrate reads it once for both).
void CheckNotNewer(const PipelineConfig& config, int32_t version) {
  if (version <= kSchemaVersion) return;
  throw Error(
      ErrorCode::Config,
      fmt::format("pipeline '{}' was migrated by a newer Runnel (schema version {}; this build knows up to {}): "
                  "upgrade this runnel binary (it neither changes nor serves the pipeline)",
                  config.name, version, kSchemaVersion));
}

}  // namespace

void CheckNotNewer(postgres::Connection& conn, const PipelineConfig& config) {
  CheckNotNewer(config, SchemaVersion(conn, config));
}

namespace {

// One object Unmigrate removes: its kind and name, and how to drop it.
struct InstalledObject {
  std::string what;  // e.g. "table runnel_needs_queue"
  std::string drop;  // the DROP (or DELETE) statement
};

std::vector<InstalledObject> InstalledObjects(postgres::Connection& conn, const PipelineConfig& config) {
  const SchemaNames names = NamesFor(config);
  std::vector<InstalledObject> out;
  auto exists = [&](const char* sql, const std::string& name) {
    return conn.Exec(sql, Params().Add(name)).Get<bool>(0, 0);
  };
  const bool source = postgres::TableExists(conn, config.table);
  // On the source and, for statement-level ones, on its partitions (PartitionTriggers);
  // a row-level trigger's clones on partitions go with it.
  const std::pair<std::string, std::string> triggers[] = {{names.trigger, names.capture_function},
                                                          {names.update_trigger, names.update_function},
                                                          {names.delete_function, names.delete_function},
                                                          {names.truncate_function, names.truncate_function}};
  for (const auto& [trigger, function] : triggers) {
    auto r = conn.Exec(
        "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = $1 AND tgfoid = to_regproc($2) AND "
        "tgparentid = 0 ORDER BY tgrelid IS DISTINCT FROM to_regclass($3), 1",
        Params().Add(trigger).Add(QuoteIdentifier(function)).Add(QuoteIdentifier(config.table)));
    for (int i = 0; i < r.rows(); ++i) {
      const auto table = r.Get<std::string>(i, 0);
      out.push_back({fmt::format("trigger {} on {}", trigger, table),
                     fmt::format("DROP TRIGGER {} ON {}", QuoteIdentifier(trigger), table)});
    }
  }
  for (const auto& function :
       {names.capture_function, names.update_function, names.delete_function, names.truncate_function}) {
    if (exists("SELECT to_regproc($1) IS NOT NULL", QuoteIdentifier(function))) {
      out.push_back({"function " + function, fmt::format("DROP FUNCTION {}()", QuoteIdentifier(function))});
    }
  }
  for (const auto& view : {names.recommendations, names.keys}) {
    if (exists(
            "SELECT to_regclass($1) IS NOT NULL AND (SELECT relkind FROM pg_class WHERE oid = to_regclass($1)) = 'v'",
            QuoteIdentifier(view))) {
      out.push_back({"view " + view, "DROP VIEW " + QuoteIdentifier(view)});
    }
  }
  for (const auto& table : {names.recommendations, names.queue, names.results, names.quota, names.events, names.keys,
                            names.gone_keys, names.jetstream, names.published}) {
    if (exists(
            "SELECT to_regclass($1) IS NOT NULL AND (SELECT relkind FROM pg_class WHERE oid = to_regclass($1)) = 'r'",
            QuoteIdentifier(table))) {
      out.push_back({"table " + table, "DROP TABLE " + QuoteIdentifier(table)});
    }
  }
  // Mapped keys' request id column (its index and sequence go with it).
  if (source && HasColumn(conn, config.table, names.ids.c_str())) {
    out.push_back(
        {fmt::format("column {} of {}", names.ids, config.table),
         fmt::format("ALTER TABLE {} DROP COLUMN {}", QuoteIdentifier(config.table), QuoteIdentifier(names.ids))});
  }
  const std::string index = "runnel_" + config.name + "_key";  // EnsureKeyIndex's
  if (exists("SELECT to_regclass($1) IS NOT NULL", QuoteIdentifier(index))) {
    out.push_back({fmt::format("index {} on {}", index, config.table), "DROP INDEX " + QuoteIdentifier(index)});
  }
  const std::string name = postgres::QuoteLiteral(config.name);
  for (const char* table : {"runnel_migrations", "runnel_pauses", "runnel_jobs"}) {
    if (postgres::TableExists(conn, table) &&
        conn.Exec(fmt::format("SELECT count(*) > 0 FROM {} WHERE pipeline = $1", table), Params().Add(config.name))
            .Get<bool>(0, 0)) {
      out.push_back({fmt::format("the pipeline's rows in {}", table),
                     fmt::format("DELETE FROM {} WHERE pipeline = {}", table, name)});
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> UncapturedPartitions(postgres::Connection& conn, const PipelineConfig& config) {
  const SchemaNames names = NamesFor(config);
  PartitionTriggers partitions(conn, config);
  std::set<std::string> out;
  if (config.capture == CaptureMode::Queue) {
    for (auto& p : partitions.Missing(names.trigger)) out.insert(std::move(p));
  }
  if (conn.Exec("SELECT to_regproc($1) IS NOT NULL", Params().Add(QuoteIdentifier(names.delete_function)))
          .Get<bool>(0, 0)) {
    for (auto& p : partitions.Missing(names.delete_function)) out.insert(std::move(p));
    for (auto& p : partitions.Missing(names.truncate_function)) out.insert(std::move(p));
  }
  return {out.begin(), out.end()};
}

std::vector<std::string> UnmigratePlan(postgres::Connection& conn, const PipelineConfig& config) {
  std::vector<std::string> out;
  for (const auto& object : InstalledObjects(conn, config)) out.push_back(object.what);
  return out;
}

std::vector<std::string> Unmigrate(postgres::Connection& conn, const PipelineConfig& config) {
  postgres::Transaction tx(conn);
  postgres::LockMigrations(conn);
  std::vector<std::string> done;
  for (const auto& object : InstalledObjects(conn, config)) {
    conn.Exec(object.drop);
    done.push_back("removed " + object.what);
  }
  tx.Commit();
  return done;
}

std::vector<std::string> Migrate(postgres::Connection& conn, const PipelineConfig& config, MigrateMode mode) {
  const SchemaNames names = NamesFor(config);
  std::vector<std::string> done;
  postgres::Transaction tx(conn);
  postgres::LockMigrations(conn);
  conn.Exec(
      "CREATE TABLE IF NOT EXISTS runnel_migrations (pipeline text NOT NULL, version int NOT NULL, "
      "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, version))");
  const auto version = SchemaVersion(conn, config);
  CheckNotNewer(config, version);
  const RequestKeys keys = CheckSourceTable(conn, config);
  for (int step = std::max(version, 0); step < kSchemaVersion; ++step) {
    const std::string what = kSteps[step](conn, names);
    conn.Exec("INSERT INTO runnel_migrations (pipeline, version) VALUES ($1, $2)",
              Params().Add(config.name).Add(static_cast<int32_t>(step + 1)));
    done.push_back(fmt::format("{} (schema version {})", what, step + 1));
  }
  // Idempotent on every run: output columns the pipeline gained, the capture trigger.
  EnsureOutputColumns(conn, config, names);
  if (auto created = KeyIds(conn, config, names, keys).Ensure()) done.push_back(*created);
  PartitionTriggers partitions(conn, config);
  auto append = [&done](std::vector<std::string> lines) { done.insert(done.end(), lines.begin(), lines.end()); };
  if (keys.mapped()) {
    append(partitions.Cover(names.delete_function, names.delete_function, kDeleteCaptureEvent));
    if (auto installed = EnsureTruncateCapture(conn, config, names, keys)) done.push_back(*installed);
    append(partitions.Cover(names.truncate_function, names.truncate_function, kTruncateCaptureEvent));
  }
  if (config.capture == CaptureMode::Queue) {
    if (auto installed = InstallCapture(conn, config, names, keys)) done.push_back(*installed);
    append(partitions.Cover(names.trigger, names.capture_function, kInsertCaptureEvent));
    if (auto installed = InstallUpdateCapture(conn, config, names, keys)) done.push_back(*installed);
  }
  if (auto created = EnsureKeyIndex(conn, config, keys)) done.push_back(*created);
  if (auto created = EnsureJetStreamTable(conn, config, names)) done.push_back(*created);
  if (mode == MigrateMode::kDryRun) {
    tx.Rollback();
  } else {
    tx.Commit();
  }
  return done;
}

}  // namespace runnel::pipeline

namespace runnel::pipeline {

std::vector<std::string> MigrateIfAllowed(postgres::Connection& conn, const PipelineConfig& config) {
  try {
    return Migrate(conn, config);
  } catch (const postgres::DatabaseError& e) {
    if (e.sqlstate() != postgres::kInsufficientPrivilege) throw;
    const auto role = conn.Exec("SELECT current_user::text").Get<std::string>(0, 0);
    int32_t version = 0;  // also when the role may not even read runnel_migrations
    try {
      version = SchemaVersion(conn, config);
    } catch (const postgres::DatabaseError&) {
    }
    if (version < kSchemaVersion) {
      throw Error(ErrorCode::Config,
                  fmt::format("pipeline '{}' is at schema version {}, not {}, and role '{}' may not change it ({}): "
                              "run `runnel migrate` and `runnel grants` as the table's owner",
                              config.name, version, kSchemaVersion, role, e.what()));
    }
    return {fmt::format("skipped: role '{}' may not change the schema, which is current (version {})", role, version)};
  }
}

}  // namespace runnel::pipeline
