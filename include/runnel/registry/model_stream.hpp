// The model stream of one process and pipeline: follows runnel_models and publishes
// what the pipeline should serve to a ModelProvider.
//
// On every change (pg_notify('runnel_models'), or a poll in case a notification was
// missed while reconnecting) it looks, per data type, for the newest version that is
// `pending` or `ready`. A pending version is validated here: loaded from its bytes and
// checked against the pipeline's features and outputs; the verdict is written back
// (`ready`, or `rejected` with the loader's error) and a rejected version never
// replaces what is serving. Loaded versions are published as one ModelSet; workers
// swap between batches. Once a second, this process's model state (what it has
// loaded, since when, invocation statistics) is written to runnel_model_state.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "runnel/features/features.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/registry/registry.hpp"

namespace runnel::registry {

struct ModelStreamOptions {
  std::chrono::milliseconds poll{2000};       // look even without a notification
  std::chrono::milliseconds heartbeat{1000};  // model state reports
  std::function<void(const std::string&)> log;
};

class ModelStream {
 public:
  // Precondition: config.model_name is set. `provider` is shared with the workers.
  ModelStream(const pipeline::PipelineConfig& config, std::string conninfo,
              std::shared_ptr<pipeline::ModelProvider> provider, ModelStreamOptions options = {});
  ~ModelStream();  // stops the thread
  ModelStream(const ModelStream&) = delete;
  ModelStream& operator=(const ModelStream&) = delete;

  // Seeds the registry from config.model_path when the name has no version, then
  // loads what is current, synchronously: on return the provider serves it (or is
  // empty when the registry holds nothing usable). Throws DatabaseError.
  void Start();
  // Starts following changes on a background thread (after Start).
  void Follow();
  void Stop();

  // One pass over the registry; returns whether the published set changed.
  // Called by the thread; tests call it directly. Throws DatabaseError.
  bool Refresh();
  // Writes this process's model state now.
  void ReportState();

 private:
  void Run();
  std::string ThreadName() const;
  std::unique_ptr<postgres::Connection> Open() const;
  std::shared_ptr<const pipeline::ServingModel> Validate(postgres::Connection& conn, ModelStatus status,
                                                         int64_t version, const std::optional<std::string>& data_type,
                                                         const std::string& description);

  pipeline::PipelineConfig config_;
  model::LoadOptions load_options_;  // the pipeline's tokenizer and labels, read once
  std::string conninfo_;
  std::shared_ptr<pipeline::ModelProvider> provider_;
  ModelStreamOptions options_;
  std::string process_;
  features::FeatureProgram program_;            // the pipeline's features, to check models against
  std::unique_ptr<postgres::Connection> conn_;  // used by one thread at a time
  std::map<int64_t, std::shared_ptr<const pipeline::ServingModel>> loaded_;  // by version
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace runnel::registry
