// PMML 4.x models: parsed once with pugixml into compiled, flat structures and scored
// over whole batches.
//
// Format read: a PMML document (<PMML> root, any 4.x version) holding a DataDictionary,
// an optional TransformationDictionary and one model element: RegressionModel,
// GeneralRegressionModel (regression, generalizedLinear, multinomialLogistic),
// TreeModel, NeuralNetwork or MiningModel (Segmentation, possibly nested). Each model
// may carry MiningSchema (usage types, missing/invalid value treatment, outliers),
// LocalTransformations, Targets and Output. Expressions: FieldRef, Constant,
// NormContinuous, NormDiscrete, Discretize, MapValues (InlineTable), Apply with the
// PMML built-in functions. Anything else is refused with an error naming the element
// and its line.
//
// Values: every field is a double. Continuous fields take the input as is; a
// categorical field's value is its numeric label when the label is a number (wine
// quality "5" is 5.0), otherwise the category's position in the DataField's <Value>
// list. A missing value is NaN.
//
// Outputs, per row: the predicted value (regression: the number; classification: the
// winning label's value as above), then for classification one probability per class
// in DataField order. NaN when the model makes no prediction for the row (a missing
// value with no replacement, an invalid value with returnInvalid, no true node).
//
// Thread safety: a PmmlModel is immutable after Load; Score may run concurrently.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::model::pmml {

struct Document;  // the compiled model, defined in the implementation

class PmmlModel {
 public:
  // Parses and compiles. Throws Error(Model) naming `source`, the element and its
  // line for malformed or unsupported input; never crashes on any bytes.
  static std::shared_ptr<const PmmlModel> Load(std::string_view bytes, const std::string& source);
  ~PmmlModel();

  // The active input fields, in the order Score expects their columns.
  const std::vector<std::string>& input_names() const { return input_names_; }
  // The target's name ("quality"), then "probability_<label>" per class.
  const std::vector<std::string>& output_names() const { return output_names_; }
  bool classification() const { return classification_; }
  const std::vector<std::string>& class_labels() const { return class_labels_; }
  // One line per model/segment, for `runnel model inspect`.
  std::vector<std::string> Describe() const;
  std::string producer() const { return producer_; }

  // input: rows x input_names().size() (NaN = missing), row-major; output: rows x
  // output_names().size().
  void Score(std::span<const float> input, size_t rows, std::span<float> output) const;
  // The same for one row of doubles, evaluated straight from the compiled structure
  // without batching: the reference Score is tested against.
  void ScoreRow(std::span<const double> input, std::span<double> output) const;

 private:
  PmmlModel() = default;

  std::unique_ptr<Document> doc_;
  std::vector<std::string> input_names_;
  std::vector<std::string> output_names_;
  std::vector<std::string> class_labels_;
  bool classification_ = false;
  std::string producer_;
};

}  // namespace runnel::model::pmml
