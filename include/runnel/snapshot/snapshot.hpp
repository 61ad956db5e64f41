// Analytics snapshots: versioned, read-only DuckDB copies of a pipeline's results,
// inputs, model versions and samples, taken from one PostgreSQL snapshot, and Parquet
// archives made from them. Analysts query a snapshot instead of the serving database.
//
// Layout: <[snapshots] dir>/<pipeline>/v<N>.duckdb, N = 1, 2, ... Each version is
// written aside (a dot-file), checkpointed, then renamed into place without replacing
// anything, so a reader sees a whole version or none. Readers hold a shared flock(2)
// on the file; Prune removes an old version only when it can take the lock
// exclusively and no other process holds a DuckDB (fcntl) lock on it.
//
// Thread safety: a SnapshotStore may be used from several threads and processes at
// once (creation is serialized by a lock file). A Reader belongs to one thread.
// Errors: Error(Io) for the file system, Error(NotFound) for a missing version,
// Error(InvalidInput) for a refused query (naming why), Error(Unavailable) for a query
// cut off by its time or memory limit, DatabaseError from PostgreSQL.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"

namespace runnel::postgres {
class Connection;
}

namespace runnel::snapshot {

struct SnapshotInfo {
  int64_t version = 0;
  std::filesystem::path path;
  int64_t bytes = 0;
  std::chrono::system_clock::time_point created;  // the file's modification time
};

struct CreateOutcome {
  SnapshotInfo info;
  std::map<std::string, int64_t> rows;  // per table copied
  std::string pg_snapshot;              // pg_current_snapshot() the copy was read in
  std::chrono::milliseconds took{0};
};

// Holds one version open for reading: Prune leaves it alone while the Reader lives.
class Reader {
 public:
  Reader(Reader&& other) noexcept;
  Reader& operator=(Reader&&) = delete;
  Reader(const Reader&) = delete;
  ~Reader();
  const SnapshotInfo& info() const { return info_; }

 private:
  friend class SnapshotStore;
  Reader(int fd, SnapshotInfo info) : fd_(fd), info_(std::move(info)) {}
  int fd_;
  SnapshotInfo info_;
};

class SnapshotStore {
 public:
  // The versions of `pipeline` under `root` (root/pipeline; made when missing by Create).
  SnapshotStore(std::filesystem::path root, std::string pipeline);

  const std::filesystem::path& dir() const { return dir_; }
  // Published versions, oldest first.
  std::vector<SnapshotInfo> List() const;
  // Copies the pipeline's tables in one REPEATABLE READ transaction of `conn` into a
  // new version and publishes it. `conn` must not be in a transaction.
  CreateOutcome Create(postgres::Connection& conn, const pipeline::PipelineConfig& config) const;
  // Removes versions older than the newest `keep` that no reader holds; returns the
  // versions removed.
  std::vector<int64_t> Prune(int keep) const;
  // The version asked for, or the newest. Throws Error(NotFound) when there is none.
  Reader Open(std::optional<int64_t> version = std::nullopt) const;

 private:
  std::filesystem::path dir_;
  std::string pipeline_;
};

// "v12.duckdb" -> 12; nullopt for any other name (temporaries, locks, foreign files).
std::optional<int64_t> VersionOfFileName(std::string_view name);

// ---- read-only queries ----

struct QueryLimits {
  std::chrono::milliseconds timeout{10000};
  int64_t memory_mb = 256;
  int64_t max_rows = 10000;
  int64_t max_bytes = 64 << 20;  // of the answer's values: past it the answer is cut off
};

enum class ValueKind { Boolean, Integer, Real, Text };

struct QueryAnswer {
  std::vector<std::string> columns;
  std::vector<ValueKind> kinds;
  std::vector<std::vector<std::optional<std::string>>> rows;  // values as DuckDB prints them; nullopt: NULL
  bool truncated = false;                                     // cut off at max_rows or max_bytes
  std::chrono::milliseconds took{0};
};

// Runs one SELECT over the snapshot `reader` holds, sandboxed: the file opened
// read-only, no file system or network access, no extensions, configuration locked,
// a memory limit, a time limit (interrupted), and row and byte limits on the answer.
QueryAnswer Query(const Reader& reader, std::string_view sql, const QueryLimits& limits);

// {"columns": [...], "rows": [[...], ...], "truncated": b, "took_ms": n}: numbers as
// JSON numbers (NaN and infinities as null), booleans, everything else as text.
std::string AnswerJson(const QueryAnswer& answer);
// RFC 4180 CSV with a header line; NULL is an empty field, an empty text is "".
std::string AnswerCsv(const QueryAnswer& answer);

// ---- ready-made analyses ----

struct Analysis {
  std::string name;  // clients_per_hour, outputs_by_version, drift, latency_by_version, stage_ms
  QueryAnswer answer;
};

// What the dashboard shows from a snapshot: per hour and client (when the pipeline has
// a client column) the requests, throttled and failed; per model version each numeric
// output's count, mean and 5/50/95th percentiles, its histogram (20 bins over the
// version's range: model_version, output, bin, lower, first_hour, last_hour) in the
// version's first hour and in its last hour, and the latency's 50/95/99th; per
// serving stage the 50/95/99th percentiles of its milliseconds per batch (from the
// samples). Each runs as a sandboxed Query; a table the snapshot lacks skips its
// analysis.
std::vector<Analysis> Analyses(const Reader& reader, const pipeline::PipelineConfig& config, const QueryLimits& limits);

// ---- Parquet archives ----

enum class ArchiveBy { ModelVersion, Day };

struct ArchiveOutcome {
  std::filesystem::path dir;  // hive-style: dir/model_version=<v>/*.parquet or dir/day=<d>/
  int64_t rows = 0;
  std::vector<std::filesystem::path> files;
};

// Writes the snapshot's requests (results joined with their inputs) as Parquet files
// partitioned by `by` into `out` (made; must be absent or empty).
ArchiveOutcome Archive(const Reader& reader, const std::filesystem::path& out, ArchiveBy by);

}  // namespace runnel::snapshot
