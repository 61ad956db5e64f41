#include "runnel/pipeline/outputs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"

namespace runnel::pipeline {
namespace {

std::string PortList(const std::vector<model::ModelPort>& ports) {
  std::string out;
  for (const auto& port : ports)
    out += fmt::format("{}{} ({} value{})", out.empty() ? "" : ", ", port.name, port.width, port.width == 1 ? "" : "s");
  return out;
}

// The feature column of a feature named in [model] inputs or by a PMML field: the
// [features] inputs entry of that name (spaces, underscores and case aside).
std::optional<size_t> FeatureNamed(const PipelineConfig& config, const std::string& name) {
  const std::string want = NormalizeColumnName(name);
  for (size_t f = 0; f < config.features.features.size(); ++f) {
    if (NormalizeColumnName(config.features.features[f]) == want) return f;
  }
  return std::nullopt;
}

// [model] inputs: the feature column of each of the model's input values, input by
// input in the model's order.
std::vector<size_t> BindInputs(const PipelineConfig& config, const features::FeatureProgram& program,
                               const model::Model& model) {
  const auto& source = model.info().source;
  const auto& ports = model.input_ports();
  if (ports.empty())
    throw Error(ErrorCode::InvalidInput,
                fmt::format("pipeline {} sets model.inputs, but {} ({}) does not name its "
                            "inputs that way",
                            config.file.string(), source, model::ModelFormatName(model.info().format)));
  if (program.width() != config.features.features.size())
    throw Error(ErrorCode::InvalidInput, fmt::format("pipeline {} feeds the model's inputs by name (model.inputs), so "
                                                     "it cannot expand features with one_hot",
                                                     config.file.string()));
  for (const auto& binding : config.model_inputs) {
    if (std::none_of(ports.begin(), ports.end(), [&](const model::ModelPort& p) { return p.name == binding.input; }))
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline {}: model.inputs names '{}', which {} does not take (its inputs: {})",
                              config.file.string(), binding.input, source, PortList(ports)));
  }
  std::vector<size_t> columns;
  for (const auto& port : ports) {
    auto binding = std::find_if(config.model_inputs.begin(), config.model_inputs.end(),
                                [&](const ModelInputBinding& b) { return b.input == port.name; });
    if (binding == config.model_inputs.end())
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline {}: model.inputs gives nothing for input '{}' of {} (its inputs: {})",
                              config.file.string(), port.name, source, PortList(ports)));
    if (binding->features.size() != port.width)
      throw Error(
          ErrorCode::InvalidInput,
          fmt::format("pipeline {}: model.inputs.{} names {} feature(s), but input '{}' of {} takes {} "
                      "value(s) a row",
                      config.file.string(), port.name, binding->features.size(), port.name, source, port.width));
    for (const auto& feature : binding->features) {
      const auto column = FeatureNamed(config, feature);
      if (!column)
        throw Error(ErrorCode::InvalidInput,
                    fmt::format("pipeline {}: model.inputs.{} names '{}', which is not one of [features] inputs ({})",
                                config.file.string(), port.name, feature, fmt::join(config.features.features, ", ")));
      columns.push_back(*column);
    }
  }
  return columns;
}

// [model] output_from: the model output value each of [model] outputs is taken from.
std::vector<int> BindOutputs(const PipelineConfig& config, const model::Model& model) {
  const auto& ports = model.output_ports();
  if (ports.empty())
    throw Error(ErrorCode::InvalidInput,
                fmt::format("pipeline {} sets model.output_from, but {} ({}) does not name its outputs that way",
                            config.file.string(), model.info().source, model::ModelFormatName(model.info().format)));
  std::vector<int> from;
  for (const auto& column : config.model_outputs) {
    const auto& bindings = config.model_output_from;
    auto binding =
        std::find_if(bindings.begin(), bindings.end(), [&](const ModelOutputBinding& b) { return b.column == column; });
    if (binding == bindings.end())  // LoadPipelineConfig refuses this; a config built in code may not
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline {}: model.output_from gives no source for '{}'", config.file.string(), column));
    size_t offset = 0;
    auto port = ports.begin();
    for (; port != ports.end() && port->name != binding->output; ++port) offset += port->width;
    if (port == ports.end())
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline {}: model.output_from.{} names '{}', which {} does not give (its outputs: {})",
                              config.file.string(), column, binding->output, model.info().source, PortList(ports)));
    if (binding->element >= port->width)
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline {}: model.output_from.{} takes element {} of '{}', which has {} value(s) a "
                              "row (from 0)",
                              config.file.string(), column, binding->element, binding->output, port->width));
    from.push_back(static_cast<int>(offset + binding->element));
  }
  return from;
}

}  // namespace

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
  const bool pmml = !model.input_names().empty();
  if (pmml && (!config.model_inputs.empty() || !config.model_output_from.empty()))
    throw Error(ErrorCode::InvalidInput,
                fmt::format("pipeline {} sets model.inputs or model.output_from, but {} is PMML, whose fields are "
                            "matched by name to the features and outputs themselves",
                            config.file.string(), model.info().source));
  OutputPlan plan;
  plan.model_outputs_ = config.model_outputs.size();
  plan.model_width_ = model.output_width();
  plan.feature_width_ = program.width();
  if (!config.model_inputs.empty()) {
    plan.input_columns_ = BindInputs(config, program, model);
  } else if (pmml) {
    plan.input_columns_ = PmmlInputs(config, program, model);
  } else if (model.input_width() != program.width()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{} takes {} inputs but pipeline {} produces {} features", model.info().source,
                            model.input_width(), config.file.string(), program.width()));
  }
  plan.output_from_ = !config.model_output_from.empty() ? BindOutputs(config, model)
                      : pmml                            ? PmmlOutputs(config, model)
                                                        : PositionalOutputs(config, model);
  plan.labels_ = LabelsOf(config, model, plan.output_from_);
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

std::vector<size_t> OutputPlan::PmmlInputs(const PipelineConfig& config, const features::FeatureProgram& program,
                                           const model::Model& model) {
  if (program.width() != config.features.features.size()) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{} names its inputs, so pipeline {} cannot expand features with "
                                                     "one_hot",
                                                     model.info().source, config.file.string()));
  }
  std::vector<size_t> columns;
  for (const auto& input : model.input_names()) {
    const auto found = FeatureNamed(config, input);
    if (!found) {
      throw Error(
          ErrorCode::InvalidInput,
          fmt::format("{} needs the field '{}', which no feature of pipeline {} provides (features: {})",
                      model.info().source, input, config.file.string(), fmt::join(config.features.features, ", ")));
    }
    columns.push_back(*found);
  }
  return columns;
}

std::vector<int> OutputPlan::PmmlOutputs(const PipelineConfig& config, const model::Model& model) {
  std::vector<int> from;
  for (size_t o = 0; o < config.model_outputs.size(); ++o) {
    int index = kNone;
    if (o == 0) {
      index = 0;  // the predicted value, whatever the target is called
    } else {
      const std::string want = NormalizeColumnName(config.model_outputs[o]);
      for (size_t m = 1; m < model.output_names().size(); ++m) {
        if (NormalizeColumnName(model.output_names()[m]) == want) index = static_cast<int>(m);
      }
    }
    from.push_back(index);
  }
  return from;
}

std::vector<int> OutputPlan::PositionalOutputs(const PipelineConfig& config, const model::Model& model) {
  std::vector<int> from;
  if (model.output_width() == config.model_outputs.size()) {
    for (size_t o = 0; o < config.model_outputs.size(); ++o) from.push_back(static_cast<int>(o));
  } else if (config.class_from_argmax && model.output_width() > 1) {
    from.assign(config.model_outputs.size(), kNone);
    from[0] = kArgMax;
  } else {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{} produces {} outputs but pipeline {} names {} (model.outputs)", model.info().source,
                            model.output_width(), config.file.string(), config.model_outputs.size()));
  }
  return from;
}

std::vector<std::vector<std::string>> OutputPlan::LabelsOf(const PipelineConfig& config, const model::Model& model,
                                                           const std::vector<int>& output_from) {
  std::vector<std::vector<std::string>> labels(config.model_outputs.size());
  for (size_t o = 0; o < config.model_outputs.size(); ++o) {
    if (!IsLabelOutput(config, config.model_outputs[o])) continue;
    const int from = output_from[o];
    const auto given = from >= 0 ? model.output_labels(static_cast<size_t>(from)) : std::span<const std::string>();
    if (given.empty()) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline {} lists '{}' in model.labels, but {} gives no class labels there",
                              config.file.string(), config.model_outputs[o], model.info().source));
    }
    labels[o].assign(given.begin(), given.end());
  }
  return labels;
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
