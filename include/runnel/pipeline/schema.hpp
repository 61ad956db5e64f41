// Runnel's objects in the user's database for one pipeline (all named runnel_<name>_*):
//   runnel_<name>_queue            captured requests: seq, keys (an int8multirange: the
//                                  keys of one chunk of one INSERT statement or of one
//                                  job batch), n (how many), enqueued_at, job (the batch
//                                  job that enqueued it, NULL for inserts), attempts
//                                  (deferrals of a locked row so far)
//   runnel_<name>_results          one row per served request: status (done, throttled,
//                                  failed; queued when `runnel retry` re-queued it),
//                                  error, sqlstate, attempts, model_version, the output
//                                  columns, recommended (product keys), enqueued_at,
//                                  finished_at
//   runnel_<name>_quota            per-client request counters: client, requests,
//                                  window_start (pipeline/quota.hpp)
//   runnel_<name>_recommendations  view: (request_key, product_key, model_version), one
//                                  row per element of results.recommended
//   runnel_<name>_keys             mapped keys only (request_keys.hpp): a view of each
//                                  request id (runnel_id) and its key columns: the
//                                  source rows' (their column runnel_<name>_id, of
//                                  sequence runnel_<name>_id_seq) and deleted rows'
//                                  (runnel_<name>_gone_keys, written by the trigger
//                                  runnel_<name>_capture_delete); "keys" above are
//                                  request ids
//   runnel_<name>_capture()        statement-level AFTER INSERT trigger function: writes
//                                  the new keys from the transition table into the queue,
//                                  QueueChunk keys per row, and sends one
//                                  pg_notify('runnel_<name>') per statement
// plus runnel_migrations (pipeline, version, applied_at), runnel_pauses (pipeline,
// process, reason, since, seen_at: serving processes paused by a setup error) and runnel_jobs (batch jobs of
// every pipeline: filter, batch size, state, total/enqueued/served counts, cursor).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/request_status.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

struct SchemaNames {
  std::string queue;
  std::string results;
  std::string quota;
  std::string recommendations;
  std::string capture_function;
  std::string trigger;
  std::string update_function;  // update capture ([capture] on has "update")
  std::string update_trigger;
  std::string channel;         // NOTIFY channel of queue mode
  std::string events;          // one row per committed batch: the keys it served (schema v5)
  std::string served_channel;  // NOTIFY channel carrying the served keys, for SQL clients
  std::string keys;            // view: request ids of mapped keys and their keys (request_keys.hpp)
  std::string jetstream;       // JetStream messages taken in ([jetstream]: server/jetstream_ingest.hpp)
  std::string published;       // how far results were published to JetStream (server/jetstream_results.hpp)
  std::string ids;             // mapped keys: the source table's request id column (schema v10)
  std::string ids_sequence;    // ... and its sequence
  std::string gone_keys;       // mapped keys: request ids and keys of deleted rows
  std::string delete_function;  // ... written by this statement-level AFTER DELETE trigger
  std::string truncate_function;  // ... and by this BEFORE TRUNCATE one (no DELETE trigger fires)
};

SchemaNames NamesFor(const PipelineConfig& config);
SchemaNames NamesFor(std::string_view pipeline_name);

inline constexpr int kSchemaVersion = 10;

// How many keys one queue row holds at most: a quarter of a batch, so that a claim
// fills its batch from several rows.
int64_t QueueChunk(const PipelineConfig& config);

// An `INSERT` of the keys that `keys_sql` selects (a query with one bigint column;
// NULLs skipped) into the pipeline's queue, as rows of at most QueueChunk keys in key
// order, each tagged with `job_sql` (an SQL expression: "NULL", or a parameter). The
// capture trigger and batch jobs enqueue through it.
std::string QueueInsertSql(const PipelineConfig& config, const std::string& keys_sql, const std::string& job_sql);
// SQL for the int8range holding exactly the bigint `key` (an SQL expression): [k, k + 1),
// or [k, unbounded) for the largest bigint, whose k + 1 would overflow.
std::string KeyRangeSql(const std::string& key);

// What waits in the pipeline's queue: requests, and the age of the oldest queue row.
struct QueueState {
  int64_t requests = 0;
  double oldest_seconds = 0;
};
// Throws DatabaseError.
QueueState ReadQueueState(postgres::Connection& conn, const PipelineConfig& config);
// The results table's rows by status (statuses it does not know count as failed).
// Throws DatabaseError.
std::map<RequestStatus, int64_t> CountResults(postgres::Connection& conn, const SchemaNames& names);

// A pipeline installed in the database, as `runnel status` lists it.
struct InstalledPipeline {
  std::string name;
  int32_t schema_version = 0;
  QueueState queue;
  std::map<RequestStatus, int64_t> results;
};
// Every pipeline in runnel_migrations, by name (none when nothing was migrated).
// Throws DatabaseError.
std::vector<InstalledPipeline> ListPipelines(postgres::Connection& conn);

// Requests waiting that no worker is serving now (queue rows nobody has locked).
// Throws DatabaseError.
int64_t UnclaimedRequests(postgres::Connection& conn, const PipelineConfig& config);

// The source table's columns and their SQL types ("integer", "text", ...); empty when
// the table does not exist. Throws DatabaseError.
std::map<std::string, std::string> SourceColumns(postgres::Connection& conn, const PipelineConfig& config);

// Throws Error(InvalidInput) naming the first input column ([source] columns) that is
// missing from `types` (SourceColumns) or is not of a numeric type.
void CheckInputTypes(const PipelineConfig& config, const std::map<std::string, std::string>& types);

// The pipeline's schema version (kSchemaVersion when migrated), 0 when it never was.
// Throws DatabaseError (also when the role may not read runnel_migrations).
int32_t SchemaVersion(postgres::Connection& conn, const PipelineConfig& config);

// Throws Error(Config) when the pipeline was migrated by a newer Runnel (a schema
// version above kSchemaVersion): this build's capture and claim may not match what
// that one queues, so it neither changes nor serves the pipeline.
void CheckNotNewer(postgres::Connection& conn, const PipelineConfig& config);

// Creates or updates the pipeline's objects; idempotent, safe to run from several
// processes at once (serialised by an advisory lock), all in one transaction. Returns
// one line per change made (e.g. "created index runnel_needs_key on needs (id)").
// Throws Error(InvalidInput) naming a missing table or column, Error(Config) for a
// schema a newer Runnel migrated (CheckNotNewer), DatabaseError otherwise.
// With MigrateMode::kDryRun everything runs as usual in the transaction, which is then
// rolled back: nothing changes (ObserveStatements shows what would run).
enum class MigrateMode { kApply, kDryRun };
std::vector<std::string> Migrate(postgres::Connection& conn, const PipelineConfig& config,
                                 MigrateMode mode = MigrateMode::kApply);

// Partitions of the source table (at any level) missing one of the capture's
// statement-level triggers, which Migrate puts on each: attached since it last ran.
// Rows inserted or deleted straight into such a partition are not captured until
// Migrate runs again (statements through the parent table are). Empty for a table
// without partitions. Throws DatabaseError.
std::vector<std::string> UncapturedPartitions(postgres::Connection& conn, const PipelineConfig& config);

// What Unmigrate removes (existing objects only), one line each, without changing anything.
std::vector<std::string> UnmigratePlan(postgres::Connection& conn, const PipelineConfig& config);

// Removes what Migrate installed for the pipeline, in one transaction: the capture
// triggers and functions, the queue, results, quota, events and gone keys tables, the
// recommendations and keys views, the key index Runnel created, the request id column
// of mapped keys (with its index and sequence), and the pipeline's rows in
// runnel_migrations, runnel_pauses and runnel_jobs. The source table, its rows and
// their written-back columns stay as they are; requests still queued are dropped.
// Works when the source table is gone. Returns one line per object removed. Throws
// DatabaseError (serving processes of the pipeline should be stopped first: their
// statements would fail).
std::vector<std::string> Unmigrate(postgres::Connection& conn, const PipelineConfig& config);

// Migrate for a serving process, whose role may lack the right to change the schema
// (least privilege, grants.hpp): when PostgreSQL refuses for want of privilege, the
// schema only has to be current already. Returns Migrate's lines, or one saying it
// was skipped. Throws Error(Config) when it is not current, naming what to run.
std::vector<std::string> MigrateIfAllowed(postgres::Connection& conn, const PipelineConfig& config);

}  // namespace runnel::pipeline
