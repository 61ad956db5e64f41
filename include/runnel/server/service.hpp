// Everything `runnel run` runs for one pipeline in one process: the models (a fixed
// file, or the registry's model stream), the batch-job runner, the workers and,
// optionally, the HTTP API, wired together (workers report committed batches to the
// API's waiters and to /metrics).
//
// Thread safety: Start, Stop and Wait from one thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "runnel/core/mutex.hpp"
#include "runnel/pipeline/jobs.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/registry/model_stream.hpp"
#include "runnel/server/event_hub.hpp"
#include "runnel/server/http_server.hpp"

namespace runnel::server {

struct ServiceOptions {
  size_t workers = 2;               // 0: API only (other processes run the workers)
  bool until_idle = false;          // workers return once the queue stays empty
  bool migrate = true;              // run pipeline::Migrate first
  std::string model_file;           // non-empty: serve this file, not the registry
  std::optional<HttpOptions> http;  // serve the API too
  registry::ModelStreamOptions stream;
  EventHubOptions events;  // result subscriptions, with the API
  std::function<void(const std::string&)> log;
};

class Service {
 public:
  Service(pipeline::PipelineConfig config, std::string conninfo, ServiceOptions options);
  ~Service();  // stops

  // Migrates, loads the models, starts jobs, the API and the workers. Throws Error
  // when any of them cannot start (nothing is left running then).
  void Start();
  // Asks the workers to drain and everything to stop; Wait returns afterwards.
  void Stop();
  // Waits for the workers to return (after Stop, or by themselves with until_idle),
  // then stops the rest. Rethrows a worker's fatal error.
  pipeline::RunSummary Wait();

  int http_port() const { return http_port_; }

  // The result-subscription hub (with --http), else null.

  EventHub* events() const { return events_.get(); }
  // What serves: "needs@v2", or "the model stream of 'needs'" before a model exists.
  std::string Describe() const;
  const std::shared_ptr<pipeline::ModelProvider>& models() const { return models_; }
  // Why workers are paused now (one reason per paused worker); empty while serving.
  // Thread-safe.
  std::vector<std::string> Pauses() const;

 private:
  void StopServices();

  pipeline::PipelineConfig config_;
  std::string conninfo_;
  ServiceOptions options_;
  std::shared_ptr<pipeline::ModelProvider> models_;
  std::unique_ptr<registry::ModelStream> stream_;
  std::unique_ptr<pipeline::JobRunner> jobs_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<CompletionHub> completions_;
  std::unique_ptr<EventHub> events_;
  std::unique_ptr<HttpServer> http_;
  int http_port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> workers_running_{false};
  std::thread workers_;
  pipeline::RunSummary summary_;
  std::exception_ptr failure_;
  mutable Mutex pause_mutex_;
  std::map<size_t, std::string> pauses_ GUARDED_BY(pause_mutex_);  // worker -> reason
};

}  // namespace runnel::server
