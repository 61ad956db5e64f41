// Where a pipeline's output columns come from — a model output or a derived feature —
// resolved once against a model, which is checked to fit the pipeline's features.
#pragma once

#include <span>
#include <vector>

#include "runnel/features/features.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/pipeline_config.hpp"

namespace runnel::pipeline {

class OutputPlan {
 public:
  // Throws Error(InvalidInput), naming both files, when the model's input width is not
  // the features' width or its output width is not the number of model.outputs.
  static OutputPlan Resolve(const PipelineConfig& config, const features::FeatureProgram& program,
                            const model::Model& model);

  size_t size() const { return sources_.size(); }
  // Output column `o` of row `r`. Precondition: the row's features did not fail.
  double Value(size_t o, size_t r, std::span<const float> predictions, const features::FeatureOutput& features) const {
    const Source& s = sources_[o];
    return s.from_model ? static_cast<double>(predictions[r * model_width_ + s.index]) : features.derived[s.index][r];
  }

 private:
  struct Source {
    bool from_model;
    size_t index;  // model output or derived feature
  };
  std::vector<Source> sources_;
  size_t model_width_ = 0;
};

}  // namespace runnel::pipeline
