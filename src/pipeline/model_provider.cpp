#include "runnel/pipeline/model_provider.hpp"

#include <fmt/format.h>

#include "runnel/core/error.hpp"
#include "runnel/model/class_labels.hpp"

namespace runnel::pipeline {

void ModelStats::Record(int64_t rows_scored, int64_t ns) {
  invocations.fetch_add(1, std::memory_order_relaxed);
  rows.fetch_add(rows_scored, std::memory_order_relaxed);
  total_ns.fetch_add(ns, std::memory_order_relaxed);
  int64_t seen = min_ns.load(std::memory_order_relaxed);
  while (ns < seen && !min_ns.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
  }
  seen = max_ns.load(std::memory_order_relaxed);
  while (ns > seen && !max_ns.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
  }
}

const ServingModel* ModelSet::For(const std::optional<std::string>& data_type) const {
  if (data_type) {
    if (auto it = by_type.find(*data_type); it != by_type.end()) return it->second.get();
  }
  return default_model.get();
}

std::vector<std::shared_ptr<const ServingModel>> ModelSet::All() const {
  std::vector<std::shared_ptr<const ServingModel>> all;
  if (default_model) all.push_back(default_model);
  for (const auto& [type, model] : by_type) all.push_back(model);
  return all;
}

model::LoadOptions ModelLoadOptions(const PipelineConfig& config) {
  model::LoadOptions options;
  if (config.model_tokenizer) options.tokens.tokenizer = text::Tokenizer::Load(*config.model_tokenizer);
  options.tokens.max_tokens = config.model_max_tokens;
  if (config.model_labels_file) options.logit_labels = model::ReadClassLabels(*config.model_labels_file);
  return options;
}

std::shared_ptr<const model::Model> LoadFileModel(const PipelineConfig& config, const std::string& override_path) {
  if (!override_path.empty()) return model::LoadModel(override_path, ModelLoadOptions(config));
  if (config.model_path) return model::LoadModel(*config.model_path, ModelLoadOptions(config));
  throw Error(ErrorCode::InvalidInput,
              fmt::format("{} names no model: pass --model or set [model].path", config.file.string()));
}

std::shared_ptr<ModelProvider> ModelProvider::Fixed(std::shared_ptr<const model::Model> model) {
  auto serving = std::make_shared<ServingModel>();
  serving->name = model->info().source;
  serving->model = std::move(model);
  auto set = std::make_shared<ModelSet>();
  set->default_model = std::move(serving);
  auto provider = std::make_shared<ModelProvider>();
  provider->Publish(std::move(set));
  return provider;
}

std::shared_ptr<const ModelSet> ModelProvider::Current() const {
  MutexLock lock(mutex_);
  return current_;
}

void ModelProvider::Publish(std::shared_ptr<const ModelSet> set) {
  {
    MutexLock lock(mutex_);
    current_ = std::move(set);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace runnel::pipeline
