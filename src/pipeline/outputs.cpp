#include "runnel/pipeline/outputs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"

namespace runnel::pipeline {

OutputPlan OutputPlan::Resolve(const PipelineConfig& config, const features::FeatureProgram& program,
                               const model::Model& model) {
  if (config.features.missing_as_nan && model.is_graph()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("pipeline {} sets features.missing = \"nan\", but {} ({}) cannot take missing values: "
                            "tree ensembles and PMML models can",
                            config.file.string(), model.info().source, model::ModelFormatName(model.info().format)));
  }
  if (model.text_width() != program.text_width()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{} takes {} text input(s) but pipeline {} produces {} text feature(s) ([features] text)",
                            model.info().source, model.text_width(), config.file.string(), program.text_width()));
  }
  OutputPlan plan;
  plan.model_outputs_ = config.model_outputs.size();
  plan.model_width_ = model.output_width();
  plan.feature_width_ = program.width();
  const bool named = !model.input_names().empty();
  if (named) {
    if (program.width() != config.features.features.size()) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{} names its inputs, so pipeline {} cannot expand features with one_hot",
                              model.info().source, config.file.string()));
    }
    for (const auto& input : model.input_names()) {
      const std::string want = NormalizeColumnName(input);
      size_t found = config.features.features.size();
      for (size_t f = 0; f < config.features.features.size(); ++f) {
        if (NormalizeColumnName(config.features.features[f]) == want) found = f;
      }
      if (found == config.features.features.size()) {
        throw Error(
            ErrorCode::InvalidInput,
            fmt::format("{} needs the field '{}', which no feature of pipeline {} provides (features: {})",
                        model.info().source, input, config.file.string(), fmt::join(config.features.features, ", ")));
      }
      plan.input_columns_.push_back(found);
    }
    for (size_t o = 0; o < config.model_outputs.size(); ++o) {
      int from = kNone;
      if (o == 0) {
        from = 0;  // the predicted value, whatever the target is called
      } else {
        const std::string want = NormalizeColumnName(config.model_outputs[o]);
        for (size_t m = 1; m < model.output_names().size(); ++m) {
          if (NormalizeColumnName(model.output_names()[m]) == want) from = static_cast<int>(m);
        }
      }
      plan.output_from_.push_back(from);
    }
  } else {
    if (model.input_width() != program.width()) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{} takes {} inputs but pipeline {} produces {} features", model.info().source,
                              model.input_width(), config.file.string(), program.width()));
    }
    if (model.output_width() == config.model_outputs.size()) {
      for (size_t o = 0; o < config.model_outputs.size(); ++o) plan.output_from_.push_back(static_cast<int>(o));
    } else if (config.class_from_argmax && model.output_width() > 1) {
      plan.output_from_.assign(config.model_outputs.size(), kNone);
      plan.output_from_[0] = kArgMax;
    } else {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{} produces {} outputs but pipeline {} names {} (model.outputs)", model.info().source,
                              model.output_width(), config.file.string(), config.model_outputs.size()));
    }
  }
  plan.labels_.resize(config.model_outputs.size());
  for (size_t o = 0; o < config.model_outputs.size(); ++o) {
    if (!IsLabelOutput(config, config.model_outputs[o])) continue;
    const int from = plan.output_from_[o];
    const auto labels = from >= 0 ? model.output_labels(static_cast<size_t>(from)) : std::span<const std::string>();
    if (labels.empty()) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline {} lists '{}' in model.labels, but {} gives no class labels there",
                              config.file.string(), config.model_outputs[o], model.info().source));
    }
    plan.labels_[o].assign(labels.begin(), labels.end());
  }
  for (const auto& column : config.output_columns) {
    auto it = std::find(config.model_outputs.begin(), config.model_outputs.end(), column);
    if (it != config.model_outputs.end()) {
      plan.sources_.push_back({true, static_cast<size_t>(it - config.model_outputs.begin())});
    } else {
      // LoadPipelineConfig checked that every output is a model output or derived.
      plan.sources_.push_back({false, *program.DerivedIndex(column)});
    }
  }
  return plan;
}

std::span<const float> OutputPlan::ModelInput(std::span<const float> features, size_t rows,
                                              std::vector<float>& scratch) const {
  if (input_columns_.empty()) return features.first(rows * feature_width_);
  const size_t width = input_columns_.size();
  scratch.resize(rows * width);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < width; ++c) scratch[r * width + c] = features[r * feature_width_ + input_columns_[c]];
  }
  return {scratch.data(), rows * width};
}

std::optional<std::string> OutputPlan::Label(size_t o, size_t r, std::span<const float> mapped) const {
  const auto& labels = labels_[sources_[o].index];
  const float v = mapped[r * model_outputs_ + sources_[o].index];
  if (!(v >= 0 && v < static_cast<float>(labels.size())) || v != std::floor(v)) return std::nullopt;
  return labels[static_cast<size_t>(v)];
}

void OutputPlan::MapOutputs(std::span<const float> model_out, size_t rows, float* dst) const {
  for (size_t r = 0; r < rows; ++r) {
    const float* in = model_out.data() + r * model_width_;
    float* out = dst + r * model_outputs_;
    for (size_t o = 0; o < model_outputs_; ++o) {
      const int from = output_from_[o];
      if (from >= 0) {
        out[o] = in[from];
      } else if (from == kArgMax) {
        out[o] = static_cast<float>(std::max_element(in, in + model_width_) - in);
      } else {
        out[o] = std::numeric_limits<float>::quiet_NaN();
      }
    }
  }
}

}  // namespace runnel::pipeline
