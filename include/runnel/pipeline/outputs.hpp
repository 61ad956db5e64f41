// How one model plugs into a pipeline, resolved once per model and checked to fit:
//   inputs  — positional models take the feature vector as it is; named models (PMML)
//             take the features whose names match their input fields (spaces,
//             underscores and case aside: "fixed acidity" is feature fixed_acidity);
//             with [model].inputs a graph model's inputs take the features named
//             there, input by input;
//   outputs — the pipeline's [model].outputs: positional models give them in order;
//             named models give the first (the predicted value) from their target and
//             the others by name ("probability_5"), NULL where the model has none;
//             with [model].class_from_argmax a positional model's predicted value is
//             the index of its largest output (a classifier's raw scores); with
//             [model].output_from each comes from a named output's element.
// Output columns then come from those model outputs or from derived features.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runnel/features/features.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/pipeline_config.hpp"

namespace runnel::pipeline {

class OutputPlan {
 public:
  // Throws Error(InvalidInput), naming both files, when the model does not fit: input
  // width or names, text inputs ([features] text), or output width / names.
  static OutputPlan Resolve(const PipelineConfig& config, const features::FeatureProgram& program,
                            const model::Model& model);

  // The model's input matrix from the feature matrix (rows x program width): the
  // features themselves, or the gathered columns (into `scratch`).
  std::span<const float> ModelInput(std::span<const float> features, size_t rows, std::vector<float>& scratch) const;
  // Model outputs (rows x model width) into the pipeline's model outputs (rows x
  // [model].outputs, NaN where the model has none), written at `dst`.
  void MapOutputs(std::span<const float> model_out, size_t rows, float* dst) const;

  size_t size() const { return sources_.size(); }
  // Whether output column `o` is a class label ([model].labels): read it with Label.
  bool IsLabel(size_t o) const { return sources_[o].from_model && !labels_[sources_[o].index].empty(); }
  // Output column `o` of row `r` as its label text, or nullopt when the model gave no
  // valid label index. Precondition: IsLabel(o).
  std::optional<std::string> Label(size_t o, size_t r, std::span<const float> mapped) const;
  // Output column `o` of row `r`, from the mapped predictions (rows x [model].outputs).
  // NaN for a model output this model does not give. Precondition: the row's features
  // did not fail.
  double Value(size_t o, size_t r, std::span<const float> mapped, const features::FeatureOutput& features) const {
    const Source& s = sources_[o];
    return s.from_model ? static_cast<double>(mapped[r * model_outputs_ + s.index]) : features.derived[s.index][r];
  }

 private:
  struct Source {
    bool from_model;
    size_t index;  // pipeline model output or derived feature
  };
  // The stages of Resolve, each for one kind of model: PMML fields matched to features
  // by name and outputs by name; positional outputs (or the argmax); [model].labels.
  // ([model] inputs and output_from are bound in outputs.cpp.)
  static std::vector<size_t> PmmlInputs(const PipelineConfig& config, const features::FeatureProgram& program,
                                        const model::Model& model);
  static std::vector<int> PmmlOutputs(const PipelineConfig& config, const model::Model& model);
  static std::vector<int> PositionalOutputs(const PipelineConfig& config, const model::Model& model);
  static std::vector<std::vector<std::string>> LabelsOf(const PipelineConfig& config, const model::Model& model,
                                                        const std::vector<int>& output_from);

  static constexpr int kNone = -1;
  static constexpr int kArgMax = -2;
  std::vector<Source> sources_;
  size_t model_outputs_ = 0;  // [model].outputs
  size_t model_width_ = 0;    // the model's own output width
  size_t feature_width_ = 0;
  std::vector<size_t> input_columns_;  // named models: feature column per model input
  std::vector<int> output_from_;       // per pipeline model output: model output, kNone or kArgMax
  std::vector<std::vector<std::string>> labels_;  // per pipeline model output: its labels ([model].labels)
};

}  // namespace runnel::pipeline
