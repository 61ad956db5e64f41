// In-process metrics in the Prometheus text exposition format (version 0.0.4).
// Counters and histograms are updated lock-free from worker and HTTP threads; gauges
// that live in the database (queue depth) are read when /metrics is scraped.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runnel/core/mutex.hpp"
#include "runnel/pipeline/worker.hpp"

namespace runnel::server {

// A histogram over fixed upper bounds (seconds or counts), cumulative on output.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends `name_bucket{labels,le=...}`, `name_sum`, `name_count` lines.
  void Write(std::string& out, const std::string& name, const std::string& labels) const;
  // The count per bucket (not cumulative), +Inf last; the sum of the values observed.
  std::vector<int64_t> Counts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<int64_t>> counts_;  // one per bound, plus +Inf
  std::atomic<int64_t> count_{0};
  std::atomic<double> sum_{0};
};

// Values read when /metrics is scraped (queue depth, model counters, the process):
// one family, written with its HELP and TYPE lines, then one line per sample.
struct MetricFamily {
  std::string name;
  std::string help;
  std::string type = "gauge";                           // or "counter"
  std::vector<std::pair<std::string, double>> samples;  // labels (`a="x",b="y"`, may be empty), value
};

// The standard process metrics (process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds) of this process, from getrusage and /proc.
std::vector<MetricFamily> ProcessMetrics();

// The upper bounds of the request latency histogram, in seconds.
const std::vector<double>& LatencyBounds();

// A pipeline's counters at one moment (PipelineMetrics::Snapshot), for per-second
// samples (samples.hpp).
struct MetricsSnapshot {
  int64_t done = 0, throttled = 0, failed = 0, batches = 0;
  std::vector<int64_t> latency;  // per bucket of LatencyBounds(), +Inf last
  std::array<double, pipeline::kStageCount> stage_seconds{};
};

// One pipeline's serving counters (labelled pipeline="<name>").
class PipelineMetrics {
 public:
  // Batch-size buckets are powers of two up to `max_batch`, which is the last bound.
  explicit PipelineMetrics(std::string pipeline, size_t max_batch = 1024);

  // One committed batch of the real-time pipeline.
  void RecordBatch(const pipeline::BatchResult& batch);
  // Records scored by a JetStream ingest without rows (mode "direct"): counted as
  // requests by status, failures and latency, as a batch's are; not in the batch and
  // stage histograms (no worker served them).
  void RecordScoredDirectly(const pipeline::BatchResult& scored);
  // Records posted through the API.
  void RecordIngested(size_t records);
  // One round of the JetStream ingest: records inserted, records scored without a row
  // (mode "direct"), messages found taken in before, refused (dead letters).
  void RecordJetStreamRound(uint64_t inserted, uint64_t scored, uint64_t duplicates, uint64_t dead);
  // The JetStream consumer as last read: messages not yet delivered, delivered and not
  // acknowledged, delivered more than once and not acknowledged.
  void SetJetStreamConsumer(uint64_t pending, int64_t ack_pending, int64_t redelivered);

  const std::string& pipeline() const { return pipeline_; }
  MetricsSnapshot Snapshot() const;

 private:
  friend class Metrics;  // renders the counters
  void RecordRequests(const pipeline::BatchResult& requests);

  std::string pipeline_;
  std::atomic<int64_t> done_{0}, throttled_{0}, failed_{0}, gone_{0}, batches_{0}, ingested_{0}, deferred_{0};
  struct JetStreamCounters {
    std::atomic<bool> active{false};  // rendered only once the pipeline has a JetStream ingest
    std::atomic<int64_t> inserted{0}, scored{0}, duplicates{0}, dead{0};
    std::atomic<int64_t> pending{-1}, ack_pending{-1}, redelivered{-1};  // -1: not read yet
  } jetstream_;
  Histogram latency_;                                       // insert to result commit, seconds
  Histogram batch_size_;                                    // requests per batch
  std::array<Histogram*, pipeline::kStageCount> stages_{};  // per stage, seconds (owned below)
  std::vector<std::unique_ptr<Histogram>> stage_storage_;
  mutable Mutex failure_mutex_;
  std::map<std::string, int64_t> failures_by_class_ GUARDED_BY(failure_mutex_);  // SQLSTATE class -> failed requests
};

// The process's metrics: every pipeline it serves and its HTTP responses. Each family
// is written once, with one sample per pipeline.
class Metrics {
 public:
  // Adds a pipeline; call before anything records. The reference lives as long as
  // this object. Throws Error(InvalidInput) for a name added before.
  PipelineMetrics& AddPipeline(std::string pipeline, size_t max_batch = 1024);

  // One HTTP response.
  void RecordHttp(const std::string& route, int status, double seconds);

  // The exposition text, `families` appended.
  std::string Render(const std::vector<MetricFamily>& families) const;

 private:
  void RenderPipelines(std::string& out) const;
  void RenderJetStream(std::string& out) const;
  void RenderHttp(std::string& out) const;

  std::vector<std::unique_ptr<PipelineMetrics>> pipelines_;  // fixed once serving starts
  mutable Mutex http_mutex_;
  std::map<std::pair<std::string, int>, int64_t> http_counts_ GUARDED_BY(http_mutex_);
  std::map<std::string, std::unique_ptr<Histogram>> http_latency_ GUARDED_BY(http_mutex_);
};

}  // namespace runnel::server
