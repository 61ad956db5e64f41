// What each serving process did, second by second, kept in PostgreSQL for the last
// 15 minutes (table runnel_samples): served, throttled and failed requests, the
// latency histogram and the time per stage. Any process's dashboard reads them, so it
// shows the whole deployment, not the process that answers.
//
// Thread safety: the functions are pure or take a connection of the caller's; a
// Sampler runs its own thread.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "runnel/core/mutex.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/server/metrics.hpp"

namespace runnel::server {

// How long samples are kept, and so the longest window a dashboard shows.
inline constexpr std::chrono::seconds kSampleHorizon{15 * 60};

// What one pipeline served in one second (of one process, or summed over several).
struct Sample {
  int64_t at = 0;  // the second, since the epoch
  int64_t done = 0, throttled = 0, failed = 0, batches = 0;
  std::vector<int64_t> latency;                               // per bucket of LatencyBounds(), +Inf last
  std::array<double, pipeline::kStageCount> stage_seconds{};  // summed over the second's batches

  // Adds `other` (the same second's sample of another process).
  void Add(const Sample& other);
};

// What happened between two snapshots of a pipeline's counters, as the sample of second
// `at`. Counters never go down; a snapshot from before a restart is not passed here.
Sample Difference(const MetricsSnapshot& now, const MetricsSnapshot& before, int64_t at);

// Samples of several processes summed per second, in time order.
std::vector<Sample> MergeByTime(std::vector<Sample> samples);

// The q-quantile (0..1) of a histogram of `counts` over `bounds` (counts has one more,
// +Inf), interpolated linearly within its bucket as Prometheus's histogram_quantile
// does (the +Inf bucket answers its lower bound); nullopt when the histogram is empty.
std::optional<double> Quantile(const std::vector<double>& bounds, const std::vector<int64_t>& counts, double q);

// Creates runnel_samples when missing. Returns whether it exists: false for a role that
// may not create it when its owner has not (`runnel migrate` or `runnel grants` as the
// owner do). Throws DatabaseError for anything else.
bool MigrateSamples(postgres::Connection& conn);
// Stores one process's sample (added to what it stored for that second already).
void WriteSample(postgres::Connection& conn, std::string_view pipeline, std::string_view process, const Sample& s);
// Deletes samples older than kSampleHorizon.
void PruneSamples(postgres::Connection& conn);
// Every process's samples of `pipeline` over the last `window` (at most kSampleHorizon),
// summed per second, in time order; none while runnel_samples does not exist.
std::vector<Sample> ReadSamples(postgres::Connection& conn, std::string_view pipeline, std::chrono::seconds window);

// Writes each pipeline's sample once a second (nothing for a second without batches)
// and prunes old ones once a minute, on a thread of its own, until destroyed. Errors
// (the database away) are logged at debug level and the next second tries again; what
// was counted meanwhile goes into the next sample written.
class Sampler {
 public:
  // `metrics`: the pipelines' counters, which outlive the sampler.
  Sampler(std::string conninfo, std::vector<const PipelineMetrics*> metrics, std::string process);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

 private:
  void Run();
  void SampleOnce(postgres::Connection& conn, int64_t at);

  std::string conninfo_;
  std::vector<const PipelineMetrics*> metrics_;
  std::string process_;
  std::vector<MetricsSnapshot> written_;  // per pipeline: what the samples stored so far cover
  Mutex mutex_;
  std::condition_variable_any wake_;
  bool stop_ GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

}  // namespace runnel::server
