#include "runnel/server/service.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <future>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/registry/registry.hpp"

namespace runnel::server {

Service::Service(pipeline::PipelineConfig config, std::string conninfo, ServiceOptions options)
    : config_(std::move(config)), conninfo_(std::move(conninfo)), options_(std::move(options)) {}

Service::~Service() {
  Stop();
  if (workers_.joinable()) workers_.join();
  StopServices();
}

void Service::Start() {
  auto log = [this](const std::string& m) {
    if (options_.log) options_.log(m);
  };
  {
    auto conn = postgres::Connection::Open(conninfo_);
    if (options_.migrate) {
      for (const auto& line : pipeline::MigrateIfAllowed(conn, config_)) log(fmt::format("migrate: {}", line));
    }
    registry::MigrateRegistry(conn);
  }
  try {
    if (!options_.model_file.empty() || config_.model_name.empty()) {
      models_ = pipeline::ModelProvider::Fixed(pipeline::LoadFileModel(config_, options_.model_file));
    } else {
      models_ = std::make_shared<pipeline::ModelProvider>();
      auto stream_options = options_.stream;
      if (!stream_options.log) stream_options.log = options_.log;
      stream_ = std::make_unique<registry::ModelStream>(config_, conninfo_, models_, stream_options);
      stream_->Start();
      stream_->Follow();
    }
    if (config_.capture == pipeline::CaptureMode::Queue) {
      jobs_ = std::make_unique<pipeline::JobRunner>(config_, conninfo_, options_.log);
      jobs_->Start();
    }
    metrics_ = std::make_unique<Metrics>(config_.name, config_.max_batch);
    completions_ = std::make_unique<CompletionHub>();
    if (options_.http) {
      events_ = std::make_unique<EventHub>(config_, conninfo_, options_.events);
      events_->Start();
      ServingContext ctx;
      ctx.config = &config_;
      ctx.conninfo = conninfo_;
      ctx.models = models_;
      ctx.metrics = metrics_.get();
      ctx.completions = completions_.get();
      ctx.events = events_.get();
      if (options_.workers > 0) ctx.workers_running = [this] { return workers_running_.load(); };
      ctx.pauses = [this] { return Pauses(); };
      http_ = std::make_unique<HttpServer>(*options_.http, ctx);
      http_port_ = http_->Start();
    }
    pipeline::RunOptions run;
    run.workers = options_.workers;
    run.until_idle = options_.until_idle;
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
      completions_->Complete(batch.keys);
      metrics_->RecordBatch(batch);
    };
    if (options_.workers == 0) return;  // API only: other processes serve the queue
    // Workers connect (and check the models) before Start returns.
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
  } catch (...) {
    Stop();
    if (workers_.joinable()) workers_.join();
    failure_ = nullptr;
    StopServices();
    throw;
  }
}

void Service::Stop() {
  stop_.store(true);
}

void Service::StopServices() {
  if (http_) http_->Stop();
  if (events_) events_->Stop();
  if (jobs_) jobs_->Stop();
  if (stream_) stream_->Stop();
}

pipeline::RunSummary Service::Wait() {
  if (workers_.joinable()) {
    workers_.join();
  } else {
    while (!stop_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  StopServices();
  if (failure_) std::rethrow_exception(failure_);
  return summary_;
}

std::vector<std::string> Service::Pauses() const {
  MutexLock lock(pause_mutex_);
  std::vector<std::string> out;
  for (const auto& [worker, reason] : pauses_) {
    if (std::find(out.begin(), out.end(), reason) == out.end()) out.push_back(reason);
  }
  return out;
}

std::string Service::Describe() const {
  if (!models_) return "nothing";
  auto set = models_->Current();
  std::string out;
  for (const auto& serving : set->All()) {
    out += fmt::format("{}{}{}", out.empty() ? "" : ", ", serving->label(),
                       serving->data_type ? " (data type " + *serving->data_type + ")" : "");
  }
  if (stream_) {
    out +=
        fmt::format("{}following the model stream of '{}'", out.empty() ? "no model yet, " : "; ", config_.model_name);
  }
  return out;
}

}  // namespace runnel::server
