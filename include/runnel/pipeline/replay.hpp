// Dead letters and replay: failed requests keep their key, reason (error, sqlstate)
// and attempts in runnel_<name>_results; RetryFailed re-queues them, exactly once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

struct RetryFilter {
  std::string where;                    // filter.hpp's language over the source row and result
  std::optional<std::string> sqlstate;  // a SQLSTATE ("23514") or its class ("23")
  std::optional<int64_t> key;           // one request
};

struct RetryOutcome {
  int64_t requeued = 0;
  std::optional<int64_t> job;  // the batch job that tracks them (runnel_jobs), when any
};

// Re-queues the failed requests that `filter` selects, in one transaction: their
// results become 'queued' (so a second retry, even a concurrent one, finds them no
// longer failed) and their keys enter the queue as a batch job, which workers serve
// like rescoring (not counted against quota again; attempts add up). Throws
// Error(InvalidInput) for a bad filter or SQLSTATE, DatabaseError otherwise.
RetryOutcome RetryFailed(postgres::Connection& conn, const PipelineConfig& config, const RetryFilter& filter);

// The most frequent failure reasons (SQLSTATE and message with the request's key and
// numbers elided), most frequent first.
struct FailureReason {
  std::string sqlstate;
  std::string reason;
  int64_t count = 0;
};
// Over the `of_latest` latest failed requests (by key), or all of them when 0.
std::vector<FailureReason> TopFailureReasons(postgres::Connection& conn, const PipelineConfig& config, int limit,
                                             int64_t of_latest = 0);

// Serving processes paused now (seen within the last minute), from runnel_pauses.
struct PausedProcess {
  std::string process;
  std::string reason;
  double seconds = 0;  // paused for
};
std::vector<PausedProcess> PausedProcesses(postgres::Connection& conn, const PipelineConfig& config);

}  // namespace runnel::pipeline
