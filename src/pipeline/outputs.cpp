#include "runnel/pipeline/outputs.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "runnel/core/error.hpp"

namespace runnel::pipeline {

OutputPlan OutputPlan::Resolve(const PipelineConfig& config, const features::FeatureProgram& program,
                               const model::Model& model) {
  if (model.input_width() != program.width()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{} takes {} inputs but pipeline {} produces {} features", model.info().source,
                            model.input_width(), config.file.string(), program.width()));
  }
  if (model.output_width() != config.model_outputs.size()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{} produces {} outputs but pipeline {} names {} (model.outputs)", model.info().source,
                            model.output_width(), config.file.string(), config.model_outputs.size()));
  }
  OutputPlan plan;
  plan.model_width_ = model.output_width();
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

}  // namespace runnel::pipeline
