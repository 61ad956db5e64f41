// Everything `runnel run` runs in one process: for each pipeline it serves, the models
// (a fixed file, or the registry's model stream), the batch-job runner and the
// workers; once for all of them, optionally, the HTTP API and /metrics (labelled by
// pipeline). Workers report committed batches to the API's waiters and to /metrics,
// whose counters a Sampler stores second by second for the dashboard (samples.hpp).
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
#include <vector>

#include "runnel/core/mutex.hpp"
#include "runnel/pipeline/jobs.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/registry/model_stream.hpp"
#include "runnel/server/event_hub.hpp"
#include "runnel/server/http_server.hpp"
#include "runnel/server/samples.hpp"
#include "runnel/snapshot/scheduler.hpp"

namespace runnel::server {

struct ServiceOptions {
  // Workers of all pipelines together (WorkerShares); 0: API only (other processes
  // run the workers).
  size_t workers = 2;
  bool until_idle = false;          // workers return once the queue stays empty and [jetstream] consumers are
                                    // drained (then the last results are published)
  bool migrate = true;              // run pipeline::Migrate first
  std::string model_file;           // non-empty: serve this file, not the registry (one pipeline only)
  std::optional<HttpOptions> http;  // serve the API too
  registry::ModelStreamOptions stream;
  EventHubOptions events;  // result subscriptions, with the API
  std::function<void(const std::string&)> log;
};

// How `workers` are shared by `pipelines`: as evenly as can be, the first ones taking
// the remainder. Throws Error(InvalidInput) when there are fewer workers (but some)
// than pipelines: a pipeline without a worker would never be served.
std::vector<size_t> WorkerShares(size_t workers, size_t pipelines);

class ServedPipeline;  // one pipeline's models, jobs, events and workers (service.cpp)

class Service {
 public:
  // Serves `pipelines` (at least one, named apart) from the database at `conninfo`.
  // Throws Error(InvalidInput) for none, a name given twice, a model file with
  // several pipelines, or too few workers (WorkerShares).
  Service(std::vector<pipeline::PipelineConfig> pipelines, std::string conninfo, ServiceOptions options);
  Service(pipeline::PipelineConfig config, std::string conninfo, ServiceOptions options);
  ~Service();  // stops

  // Migrates, loads the models, starts jobs, the API and the workers. Throws Error
  // when any of them cannot start (nothing is left running then).
  void Start();
  // Asks the workers to drain and everything to stop; Wait returns afterwards.
  void Stop();
  // Waits for the workers to return (after Stop, or by themselves with until_idle;
  // when one pipeline's workers fail, the others are stopped), then stops the rest.
  // Returns each pipeline's summary, in the order given. Rethrows a worker's fatal
  // error.
  std::vector<pipeline::RunSummary> Wait();

  int http_port() const { return http_port_; }

  // The pipelines, in the order given; `i` below indexes them.
  size_t size() const { return pipelines_.size(); }
  const pipeline::PipelineConfig& config(size_t i = 0) const;
  // The result-subscription hub (with --http), else null.
  EventHub* events(size_t i = 0) const;
  // What serves: "needs@v2", or "the model stream of 'needs'" before a model exists.
  std::string Describe(size_t i = 0) const;
  const std::shared_ptr<pipeline::ModelProvider>& models(size_t i = 0) const;
  // Why workers are paused now (one reason per paused worker); empty while serving.
  // Thread-safe.
  std::vector<std::string> Pauses(size_t i = 0) const;

 private:
  void StartHttp();
  void StopServices();

  std::string conninfo_;
  ServiceOptions options_;
  std::atomic<bool> stop_{false};
  Metrics metrics_;
  std::vector<std::unique_ptr<ServedPipeline>> pipelines_;  // use the members above
  std::unique_ptr<HttpServer> http_;                        // uses the pipelines
  std::unique_ptr<Sampler> sampler_;                        // with workers: their per-second samples
  std::unique_ptr<snapshot::Scheduler> snapshots_;          // with workers: [snapshots] every
  bool samples_table_ = false;                              // runnel_samples exists (Start)
  int http_port_ = 0;
};

}  // namespace runnel::server
