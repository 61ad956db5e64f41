// The real-time pipeline: workers that serve captured requests exactly once.
//
// One batch is one transaction on the worker's own connection, in stages (as timed in
// BatchResult::stage_ms):
//   1. claim: DELETE queue rows holding up to max_batch keys (FOR UPDATE SKIP LOCKED)
//      and read their source rows in the same statement, values as stored (a cast
//      there would let one row's value fail the claim); expand the key ranges;
//   2. quota: read the per-client counters; requests past the threshold become
//      `throttled` (the counters are advanced at step 5);
//   3. features and model over the whole batch; invalid rows become `failed`, and so
//      do outputs that their write-back column cannot hold (checked here, as
//      PostgreSQL would refuse them);
//   4. write-back, results and recommendations in one statement. If PostgreSQL
//      refuses it for a reason about rows (sqlstate.hpp: a CHECK constraint, a user
//      trigger raising, a value out of range), the batch is rolled back and served
//      again carefully: in chunks under savepoints, each row marked as it is written
//      in a temporary sequence; in a failing chunk the marked row is tried alone and
//      the rest again, or the chunk is bisected when that blame does not hold
//      (IsolateFailures). The requests that fail on their own are recorded failed
//      with SQLSTATE and message; every other request of the batch is served. While
//      recent batches had such requests, batches are written that way from the start
//      (IsolationChunk sizes the chunks from the failure rate). When a source row
//      stays locked past lock_timeout, the rows another transaction holds are found
//      (SKIP LOCKED) and their requests go back to the queue (`attempts` + 1; failed
//      after max_attempts);
//   5. advance the counters in one upsert, in client order (two workers lock counters
//      in the same order and cannot deadlock), check that no other worker moved them
//      in a way that changes a request's throttling (else roll back and serve the
//      batch again with the counters advanced first), COMMIT. A crash anywhere before
//      it leaves the claim unmade: another worker serves the request. No coordinator
//      but PostgreSQL.
// Errors that are not about rows (a dropped column or table, revoked rights, changed
// types) pause serving: RunPipeline retries with backoff, re-preparing its statements,
// and resumes by itself once the cause is fixed; nothing claimed is lost.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runnel/model/model.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/scorer.hpp"

namespace runnel::pipeline {

// The stages of one batch, as timed in BatchResult::stage_ms.
inline constexpr size_t kStageCount = 6;
inline constexpr const char* kStageNames[kStageCount] = {"claim",      "quota", "features+model", "write-back+results",
                                                         "quota+jobs", "commit"};

struct BatchResult {
  size_t claimed = 0;
  size_t done = 0;
  size_t throttled = 0;
  size_t failed = 0;
  size_t gone = 0;      // their rows were deleted before they were served
  size_t deferred = 0;  // back to the queue: their source rows stayed locked
  // Per failed request: its SQLSTATE (Runnel's own failures use PostgreSQL's codes:
  // 22004 NULL client, 22000 features or model, 22003 out of range).
  std::vector<std::string> failed_sqlstates;
  // Served a second time after a rollback: the quota counters moved under it, or a
  // request's key had a result already.
  bool redone = false;
  // Runnel evaluated [recommend].where itself (recommend_rule.hpp), not PostgreSQL.
  bool recommended_by_runnel = false;
  std::vector<double> latencies_ms;  // enqueue to commit, per served request
  std::vector<int64_t> keys;         // every request the batch committed, in key order
  // Milliseconds per stage (kStageNames).
  double stage_ms[kStageCount] = {};
};

// Counts request i's verdict into `result`: done, throttled, failed (with its SQLSTATE,
// kInvalidDataState when it has none), gone; queued and superseded count nothing.
// Precondition: the verdict is decided.
void CountVerdict(const Verdicts& verdicts, size_t i, BatchResult& result);

// One worker: one connection, one model session. Not thread-safe: one per thread.
class Worker {
 public:
  // Connects and LISTENs. Throws DatabaseError when the database is unreachable.
  // `models` is shared with the model stream; the worker takes its current set before
  // each batch, and claims nothing while the set is empty. Throws Error(InvalidInput)
  // when a model does not fit the pipeline. `index` names it: its thread and its
  // database session (application_name) are named "wN:<pipeline>".
  Worker(const PipelineConfig& config, std::shared_ptr<ModelProvider> models, std::string conninfo, size_t index = 0);
  ~Worker();

  // Serves up to max_batch waiting requests in one transaction; claimed == 0 when
  // there was nothing to do. Throws DatabaseError (the transaction is rolled back).
  BatchResult ServeBatch();
  // Waits for a capture notification (or a notify-mode request) up to `timeout`.
  bool WaitForWork(std::chrono::milliseconds timeout);
  // Drops the connection and connects again (after a lost connection or DDL: the
  // statements are prepared anew). Throws DatabaseError, or Error(InvalidInput) when
  // the tables no longer fit the pipeline (a column dropped or of another type).
  void Reconnect();
  // Records (reason) or clears (nullopt) this process's pause in runnel_pauses, for
  // `runnel status`. Best effort: a failure is logged at debug and ignored.
  void ReportPause(const std::optional<std::string>& reason);

 private:
  enum class Retry { kNone, kQuotaMoved, kKeyServedBefore, kRowsRefused };
  // One attempt; nullopt (rolled back, nothing done, *why says why) when optimistic
  // quota accounting met a conflicting batch, a plain results insert met a key that
  // has a result already, or a write without savepoints (not `careful`) was refused
  // for a row's sake.
  std::optional<BatchResult> ServeOnce(bool optimistic, bool upsert, bool careful, Retry* why);

  struct State;
  std::unique_ptr<State> state_;
};

struct RunOptions {
  size_t workers = 1;
  bool until_idle = false;                   // return once the queue stays empty (or a pause lasts: RunSummary::paused)
  // until_idle: whether what feeds the queue besides inserts (a JetStream consumer) has
  // nothing more for it now (drained, or failing); workers return only after seeing
  // the queue empty twice with this true before each look. Unset: nothing else feeds
  // it. Must be thread-safe.
  std::function<bool()> sources_settled;
  std::chrono::milliseconds idle_wait{250};  // how long an idle worker waits for a wake-up
  const std::atomic<bool>* stop = nullptr;   // set to drain and return
  std::function<void(const std::string&)> log;  // progress messages (errors go to spdlog at warn)
  // Called from worker `worker`'s thread when it pauses on an error that is not about
  // rows (with the reason) and when it resumes (nullopt). Must be thread-safe.
  std::function<void(size_t worker, const std::optional<std::string>& reason)> on_pause;
  // Called after each committed batch, from that worker's thread (must be thread-safe).
  std::function<void(const BatchResult&)> on_batch;
  // Called once every worker has connected, before serving starts.
  std::function<void()> on_started;
};

struct RunSummary {
  size_t done = 0;
  size_t throttled = 0;
  size_t failed = 0;
  size_t gone = 0;
  size_t deferred = 0;
  size_t batches = 0;
  size_t redone = 0;                 // batches served a second time (BatchResult::redone)
  size_t recommended_by_runnel = 0;  // batches whose rule Runnel evaluated
  // until_idle: why workers were still paused when the run returned (then requests
  // may be left queued).
  std::vector<std::string> paused;
  std::vector<double> latencies_ms;
  size_t scored_directly = 0;         // records a JetStream ingest scored without rows (mode "direct")
  double seconds = 0;                 // the whole run, idle time included
  double busy_seconds = 0;            // from the first batch's start to the last batch's commit
  double stage_ms[kStageCount] = {};  // summed over batches and workers

  // The p-quantile (0..1) of latencies_ms; 0 when nothing was served.
  double LatencyPercentile(double p) const;
};

// Runs `workers` threads until `stop` is set (or the queue is drained with
// until_idle). Lost connections are retried with backoff; errors that are not about
// rows pause the worker until they are fixed (on_pause): nothing is lost or served
// twice. Throws Error when a worker cannot start at all; after that only for
// programmer errors (never for data or the database's state).
RunSummary RunPipeline(const PipelineConfig& config, const std::shared_ptr<ModelProvider>& models,
                       const std::string& conninfo, const RunOptions& options);

}  // namespace runnel::pipeline
