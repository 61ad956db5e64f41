// Declarative features: expressions over input columns, parsed once and evaluated over
// whole columnar batches.
//
// Grammar:   expr := term (('+' | '-') term)*      term := unary (('*' | '/') unary)*
//            unary := '-' unary | primary          primary := number | name | name '(' args ')' | '(' expr ')'
// Functions: ln, log10, exp, sqrt, abs (1 argument); pow(x, y); min/max (2 or more);
//            clip(x, lo, hi); box_cox(x, lambda) = (x^lambda - 1) / lambda (ln x when
//            lambda = 0); one_hot(x, n) expands to n columns (x == 0 .. n-1), top level only.
// Names refer to input columns or to earlier derived features. Text columns feed
// text features (text.hpp), a model's string inputs, beside the numeric vector.
//
// Invalid values (NULL or non-finite inputs, ln/log10/box_cox of x <= 0, sqrt of x < 0,
// division by zero, a non-finite result, a one_hot code out of range) mark the row
// failed with the feature's name and the value; the other rows proceed. With
// missing_as_nan (for models that take missing values, tree ensembles), a NULL or NaN
// input is NaN instead, NaN flows through the expressions, and a NaN feature reaches
// the model as missing; the other invalid values still fail the row.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runnel/core/batch.hpp"
#include "runnel/features/text.hpp"

namespace runnel::features {

struct DerivedSpec {
  std::string name;
  std::string expression;
};

struct FeatureSpec {
  std::vector<std::string> input_columns;  // numeric columns read from the source
  std::vector<DerivedSpec> derived;        // named, in order; may be outputs too
  std::vector<std::string> features;       // the model's input vector, in order
  std::vector<double> means;               // standard scaling (x - mean) / scale, per
  std::vector<double> scales;              //   feature column; both empty for none
  bool missing_as_nan = false;             // NULL inputs are missing values (NaN), not errors
  std::vector<std::string> text_columns;   // text columns read from the source
  std::vector<std::string> text_features;  // the model's string inputs, in order (text.hpp)
};

struct ExpressionNode;  // defined in the implementation

// Results of evaluating a batch. Buffers are reused across calls.
struct FeatureOutput {
  size_t rows = 0;
  size_t width = 0;
  std::vector<float> matrix;                 // rows x width, row-major: the model input
  std::vector<std::string> texts;            // rows x text width: the model's string inputs
  std::vector<std::vector<double>> derived;  // per derived feature, per row
  std::vector<std::string> errors;           // per row; empty when the row is valid

  bool Failed(size_t row) const { return !errors[row].empty(); }
};

class FeatureProgram {
 public:
  // Parses and checks every expression. Throws Error(InvalidInput) naming `context`
  // (the pipeline file), the feature and the position of the problem.
  static FeatureProgram Compile(const FeatureSpec& spec, const std::string& context);

  FeatureProgram(FeatureProgram&&) noexcept;
  FeatureProgram& operator=(FeatureProgram&&) noexcept;
  ~FeatureProgram();

  size_t width() const { return width_; }  // model input width after one_hot expansion
  size_t text_width() const { return spec_.text_features.size(); }  // the model's string inputs
  const std::vector<std::string>& input_columns() const { return spec_.input_columns; }
  const std::vector<std::string>& text_columns() const { return spec_.text_columns; }
  const std::vector<DerivedSpec>& derived() const { return spec_.derived; }
  std::optional<size_t> DerivedIndex(std::string_view name) const;

  // Evaluates every row of `batch`, which must hold the input columns (by name).
  // Thread safety: const and reentrant; each thread passes its own `out`.
  void Evaluate(const ColumnBatch& batch, FeatureOutput& out) const;

 private:
  FeatureProgram() = default;

  struct Compiled;
  FeatureSpec spec_;
  std::unique_ptr<Compiled> compiled_;
  TextProgram text_;
  size_t width_ = 0;
};

}  // namespace runnel::features
