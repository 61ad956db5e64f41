#include "runnel/pipeline/scorer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace runnel::pipeline {

// The model snapshot serving now, with one session per model; replaced between
// batches when the provider's generation moves.
struct BatchScorer::Models {
  explicit Models(std::shared_ptr<ModelProvider> p) : provider(std::move(p)) {}

  // Picks up a newly published model set. Every model was checked to fit the
  // pipeline before publication (or is checked here, for fixed files).
  void Sync(const PipelineConfig& config, const features::FeatureProgram& program) {
    const uint64_t now = provider->generation();
    if (now == generation) return;
    generation = now;
    set = provider->Current();
    std::map<const ServingModel*, std::unique_ptr<model::ModelSession>> next;
    plans.clear();
    for (const auto& serving : set->All()) {
      plans.emplace(serving.get(), OutputPlan::Resolve(config, program, *serving->model));
      auto it = sessions.find(serving.get());
      next[serving.get()] =
          it != sessions.end() ? std::move(it->second) : std::make_unique<model::ModelSession>(serving->model);
    }
    sessions = std::move(next);
  }

  std::shared_ptr<ModelProvider> provider;
  uint64_t generation = UINT64_MAX;
  std::shared_ptr<const ModelSet> set;
  std::map<const ServingModel*, std::unique_ptr<model::ModelSession>> sessions;
  std::map<const ServingModel*, OutputPlan> plans;  // how each model plugs in
};

// Buffers reused from batch to batch.
struct BatchScorer::Scratch {
  features::FeatureOutput features;
  std::vector<float> predictions;        // rows x [model].outputs, gathered from every model used
  std::vector<float> subset;             // feature rows of one model's group
  std::vector<std::string> text_subset;  // their text features
  std::vector<float> model_input;        // a named model's input columns
  std::vector<float> mapped;             // one group's outputs in the pipeline's order
};

BatchScorer::BatchScorer(const PipelineConfig& config, std::shared_ptr<ModelProvider> models)
    : config_(config),
      program_(features::FeatureProgram::Compile(config.features, config.file.string())),
      models_(std::make_unique<Models>(std::move(models))),
      scratch_(std::make_unique<Scratch>()) {
  inputs_.Reset(config.features.input_columns, 0, config.features.text_columns);
}

BatchScorer::~BatchScorer() = default;

void BatchScorer::Sync() {
  models_->Sync(config_, program_);
}

bool BatchScorer::empty() const {
  return !models_->set || models_->set->empty();
}

ScoredOutputs BatchScorer::Score(Verdicts& verdicts, std::span<const std::optional<std::string>> data_types,
                                 const std::function<std::string(size_t)>& label) {
  const size_t n = inputs_.rows;
  Scratch& scratch = *scratch_;
  program_.Evaluate(inputs_, scratch.features);
  // Each row's model (keyed serving: by its data type), then one Predict per model
  // over its rows, gathered into one rows x outputs matrix.
  std::vector<const ServingModel*> row_model(n, nullptr);
  std::map<const ServingModel*, std::vector<size_t>> groups;
  for (size_t i = 0; i < n; ++i) {
    if (verdicts.status[i]) continue;
    if (scratch.features.Failed(i)) {
      verdicts.Fail(i, kInvalidDataState, fmt::format("{}: {}", label(i), scratch.features.errors[i]));
      continue;
    }
    row_model[i] = models_->set->For(data_types[i]);
    if (row_model[i] == nullptr) {
      verdicts.Fail(i, kInvalidDataState,
                    data_types[i] ? fmt::format("{}: no model serves data type '{}' and there is no default model",
                                                label(i), *data_types[i])
                                  : fmt::format("{}: column '{}' is NULL and there is no default model", label(i),
                                                config_.model_type_column));
      continue;
    }
    groups[row_model[i]].push_back(i);
  }
  const size_t width = config_.model_outputs.size();
  scratch.predictions.assign(n * width, 0.0f);
  for (const auto& [serving, members] : groups) Predict(serving, members, width);
  ScoredOutputs out;
  out.values.assign(config_.output_columns.size(), std::vector<std::optional<double>>(n));
  out.labels.assign(config_.output_columns.size(), {});
  for (size_t o = 0; o < config_.output_columns.size(); ++o) {
    if (IsLabelOutput(config_, config_.output_columns[o])) out.labels[o].resize(n);
  }
  out.versions.assign(n, std::nullopt);
  for (size_t i = 0; i < n; ++i) {
    if (verdicts.status[i]) continue;
    if (std::isnan(scratch.predictions[i * width])) {
      verdicts.Fail(i, kInvalidDataState,
                    fmt::format("{}: {} made no prediction for this row (a missing or invalid input)", label(i),
                                row_model[i]->label()));
      continue;
    }
    verdicts.status[i] = RequestStatus::kDone;
    out.versions[i] = row_model[i]->label();
    const OutputPlan& plan = models_->plans.at(row_model[i]);
    for (size_t o = 0; o < plan.size(); ++o) {
      if (plan.IsLabel(o)) {
        out.labels[o][i] = plan.Label(o, i, scratch.predictions);
        continue;
      }
      const double v = plan.Value(o, i, scratch.predictions, scratch.features);
      if (!std::isnan(v)) out.values[o][i] = v;  // NaN: an output this model does not give
    }
  }
  return out;
}

// One Predict over the rows `members` of one model, into scratch.predictions.
void BatchScorer::Predict(const ServingModel* serving, const std::vector<size_t>& members, size_t width) {
  Scratch& scratch = *scratch_;
  const size_t feature_width = program_.width();
  const auto started = std::chrono::steady_clock::now();
  const size_t text_width = program_.text_width();
  std::span<const float> rows_in = scratch.features.matrix;
  std::span<const std::string> texts_in = scratch.features.texts;
  if (members.size() != inputs_.rows) {
    scratch.subset.resize(members.size() * feature_width);
    scratch.text_subset.resize(members.size() * text_width);
    for (size_t j = 0; j < members.size(); ++j) {
      std::copy_n(scratch.features.matrix.begin() + static_cast<std::ptrdiff_t>(members[j] * feature_width),
                  feature_width, scratch.subset.begin() + static_cast<std::ptrdiff_t>(j * feature_width));
      std::copy_n(scratch.features.texts.begin() + static_cast<std::ptrdiff_t>(members[j] * text_width), text_width,
                  scratch.text_subset.begin() + static_cast<std::ptrdiff_t>(j * text_width));
    }
    rows_in = scratch.subset;
    texts_in = scratch.text_subset;
  }
  const OutputPlan& plan = models_->plans.at(serving);
  auto out = models_->sessions.at(serving)->Predict(plan.ModelInput(rows_in, members.size(), scratch.model_input),
                                                    members.size(), texts_in);
  serving->stats->Record(
      static_cast<int64_t>(members.size()),
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
  scratch.mapped.resize(members.size() * width);
  plan.MapOutputs(out, members.size(), scratch.mapped.data());
  for (size_t j = 0; j < members.size(); ++j) {
    std::copy_n(scratch.mapped.begin() + static_cast<std::ptrdiff_t>(j * width), width,
                scratch.predictions.begin() + static_cast<std::ptrdiff_t>(members[j] * width));
  }
}

}  // namespace runnel::pipeline
