// The model registry: model versions stored in PostgreSQL, shared by every process.
//
//   runnel_models       (name, version) -> bytes, format, description, data_type,
//                       created_at, status, error. A version is added by Push, by the
//                       HTTP API or by a plain INSERT (a trigger numbers it); every
//                       change sends pg_notify('runnel_models'), the model stream.
//   runnel_model_state  per process and loaded version: loaded since, invocations,
//                       rows, total/min/max inference time, heartbeat.
//
// Status of a version: `pending` (added, not yet validated), `ready` (a process loaded
// it and it fits the pipeline), `rejected` (it did not: `error` says why),
// `rolled_back`. The current version of a (name, data_type) is its newest `ready` one.
//
// Errors: DatabaseError from PostgreSQL; Error(NotFound) for unknown names/versions;
// Error(InvalidInput) for bad arguments. Thread safety: functions use the caller's
// connection, which belongs to one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/postgres/connection.hpp"

namespace runnel::registry {

// Creates or updates the registry tables; idempotent, safe from several processes. A
// role that may not (a least-privilege serving role) uses them as they are, when they
// exist.
void MigrateRegistry(postgres::Connection& conn);

// A version's state: pushed and not yet judged; validated and served; refused by a
// serving process (its error says why); withdrawn by a rollback.
enum class ModelStatus { kPending, kReady, kRejected, kRolledBack };
// The name runnel_models.status stores and the API and CLI show ("ready").
std::string_view ModelStatusName(ModelStatus status);
// Throws Error(Database) for a name the table's CHECK does not allow.
ModelStatus ParseModelStatus(std::string_view name);

struct ModelVersion {
  std::string name;
  int64_t version = 0;
  std::string format;  // set when validated
  std::string description;
  std::optional<std::string> data_type;
  double created_at = 0;  // seconds since the epoch
  ModelStatus status = ModelStatus::kPending;
  std::optional<std::string> error;
  int64_t size = 0;  // bytes
};

struct PushRequest {
  std::string name;        // 1..100 characters
  std::string_view bytes;  // the model file; the caller keeps it alive during Push
  std::string description;
  std::optional<std::string> data_type;
};

// Adds a `pending` version numbered after the newest one of that name; the model
// stream validates and loads it. Throws Error(InvalidInput) for an empty name or file.
ModelVersion Push(postgres::Connection& conn, const PushRequest& request);

// Waits up to `wait` for the serving processes' verdict on a pushed version (its
// status leaving `pending`), polling every 20 ms; returns the version as it stands
// then. Stops early when `stop` becomes true. Throws DatabaseError.
ModelVersion AwaitVerdict(postgres::Connection& conn, ModelVersion pushed, std::chrono::milliseconds wait,
                          const std::atomic<bool>* stop = nullptr);

// Push, but only when `name` has no version at all (used to seed the registry from a
// pipeline's model file). Returns the version added, if any. Safe against a race.
std::optional<ModelVersion> PushIfEmpty(postgres::Connection& conn, const PushRequest& request);

// Versions of `name`, newest first (empty when unknown). Bytes are not read.
std::vector<ModelVersion> Versions(postgres::Connection& conn, std::string_view name);
// Every model name with at least one version.
std::vector<std::string> Names(postgres::Connection& conn);
// The bytes of one version. Throws Error(NotFound).
std::string FetchBytes(postgres::Connection& conn, std::string_view name, int64_t version);

// Marks the result of validating a `pending` version; a no-op when another process
// already did. Returns the status the version has afterwards.
ModelStatus SetValidated(postgres::Connection& conn, std::string_view name, int64_t version, bool ok,
                         std::string_view format, std::string_view error);

// Retires the current version of (name, data_type) so the previous ready one serves.
// Returns the version now current. Throws Error(NotFound) when the name has no ready
// version, Error(Unavailable) when there is no earlier ready version to return to.
ModelVersion Rollback(postgres::Connection& conn, std::string_view name, const std::optional<std::string>& data_type);

// The model state of one (process, version), as the stream reports it.
struct LoadedState {
  std::string process;  // host:pid
  std::string pipeline;
  std::string name;
  int64_t version = 0;
  std::optional<std::string> data_type;
  double loaded_at = 0;  // seconds since the epoch
  int64_t invocations = 0;
  int64_t rows = 0;
  double total_ms = 0;
  double min_ms = 0;
  double max_ms = 0;
};

// Replaces this process's rows for `pipeline` with `loaded` (heartbeat now).
void ReportState(postgres::Connection& conn, const std::string& process, const std::string& pipeline,
                 const std::vector<LoadedState>& loaded);
// Rows of `name` from processes that reported within `fresh_seconds`.
std::vector<LoadedState> ReadState(postgres::Connection& conn, std::string_view name, double fresh_seconds);
// Rows of the processes serving `pipeline` that reported within `fresh_seconds` (none
// when the registry was never set up).
std::vector<LoadedState> ReadPipelineState(postgres::Connection& conn, std::string_view pipeline, double fresh_seconds);

// "host:pid" of this process.
std::string ProcessId();

}  // namespace runnel::registry
