#include "runnel/server/service.hpp"

#include "runnel/server/jetstream_ingest.hpp"
#include "runnel/server/jetstream_results.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <future>
#include <set>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/registry/registry.hpp"

namespace runnel::server {

std::vector<size_t> WorkerShares(size_t workers, size_t pipelines) {
  if (workers > 0 && workers < pipelines) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{} worker(s) cannot serve {} pipelines: give each at least one (--workers {}), or 0 "
                            "for the API only",
                            workers, pipelines, pipelines));
  }
  std::vector<size_t> shares(pipelines, pipelines == 0 ? 0 : workers / pipelines);
  for (size_t i = 0; i < pipelines && i < workers % pipelines; ++i) ++shares[i];
  return shares;
}

// One pipeline of the process: its models, batch jobs, result events, API waiters and
// workers. The Service drives the stages in order: StartModels, StartJobs,
// StartEvents (with the API), StartWorkers; then JoinWorkers and StopServices.
class ServedPipeline {
 public:
  ServedPipeline(pipeline::PipelineConfig config, const std::string& conninfo, const ServiceOptions& options,
                 std::atomic<bool>& stop)
      : config_(std::move(config)), conninfo_(conninfo), options_(options), stop_(stop) {}

  const pipeline::PipelineConfig& config() const { return config_; }
  const std::shared_ptr<pipeline::ModelProvider>& models() const { return models_; }
  EventHub* events() const { return events_.get(); }
  bool has_workers() const { return workers_.joinable(); }

  void StartModels() {
    if (!options_.model_file.empty() || config_.model_name.empty()) {
      models_ = pipeline::ModelProvider::Fixed(pipeline::LoadFileModel(config_, options_.model_file));
      return;
    }
    models_ = std::make_shared<pipeline::ModelProvider>();
    auto stream_options = options_.stream;
    if (!stream_options.log) stream_options.log = options_.log;
    stream_ = std::make_unique<registry::ModelStream>(config_, conninfo_, models_, stream_options);
    stream_->Start();
    stream_->Follow();
  }

  void StartJobs() {
    if (config_.capture != pipeline::CaptureMode::Queue) return;
    jobs_ = std::make_unique<pipeline::JobRunner>(config_, conninfo_, options_.log);
    jobs_->Start();
  }

  // What the API serves of this pipeline; starts its result events.
  ServingContext StartEvents(PipelineMetrics& metrics, bool with_workers) {
    metrics_ = &metrics;
    events_ = std::make_unique<EventHub>(config_, conninfo_, options_.events);
    events_->Start();
    ServingContext ctx;
    ctx.config = &config_;
    ctx.conninfo = conninfo_;
    ctx.models = models_;
    ctx.metrics = metrics_;
    ctx.completions = &completions_;
    ctx.events = events_.get();
    if (with_workers) ctx.workers_running = [this] { return workers_running_.load(); };
    ctx.pauses = [this] { return Pauses(); };
    return ctx;
  }

  // Starts `workers` workers (none: API only); returns once they are connected and
  // have checked the models. Throws their start-up failure.
  void StartWorkers(size_t workers, PipelineMetrics& metrics) {
    metrics_ = &metrics;
    if (workers == 0) return;
    auto run = RunOptions(workers);
    workers_running_.store(true);
    auto started = std::make_shared<std::promise<void>>();
    auto started_future = started->get_future();
    run.on_started = [started] { started->set_value(); };
    workers_ = std::thread([this, run, started] {
      try {
        summary_ = pipeline::RunPipeline(config_, models_, conninfo_, run);
      } catch (...) {
        failure_ = std::current_exception();
        workers_running_.store(false);
        stop_.store(true);  // the process ends: the other pipelines drain
        try {
          started->set_exception(std::current_exception());
        } catch (const std::future_error&) {
          // already started: the failure surfaces in Wait()
        }
        return;
      }
      workers_running_.store(false);
    });
    started_future.get();  // rethrows a start-up failure
  }

  // Waits for the workers; returns their fatal error, if any (once).
  std::exception_ptr JoinWorkers() {
    if (workers_.joinable()) workers_.join();
    return std::exchange(failure_, nullptr);
  }

  // [jetstream]: the ingests, made before the workers ask whether they are settled, and
  // the results publisher, started.
  void PrepareJetStream(PipelineMetrics& metrics) {
    if (!config_.jetstream) return;
    for (int64_t i = 0; i < config_.jetstream->threads; ++i) {
      jetstream_.push_back(std::make_unique<JetStreamIngest>(config_, conninfo_, models_));
      jetstream_.back()->SetMetrics(&metrics, i == 0);
    }
    if (!config_.jetstream->results.empty()) {
      results_ = std::make_unique<JetStreamResults>(config_, conninfo_);
      results_->Start();  // before the workers: their first results are published
    }
  }

  // [jetstream]: its messages become rows of the table (or are scored: mode "direct"),
  // exactly once.
  void StartJetStream() {
    if (!config_.jetstream) return;
    for (auto& ingest : jetstream_) ingest->Start();
    if (options_.log) {
      options_.log(fmt::format("{}: taking requests from JetStream stream '{}' ({}, consumer '{}')", config_.name,
                               config_.jetstream->stream, config_.jetstream->subject, config_.jetstream->durable));
    }
  }

  void StopServices() {
    for (auto& ingest : jetstream_) ingest->Stop();
    // A run that drained its queue by itself publishes the last results before it ends.
    if (results_ && options_.until_idle) results_->Finish(std::chrono::seconds(10));
    if (results_) results_->Stop();
    if (events_) events_->Stop();
    if (jobs_) jobs_->Stop();
    if (stream_) stream_->Stop();
  }

  // The workers' summary, and what the JetStream ingests scored themselves.
  pipeline::RunSummary summary() const {
    pipeline::RunSummary out = summary_;
    for (const auto& ingest : jetstream_) out.scored_directly += ingest->totals().scored;
    return out;
  }

  std::vector<std::string> Pauses() const {
    MutexLock lock(pause_mutex_);
    std::vector<std::string> out;
    for (const auto& [worker, reason] : pauses_) {
      if (std::find(out.begin(), out.end(), reason) == out.end()) out.push_back(reason);
    }
    return out;
  }

  std::string Describe() const {
    if (!models_) return "nothing";
    std::string out;
    for (const auto& serving : models_->Current()->All()) {
      out += fmt::format("{}{}{}", out.empty() ? "" : ", ", serving->label(),
                         serving->data_type ? " (data type " + *serving->data_type + ")" : "");
    }
    if (stream_) {
      out += fmt::format("{}following the model stream of '{}'", out.empty() ? "no model yet, " : "; ",
                         config_.model_name);
    }
    return out;
  }

 private:
  pipeline::RunOptions RunOptions(size_t workers) {
    pipeline::RunOptions run;
    run.workers = workers;
    run.until_idle = options_.until_idle;
    if (!jetstream_.empty()) {
      run.sources_settled = [this] {
        return std::all_of(jetstream_.begin(), jetstream_.end(), [](const auto& in) { return in->settled(); });
      };
    }
    run.stop = &stop_;
    run.log = options_.log;
    run.on_pause = [this](size_t worker, const std::optional<std::string>& reason) {
      MutexLock lock(pause_mutex_);
      if (reason) {
        pauses_[worker] = *reason;
      } else {
        pauses_.erase(worker);
      }
    };
    run.on_batch = [this](const pipeline::BatchResult& batch) {
      completions_.Complete(batch.keys);
      metrics_->RecordBatch(batch);
    };
    return run;
  }

  pipeline::PipelineConfig config_;
  const std::string& conninfo_;    // the Service's
  const ServiceOptions& options_;  // the Service's
  std::atomic<bool>& stop_;        // the Service's: one Ctrl-C drains every pipeline
  PipelineMetrics* metrics_ = nullptr;
  std::shared_ptr<pipeline::ModelProvider> models_;
  std::unique_ptr<registry::ModelStream> stream_;
  std::unique_ptr<pipeline::JobRunner> jobs_;
  std::vector<std::unique_ptr<JetStreamIngest>> jetstream_;  // [jetstream] threads
  std::unique_ptr<JetStreamResults> results_;
  CompletionHub completions_;
  std::unique_ptr<EventHub> events_;
  std::atomic<bool> workers_running_{false};
  std::thread workers_;
  pipeline::RunSummary summary_;
  std::exception_ptr failure_;
  mutable Mutex pause_mutex_;
  std::map<size_t, std::string> pauses_ GUARDED_BY(pause_mutex_);  // worker -> reason
};

Service::Service(std::vector<pipeline::PipelineConfig> pipelines, std::string conninfo, ServiceOptions options)
    : conninfo_(std::move(conninfo)), options_(std::move(options)) {
  if (pipelines.empty()) throw Error(ErrorCode::InvalidInput, "no pipeline to serve");
  if (pipelines.size() > 1 && !options_.model_file.empty()) {
    throw Error(ErrorCode::InvalidInput,
                "a model file (--model) serves one pipeline: with several, each serves its registry model or its "
                "[model] file");
  }
  WorkerShares(options_.workers, pipelines.size());  // throws early for too few
  std::set<std::string> names;
  for (auto& config : pipelines) {
    if (!names.insert(config.name).second) {
      throw Error(
          ErrorCode::InvalidInput,
          fmt::format("pipeline '{}' is given twice: pipelines served together need names of their own", config.name));
    }
    pipelines_.push_back(std::make_unique<ServedPipeline>(std::move(config), conninfo_, options_, stop_));
  }
}

Service::Service(pipeline::PipelineConfig config, std::string conninfo, ServiceOptions options)
    : Service(std::vector<pipeline::PipelineConfig>{std::move(config)}, std::move(conninfo), std::move(options)) {}

Service::~Service() {
  Stop();
  for (auto& p : pipelines_) p->JoinWorkers();
  StopServices();
}

void Service::Start() {
  auto log = [this](const std::string& m) {
    if (options_.log) options_.log(m);
  };
  {
    auto conn = postgres::Connection::Open(conninfo_);
    if (options_.migrate) {
      for (const auto& p : pipelines_) {
        for (const auto& line : pipeline::MigrateIfAllowed(conn, p->config())) {
          log(pipelines_.size() > 1 ? fmt::format("migrate {}: {}", p->config().name, line)
                                    : fmt::format("migrate: {}", line));
        }
      }
    }
    for (const auto& p : pipelines_) {
      for (const auto& partition : pipeline::UncapturedPartitions(conn, p->config())) {
        log(
            fmt::format("pipeline {}: partition {} is not captured (attached since the last migrate): rows "
                        "inserted straight into it are no requests until the table's owner runs `runnel "
                        "migrate`; rows inserted through {} are",
                        p->config().name, partition, p->config().table));
      }
    }
    registry::MigrateRegistry(conn);
    samples_table_ = MigrateSamples(conn);
    if (!samples_table_) {
      log("runnel_samples is missing and this role may not create it: the dashboard shows no throughput or "
          "latency until the owner runs `runnel migrate` (or `runnel grants`)");
    }
  }
  try {
    std::vector<PipelineMetrics*> metrics;
    for (auto& p : pipelines_) {
      p->StartModels();
      p->StartJobs();
      metrics.push_back(&metrics_.AddPipeline(p->config().name, p->config().max_batch));
    }
    if (options_.http) {
      std::vector<ServingContext> contexts;
      for (size_t i = 0; i < pipelines_.size(); ++i) {
        contexts.push_back(pipelines_[i]->StartEvents(*metrics[i], options_.workers > 0));
      }
      http_ = std::make_unique<HttpServer>(*options_.http, std::move(contexts), &metrics_);
      http_port_ = http_->Start();
    }
    const auto shares = WorkerShares(options_.workers, pipelines_.size());
    for (size_t i = 0; i < pipelines_.size(); ++i) pipelines_[i]->PrepareJetStream(*metrics[i]);
    for (size_t i = 0; i < pipelines_.size(); ++i) pipelines_[i]->StartWorkers(shares[i], *metrics[i]);
    for (auto& p : pipelines_) p->StartJetStream();
    if (options_.workers > 0 && samples_table_) {
      sampler_ = std::make_unique<Sampler>(
          conninfo_, std::vector<const PipelineMetrics*>(metrics.begin(), metrics.end()), registry::ProcessId());
    }
    std::vector<pipeline::PipelineConfig> configs;
    for (const auto& p : pipelines_) configs.push_back(p->config());
    if (options_.workers > 0 && snapshot::Scheduler::AnyScheduled(configs)) {
      snapshots_ = std::make_unique<snapshot::Scheduler>(conninfo_, std::move(configs));
    }
  } catch (...) {
    Stop();
    for (auto& p : pipelines_) p->JoinWorkers();
    StopServices();
    throw;
  }
}

void Service::Stop() {
  stop_.store(true);
}

void Service::StopServices() {
  snapshots_.reset();
  sampler_.reset();
  if (http_) http_->Stop();
  for (auto& p : pipelines_) p->StopServices();
}

std::vector<pipeline::RunSummary> Service::Wait() {
  const bool workers =
      std::any_of(pipelines_.begin(), pipelines_.end(), [](const auto& p) { return p->has_workers(); });
  if (!workers) {
    while (!stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::exception_ptr failure;
  for (auto& p : pipelines_) {
    if (auto error = p->JoinWorkers(); error && !failure) failure = error;
  }
  StopServices();
  if (failure) std::rethrow_exception(failure);
  std::vector<pipeline::RunSummary> summaries;
  for (const auto& p : pipelines_) summaries.push_back(p->summary());
  return summaries;
}

const pipeline::PipelineConfig& Service::config(size_t i) const {
  return pipelines_.at(i)->config();
}

EventHub* Service::events(size_t i) const {
  return pipelines_.at(i)->events();
}

std::string Service::Describe(size_t i) const {
  return pipelines_.at(i)->Describe();
}

const std::shared_ptr<pipeline::ModelProvider>& Service::models(size_t i) const {
  return pipelines_.at(i)->models();
}

std::vector<std::string> Service::Pauses(size_t i) const {
  return pipelines_.at(i)->Pauses();
}

}  // namespace runnel::server
