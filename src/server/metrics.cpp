#include "runnel/server/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <memory>

namespace runnel::server {

namespace {

std::vector<double> SecondsBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::string Label(const std::string& labels, const std::string& extra) {
  if (labels.empty()) return "{" + extra + "}";
  return "{" + labels + "," + extra + "}";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void Histogram::Observe(double value) {
  const auto at = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  counts_[at].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

void Histogram::Write(std::string& out, const std::string& name, const std::string& labels) const {
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    out += fmt::format("{}_bucket{} {}\n", name, Label(labels, fmt::format("le=\"{}\"", bounds_[i])), cumulative);
  }
  cumulative += counts_[bounds_.size()].load(std::memory_order_relaxed);
  out += fmt::format("{}_bucket{} {}\n", name, Label(labels, "le=\"+Inf\""), cumulative);
  const std::string plain = labels.empty() ? "" : "{" + labels + "}";
  out += fmt::format("{}_sum{} {}\n", name, plain, sum_.load(std::memory_order_relaxed));
  out += fmt::format("{}_count{} {}\n", name, plain, count_.load(std::memory_order_relaxed));
}

Metrics::Metrics(std::string pipeline)
    : pipeline_(std::move(pipeline)),
      latency_(SecondsBounds()),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}) {
  for (size_t k = 0; k < stages_.size(); ++k) {
    stage_storage_.push_back(std::make_unique<Histogram>(SecondsBounds()));
    stages_[k] = stage_storage_.back().get();
  }
}

void Metrics::RecordBatch(const pipeline::BatchResult& batch) {
  done_.fetch_add(static_cast<int64_t>(batch.done), std::memory_order_relaxed);
  throttled_.fetch_add(static_cast<int64_t>(batch.throttled), std::memory_order_relaxed);
  failed_.fetch_add(static_cast<int64_t>(batch.failed), std::memory_order_relaxed);
  batches_.fetch_add(1, std::memory_order_relaxed);
  deferred_.fetch_add(static_cast<int64_t>(batch.deferred), std::memory_order_relaxed);
  if (!batch.failed_sqlstates.empty()) {
    std::lock_guard lock(failure_mutex_);
    for (const auto& state : batch.failed_sqlstates) ++failures_by_class_[state.substr(0, 2)];
  }
  batch_size_.Observe(static_cast<double>(batch.claimed));
  for (size_t k = 0; k < stages_.size(); ++k) stages_[k]->Observe(batch.stage_ms[k] / 1000.0);
  for (double ms : batch.latencies_ms) latency_.Observe(ms / 1000.0);
}

void Metrics::RecordHttp(const std::string& route, int status, double seconds) {
  std::lock_guard lock(http_mutex_);
  ++http_counts_[{route, status}];
  auto& histogram = http_latency_[route];
  if (!histogram) histogram = std::make_unique<Histogram>(SecondsBounds());
  histogram->Observe(seconds);
}

void Metrics::RecordIngested(size_t records) {
  ingested_.fetch_add(static_cast<int64_t>(records), std::memory_order_relaxed);
}

std::string Metrics::Render(const std::vector<std::pair<std::string, double>>& gauges) const {
  std::string out;
  const std::string p = fmt::format("pipeline=\"{}\"", pipeline_);
  out += "# HELP runnel_requests_total Requests served, by final status.\n# TYPE runnel_requests_total counter\n";
  out += fmt::format("runnel_requests_total{{{},status=\"done\"}} {}\n", p, done_.load());
  out += fmt::format("runnel_requests_total{{{},status=\"throttled\"}} {}\n", p, throttled_.load());
  out += fmt::format("runnel_requests_total{{{},status=\"failed\"}} {}\n", p, failed_.load());
  {
    std::lock_guard lock(failure_mutex_);
    out += "# HELP runnel_requests_failed_total Failed requests by SQLSTATE class (22 data, 23 constraint, ";
    out += "55 lock, P0 raised by a trigger, 02 row not found).\n# TYPE runnel_requests_failed_total counter\n";
    for (const auto& [cls, count] : failures_by_class_) {
      out += fmt::format("runnel_requests_failed_total{{{},sqlstate_class=\"{}\"}} {}\n", p, cls, count);
    }
  }
  out += "# HELP runnel_requests_deferred_total Requests sent back to the queue: their rows stayed locked.\n";
  out += "# TYPE runnel_requests_deferred_total counter\n";
  out += fmt::format("runnel_requests_deferred_total{{{}}} {}\n", p, deferred_.load());
  out += "# HELP runnel_batches_total Batches committed.\n# TYPE runnel_batches_total counter\n";
  out += fmt::format("runnel_batches_total{{{}}} {}\n", p, batches_.load());
  out += "# HELP runnel_ingested_records_total Records accepted by the HTTP API.\n";
  out += "# TYPE runnel_ingested_records_total counter\n";
  out += fmt::format("runnel_ingested_records_total{{{}}} {}\n", p, ingested_.load());
  out += "# HELP runnel_batch_size Requests per batch.\n# TYPE runnel_batch_size histogram\n";
  batch_size_.Write(out, "runnel_batch_size", p);
  out += "# HELP runnel_request_latency_seconds From insert to result commit.\n";
  out += "# TYPE runnel_request_latency_seconds histogram\n";
  latency_.Write(out, "runnel_request_latency_seconds", p);
  out += "# HELP runnel_stage_seconds Time per batch in each stage.\n# TYPE runnel_stage_seconds histogram\n";
  for (size_t k = 0; k < stages_.size(); ++k) {
    stages_[k]->Write(out, "runnel_stage_seconds", fmt::format("{},stage=\"{}\"", p, pipeline::kStageNames[k]));
  }
  {
    std::lock_guard lock(http_mutex_);
    out += "# HELP runnel_http_requests_total HTTP responses by route and status.\n";
    out += "# TYPE runnel_http_requests_total counter\n";
    for (const auto& [key, count] : http_counts_) {
      out += fmt::format("runnel_http_requests_total{{route=\"{}\",code=\"{}\"}} {}\n", key.first, key.second, count);
    }
    out += "# HELP runnel_http_request_seconds HTTP handling time by route.\n";
    out += "# TYPE runnel_http_request_seconds histogram\n";
    for (const auto& [route, histogram] : http_latency_) {
      histogram->Write(out, "runnel_http_request_seconds", fmt::format("route=\"{}\"", route));
    }
  }
  for (const auto& [name, value] : gauges) out += fmt::format("{} {}\n", name, value);
  return out;
}

}  // namespace runnel::server
