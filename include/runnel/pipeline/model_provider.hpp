// The models a pipeline serves right now, shared by every worker of a process.
//
// A ModelSet is an immutable snapshot: the default model and, for keyed serving, one
// model per data type. The model stream (registry/model_stream.hpp) or a fixed file
// publishes snapshots; workers pick up a new one between batches (never inside one),
// so a batch is served by exactly one snapshot and a swap costs no request more than
// one batch of waiting.
//
// Thread safety: every member of ModelProvider may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runnel/core/mutex.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/pipeline_config.hpp"

namespace runnel::pipeline {

// Invocation statistics of one loaded model in this process (lock-free updates).
struct ModelStats {
  std::atomic<int64_t> invocations{0};  // Predict calls (one per batch or per type group)
  std::atomic<int64_t> rows{0};
  std::atomic<int64_t> total_ns{0};
  std::atomic<int64_t> min_ns{INT64_MAX};
  std::atomic<int64_t> max_ns{0};

  void Record(int64_t rows_scored, int64_t ns);
};

struct ServingModel {
  std::shared_ptr<const model::Model> model;
  std::string name;                      // registry name, or the file name in file mode
  int64_t version = 0;                   // registry version; 0 in file mode
  std::optional<std::string> data_type;  // keyed serving: the type it serves; nullopt: default
  std::string description;
  std::chrono::system_clock::time_point loaded_at = std::chrono::system_clock::now();
  std::shared_ptr<ModelStats> stats = std::make_shared<ModelStats>();

  // What results record: "needs@v3", or the file name and content hash in file mode.
  const std::string& label() const { return model->info().version; }
};

struct ModelSet {
  std::shared_ptr<const ServingModel> default_model;  // may be null (keyed only / none yet)
  std::map<std::string, std::shared_ptr<const ServingModel>> by_type;

  bool empty() const { return !default_model && by_type.empty(); }
  // The model for a record of `data_type` (nullopt: the record has none): its type's
  // model, else the default; null when neither exists.
  const ServingModel* For(const std::optional<std::string>& data_type) const;
  std::vector<std::shared_ptr<const ServingModel>> All() const;
};

class ModelProvider {
 public:
  ModelProvider() : current_(std::make_shared<const ModelSet>()) {}
  // A provider serving one fixed model (a file) forever.
  static std::shared_ptr<ModelProvider> Fixed(std::shared_ptr<const model::Model> model);

  std::shared_ptr<const ModelSet> Current() const;
  // Bumped by every Publish; workers compare it before each batch.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  void Publish(std::shared_ptr<const ModelSet> set);

 private:
  mutable Mutex mutex_;
  std::shared_ptr<const ModelSet> current_ GUARDED_BY(mutex_);
  std::atomic<uint64_t> generation_{0};
};

// What every model of the pipeline is loaded with: [model] tokenizer (read once here),
// max_tokens, labels_file. Throws the tokenizer's and labels file's errors.
model::LoadOptions ModelLoadOptions(const PipelineConfig& config);

// The one model file a pipeline serves without the registry: `override_path` (--model)
// when given, else [model].path, with ModelLoadOptions. Throws Error(InvalidInput)
// naming the pipeline file when neither names one, and LoadModel's errors.
std::shared_ptr<const model::Model> LoadFileModel(const PipelineConfig& config, const std::string& override_path);

}  // namespace runnel::pipeline
