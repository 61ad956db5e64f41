#include "runnel/server/metrics.hpp"

#include <fmt/format.h>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "runnel/core/error.hpp"

namespace runnel::server {

namespace {

std::vector<double> SecondsBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

// 1, 2, 4, ... below max_batch, then max_batch: every batch size has its bucket and
// the largest a batch can be is a bound of its own.
std::vector<double> BatchBounds(size_t max_batch) {
  std::vector<double> bounds;
  for (size_t b = 1; b < std::max<size_t>(max_batch, 1); b *= 2) bounds.push_back(static_cast<double>(b));
  bounds.push_back(static_cast<double>(std::max<size_t>(max_batch, 1)));
  return bounds;
}

// Field `index` (1-based, as proc(5) numbers them) of /proc/self/stat, after the
// parenthesised command name, which may hold spaces.
std::optional<double> ProcStatField(size_t index) {
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  for (size_t i = 3; rest >> field; ++i) {
    if (i == index) return std::strtod(field.c_str(), nullptr);
  }
  return std::nullopt;
}

std::optional<double> BootTime() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("btime ")) return std::strtod(line.c_str() + 6, nullptr);
  }
  return std::nullopt;
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

std::vector<int64_t> Histogram::Counts() const {
  std::vector<int64_t> counts;
  for (const auto& c : counts_) counts.push_back(c.load(std::memory_order_relaxed));
  return counts;
}

const std::vector<double>& LatencyBounds() {
  static const std::vector<double> bounds = SecondsBounds();
  return bounds;
}

std::vector<MetricFamily> ProcessMetrics() {
  std::vector<MetricFamily> families;
  auto add = [&families](std::string name, std::string help, std::string type, double value) {
    families.push_back({std::move(name), std::move(help), std::move(type), {{"", value}}});
  };
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) == 0) {
    const double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", cpu);
  }
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  std::ifstream statm("/proc/self/statm");
  double size_pages = 0, resident_pages = 0;
  if (statm >> size_pages >> resident_pages) {
    add("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", size_pages * page);
    add("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", resident_pages * page);
  }
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::end(it);
       it.increment(ec)) {
    ++fds;
  }
  if (!ec) add("process_open_fds", "Number of open file descriptors.", "gauge", fds);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    add("process_max_fds", "Maximum number of open file descriptors.", "gauge", static_cast<double>(limit.rlim_cur));
  }
  // Read once: it does not change while the process lives.
  static const std::optional<double> started = []() -> std::optional<double> {
    const auto ticks = ProcStatField(22);
    const auto boot = BootTime();
    if (!ticks || !boot) return std::nullopt;
    return *boot + *ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }();
  if (started)
    add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", *started);
  return families;
}

PipelineMetrics::PipelineMetrics(std::string pipeline, size_t max_batch)
    : pipeline_(std::move(pipeline)), latency_(LatencyBounds()), batch_size_(BatchBounds(max_batch)) {
  for (size_t k = 0; k < stages_.size(); ++k) {
    stage_storage_.push_back(std::make_unique<Histogram>(SecondsBounds()));
    stages_[k] = stage_storage_.back().get();
  }
}

void PipelineMetrics::RecordBatch(const pipeline::BatchResult& batch) {
  RecordRequests(batch);
  gone_.fetch_add(static_cast<int64_t>(batch.gone), std::memory_order_relaxed);
  batches_.fetch_add(1, std::memory_order_relaxed);
  deferred_.fetch_add(static_cast<int64_t>(batch.deferred), std::memory_order_relaxed);
  batch_size_.Observe(static_cast<double>(batch.claimed));
  for (size_t k = 0; k < stages_.size(); ++k) stages_[k]->Observe(batch.stage_ms[k] / 1000.0);
}

void PipelineMetrics::RecordScoredDirectly(const pipeline::BatchResult& scored) {
  RecordRequests(scored);
}

// The requests' part of a batch: counts by status, failures by class, latencies.
void PipelineMetrics::RecordRequests(const pipeline::BatchResult& requests) {
  done_.fetch_add(static_cast<int64_t>(requests.done), std::memory_order_relaxed);
  throttled_.fetch_add(static_cast<int64_t>(requests.throttled), std::memory_order_relaxed);
  failed_.fetch_add(static_cast<int64_t>(requests.failed), std::memory_order_relaxed);
  if (!requests.failed_sqlstates.empty()) {
    MutexLock lock(failure_mutex_);
    for (const auto& state : requests.failed_sqlstates) ++failures_by_class_[state.substr(0, 2)];
  }
  for (double ms : requests.latencies_ms) latency_.Observe(ms / 1000.0);
}

MetricsSnapshot PipelineMetrics::Snapshot() const {
  MetricsSnapshot s;
  s.done = done_.load(std::memory_order_relaxed);
  s.throttled = throttled_.load(std::memory_order_relaxed);
  s.failed = failed_.load(std::memory_order_relaxed);
  s.batches = batches_.load(std::memory_order_relaxed);
  s.latency = latency_.Counts();
  for (size_t k = 0; k < stages_.size(); ++k) s.stage_seconds[k] = stages_[k]->sum();
  return s;
}

void PipelineMetrics::RecordIngested(size_t records) {
  ingested_.fetch_add(static_cast<int64_t>(records), std::memory_order_relaxed);
}

void PipelineMetrics::RecordJetStreamRound(uint64_t inserted, uint64_t scored, uint64_t duplicates, uint64_t dead) {
  jetstream_.active.store(true);
  jetstream_.inserted.fetch_add(static_cast<int64_t>(inserted), std::memory_order_relaxed);
  jetstream_.scored.fetch_add(static_cast<int64_t>(scored), std::memory_order_relaxed);
  jetstream_.duplicates.fetch_add(static_cast<int64_t>(duplicates), std::memory_order_relaxed);
  jetstream_.dead.fetch_add(static_cast<int64_t>(dead), std::memory_order_relaxed);
}

void PipelineMetrics::SetJetStreamConsumer(uint64_t pending, int64_t ack_pending, int64_t redelivered) {
  jetstream_.active.store(true);
  jetstream_.pending.store(static_cast<int64_t>(pending));
  jetstream_.ack_pending.store(ack_pending);
  jetstream_.redelivered.store(redelivered);
}

PipelineMetrics& Metrics::AddPipeline(std::string pipeline, size_t max_batch) {
  for (const auto& p : pipelines_) {
    if (p->pipeline() == pipeline) {
      throw Error(ErrorCode::InvalidInput, fmt::format("pipeline '{}' is served twice by one process", pipeline));
    }
  }
  pipelines_.push_back(std::make_unique<PipelineMetrics>(std::move(pipeline), max_batch));
  return *pipelines_.back();
}

void Metrics::RecordHttp(const std::string& route, int status, double seconds) {
  MutexLock lock(http_mutex_);
  ++http_counts_[{route, status}];
  auto& histogram = http_latency_[route];
  if (!histogram) histogram = std::make_unique<Histogram>(SecondsBounds());
  histogram->Observe(seconds);
}

void Metrics::RenderPipelines(std::string& out) const {
  // Each family's HELP and TYPE once, then its sample of every pipeline.
  auto family = [&](std::string_view name, std::string_view help, std::string_view type, const auto& write) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n", name, help, type);
    for (const auto& m : pipelines_) write(*m, fmt::format("pipeline=\"{}\"", m->pipeline()));
  };
  family("runnel_requests_total", "Requests served, by final status.", "counter",
         [&](const PipelineMetrics& m, const std::string& p) {
           out += fmt::format("runnel_requests_total{{{},status=\"done\"}} {}\n", p, m.done_.load());
           out += fmt::format("runnel_requests_total{{{},status=\"throttled\"}} {}\n", p, m.throttled_.load());
           out += fmt::format("runnel_requests_total{{{},status=\"failed\"}} {}\n", p, m.failed_.load());
           out += fmt::format("runnel_requests_total{{{},status=\"gone\"}} {}\n", p, m.gone_.load());
         });
  family("runnel_requests_failed_total",
         "Failed requests by SQLSTATE class (22 data, 23 constraint, 55 lock, P0 raised by a trigger, 02 row not "
         "found).",
         "counter", [&](const PipelineMetrics& m, const std::string& p) {
           MutexLock lock(m.failure_mutex_);
           for (const auto& [cls, count] : m.failures_by_class_) {
             out += fmt::format("runnel_requests_failed_total{{{},sqlstate_class=\"{}\"}} {}\n", p, cls, count);
           }
         });
  auto counter = [&](std::string_view name, std::string_view help, std::atomic<int64_t> PipelineMetrics::*value) {
    family(name, help, "counter", [&](const PipelineMetrics& m, const std::string& p) {
      out += fmt::format("{}{{{}}} {}\n", name, p, (m.*value).load());
    });
  };
  counter("runnel_requests_deferred_total", "Requests sent back to the queue: their rows stayed locked.",
          &PipelineMetrics::deferred_);
  counter("runnel_batches_total", "Batches committed.", &PipelineMetrics::batches_);
  counter("runnel_ingested_records_total", "Records accepted by the HTTP API.", &PipelineMetrics::ingested_);
  family("runnel_batch_size", "Requests per batch.", "histogram",
         [&](const PipelineMetrics& m, const std::string& p) { m.batch_size_.Write(out, "runnel_batch_size", p); });
  family("runnel_request_latency_seconds", "From insert to result commit.", "histogram",
         [&](const PipelineMetrics& m, const std::string& p) {
           m.latency_.Write(out, "runnel_request_latency_seconds", p);
         });
  family("runnel_stage_seconds", "Time per batch in each stage.", "histogram",
         [&](const PipelineMetrics& m, const std::string& p) {
           for (size_t k = 0; k < m.stages_.size(); ++k) {
             m.stages_[k]->Write(out, "runnel_stage_seconds",
                                 fmt::format("{},stage=\"{}\"", p, pipeline::kStageNames[k]));
           }
         });
}

// Only pipelines taking requests from JetStream; nothing when none does.
void Metrics::RenderJetStream(std::string& out) const {
  const auto active = [](const PipelineMetrics& m) { return m.jetstream_.active.load(); };
  if (std::none_of(pipelines_.begin(), pipelines_.end(), [&](const auto& m) { return active(*m); })) return;
  auto family = [&](std::string_view name, std::string_view help, std::string_view type, const auto& write) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n", name, help, type);
    for (const auto& m : pipelines_)
      if (active(*m)) write(*m, fmt::format("pipeline=\"{}\"", m->pipeline()));
  };
  family("runnel_jetstream_messages_total",
         "JetStream messages and their records by outcome: inserted (a record became a row), scored (a record scored "
         "without a row, mode direct), duplicate (a message taken in by an earlier delivery), dead (a dead letter: a "
         "message refused whole, or a record of a batch).",
         "counter", [&](const PipelineMetrics& m, const std::string& p) {
           const auto& j = m.jetstream_;
           out += fmt::format("runnel_jetstream_messages_total{{{},outcome=\"inserted\"}} {}\n", p, j.inserted.load());
           out += fmt::format("runnel_jetstream_messages_total{{{},outcome=\"scored\"}} {}\n", p, j.scored.load());
           out +=
               fmt::format("runnel_jetstream_messages_total{{{},outcome=\"duplicate\"}} {}\n", p, j.duplicates.load());
           out += fmt::format("runnel_jetstream_messages_total{{{},outcome=\"dead\"}} {}\n", p, j.dead.load());
         });
  using Gauge = std::atomic<int64_t> PipelineMetrics::JetStreamCounters::*;
  auto gauge = [&](std::string_view name, std::string_view help, Gauge value) {
    family(name, help, "gauge", [&](const PipelineMetrics& m, const std::string& p) {
      const int64_t v = (m.jetstream_.*value).load();
      if (v >= 0) out += fmt::format("{}{{{}}} {}\n", name, p, v);
    });
  };
  gauge("runnel_jetstream_consumer_pending", "Messages in the stream not yet delivered to the consumer.",
        &PipelineMetrics::JetStreamCounters::pending);
  gauge("runnel_jetstream_consumer_ack_pending", "Messages delivered and not yet acknowledged.",
        &PipelineMetrics::JetStreamCounters::ack_pending);
  gauge("runnel_jetstream_consumer_redelivered", "Messages delivered more than once and not yet acknowledged.",
        &PipelineMetrics::JetStreamCounters::redelivered);
}

void Metrics::RenderHttp(std::string& out) const {
  MutexLock lock(http_mutex_);
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

std::string Metrics::Render(const std::vector<MetricFamily>& families) const {
  std::string out;
  RenderPipelines(out);
  RenderJetStream(out);
  RenderHttp(out);
  for (const auto& family : families) {
    if (family.samples.empty()) continue;
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n", family.name, family.help, family.type);
    for (const auto& [labels, value] : family.samples) {
      out += labels.empty() ? fmt::format("{} {}\n", family.name, value)
                            : fmt::format("{}{{{}}} {}\n", family.name, labels, value);
    }
  }
  return out;
}

}  // namespace runnel::server
