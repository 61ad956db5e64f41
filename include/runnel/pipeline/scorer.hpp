// Scoring one batch of requests: the pipeline's features, then each request's model
// (keyed serving: by its data type), then the outputs in the pipeline's order. Shared
// by the workers that serve a table's queue (worker.hpp) and by JetStream messages
// scored without becoming rows (server/jetstream_ingest.hpp, mode "direct").
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/core/batch.hpp"
#include "runnel/features/features.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/outputs.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/request_status.hpp"

namespace runnel::pipeline {

// SQLSTATEs of the failures Runnel decides itself (PostgreSQL's codes).
inline constexpr const char* kNullClientState = "22004";   // the quota's client column is NULL
inline constexpr const char* kInvalidDataState = "22000";  // features or model
inline constexpr const char* kOutOfRangeState = "22003";   // a value its column cannot hold

// What has been decided per request of a batch.
struct Verdicts {
  std::vector<std::optional<RequestStatus>> status;  // nullopt: not decided yet
  std::vector<std::optional<std::string>> error, sqlstate;

  void Resize(size_t n) {
    status.assign(n, std::nullopt);
    error.assign(n, std::nullopt);
    sqlstate.assign(n, std::nullopt);
  }
  void Fail(size_t i, std::string_view state, std::string message) {
    status[i] = RequestStatus::kFailed;
    sqlstate[i] = std::string(state);
    error[i] = std::move(message);
  }
};

// What the model said per request.
struct ScoredOutputs {
  std::vector<std::vector<std::optional<double>>> values;       // [output column][request]; none for labels
  std::vector<std::vector<std::optional<std::string>>> labels;  // [output column][request]: label columns only
  std::vector<std::optional<std::string>> versions;             // the model that scored it
};

// Features and models over batches, reusing its buffers from batch to batch. Not
// thread-safe: one per serving thread.
class BatchScorer {
 public:
  // Throws Error(Config) when the features do not compile. `models` is shared with
  // the model stream.
  BatchScorer(const PipelineConfig& config, std::shared_ptr<ModelProvider> models);
  ~BatchScorer();
  BatchScorer(const BatchScorer&) = delete;
  BatchScorer& operator=(const BatchScorer&) = delete;

  // Takes the provider's current model set if it moved (between batches only: one
  // batch, one model snapshot). Throws Error(InvalidInput) when a fixed model does
  // not fit the pipeline.
  void Sync();
  // No model to serve with yet (the registry has none ready).
  bool empty() const;

  // The batch's input columns (the pipeline's numeric and text inputs): filled by the
  // caller, then scored.
  ColumnBatch& inputs() { return inputs_; }

  // Scores each request of inputs() without a verdict: done with its outputs, or
  // failed (kInvalidDataState) when its features are invalid, no model serves its
  // data type (`data_types[i]`), or the model made no prediction. `label(i)` names
  // request i in those messages.
  ScoredOutputs Score(Verdicts& verdicts, std::span<const std::optional<std::string>> data_types,
                      const std::function<std::string(size_t)>& label);

 private:
  struct Models;
  struct Scratch;
  void Predict(const ServingModel* serving, const std::vector<size_t>& members, size_t width);

  const PipelineConfig& config_;
  features::FeatureProgram program_;
  std::unique_ptr<Models> models_;
  std::unique_ptr<Scratch> scratch_;
  ColumnBatch inputs_;
};

}  // namespace runnel::pipeline
