// Tree ensembles (gradient boosting, random forests) compiled into one flat array of
// nodes and scored over whole batches. Loaders (XGBoost's JSON model format,
// xgboost_loader.cpp; ONNX's ai.onnx.ml TreeEnsembleRegressor and
// TreeEnsembleClassifier, onnx_trees.cpp) build a TreeEnsemble from Trees; the
// ensemble checks every index once, so scoring never leaves the arrays whatever the
// file said.
//
// Semantics: at a split, a row takes the node's true branch (`left`) when its feature
// value compares to the threshold as the node's mode says (XGBoost: less than), its
// false branch otherwise; a missing value (NaN) takes the node's default branch. A
// leaf adds its weights to output groups. A row's margin for group g is base_margin[g]
// plus (kSum) or plus the mean over the trees of (kAverage) what the leaves it reaches
// add to g; the transform then turns margins into outputs.
//
// Thread safety: immutable after construction; Score and ScoreRow may run concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace runnel::tensor::trees {

// What turns a row's margins into its outputs.
enum class Transform {
  kIdentity,     // regression, raw margins
  kSigmoid,      // binary:logistic, ONNX LOGISTIC: each margin's sigmoid
  kExp,          // count:poisson, reg:gamma, reg:tweedie
  kSoftmax,      // multi:softprob, ONNX SOFTMAX: one probability per class
  kSoftmaxZero,  // ONNX SOFTMAX_ZERO: softmax over the non-zero margins, zeros stay 0
  kArgMax,       // multi:softmax: the class index
};

enum class Aggregate { kSum, kAverage };

// How a split compares a row's value x with the threshold t to take the true branch.
enum class Mode : uint8_t { kLess, kLessEqual, kGreater, kGreaterEqual, kEqual, kNotEqual };

// One tree as a loader reads it. Node i is a leaf when left[i] is -1; otherwise it
// splits on feature[i] at threshold[i] by mode[i] (all kLess when `mode` is empty),
// true branch left[i], false branch right[i], a missing value to left[i] when
// default_left[i].
struct Tree {
  std::vector<int32_t> left, right, feature;
  std::vector<float> threshold;
  std::vector<uint8_t> default_left;
  std::vector<Mode> mode;
  // What leaves add: when empty, leaf i adds threshold[i] to `group` (XGBoost);
  // otherwise every entry adds `value` to `group` at leaf `node` (ONNX).
  struct Weight {
    int32_t node;
    int32_t group;
    float value;
  };
  std::vector<Weight> weights;
  int32_t group = 0;
};

// A classifier's head on top of the margins (ONNX TreeEnsembleClassifier): outputs
// become the label, then one probability per class.
struct ClassifierHead {
  std::vector<float> labels;  // per class: its int64 label, or its index for string labels
  std::vector<std::string> label_names;  // string labels, in that order; empty for int64 labels
  // Binary with one score column (the positive class's): probabilities are [1 - p, p].
  bool single_score = false;
};

class TreeEnsemble {
 public:
  // Checks and compiles: every array of a tree as long as the others, children after
  // their parent (so every walk ends) and inside the tree, features below
  // `features`, groups below the number of base margins. Throws Error(Model) naming
  // `source` and the tree and node at fault.
  TreeEnsemble(const std::vector<Tree>& trees, size_t features, std::vector<float> base_margin, Transform transform,
               const std::string& source, Aggregate aggregate = Aggregate::kSum,
               std::optional<ClassifierHead> head = std::nullopt);

  size_t input_width() const { return features_; }
  size_t groups() const { return base_margin_.size(); }
  // Outputs per row: one per group, except kArgMax: one; a classifier: its label,
  // then one probability per class.
  size_t output_width() const {
    if (head_) return 1 + head_->labels.size();
    return transform_ == Transform::kArgMax ? 1 : groups();
  }
  const std::optional<ClassifierHead>& head() const { return head_; }
  size_t trees() const { return roots_.size(); }
  size_t nodes() const { return nodes_.size(); }
  size_t max_depth() const { return max_depth_; }
  Transform transform() const { return transform_; }

  // input: rows x input_width() (NaN: missing), row-major; output: rows x
  // output_width(). Walks kLanes rows of a block through one tree at a time, or, for
  // fewer than kFewRows rows, kLanes trees of one row at a time.
  void Score(std::span<const float> input, size_t rows, std::span<float> output) const;
  // One row, one tree after the other straight from the arrays: the reference that
  // Score is tested against.
  void ScoreRow(std::span<const float> input, std::span<float> output) const;

 private:
  // 16 bytes. Nodes are renumbered breadth-first with siblings side by side: a
  // split's false branch is always left + 1.
  struct Node {
    int32_t feature;  // >= 0: a split; a leaf: -1 - (its number of weights)
    float value;      // the threshold
    int32_t left;     // the true branch (absolute index into nodes_); a leaf: its first weight
    uint8_t missing_left;
    Mode mode;
  };
  struct Weight {
    int32_t group;
    float value;
  };
  void AddTree(const Tree& tree, size_t index, const std::string& source);
  // Walks `count` (at most kLanes) lanes down together, one level at a time (their
  // loads overlap): lane l starts at node starts[l] with row rows[l], and ends at the
  // leaf leaves[l].
  static constexpr size_t kLanes = 16;
  static constexpr size_t kFewRows = 8;  // fewer rows: lanes are trees, not rows
  template <bool kAnyMode>
  void Walk(const int32_t* starts, const float* const* rows, size_t count, int32_t* leaves) const;
  void WalkLanes(const int32_t* starts, const float* const* rows, size_t count, int32_t* leaves) const;
  void AddLeaf(const Node& leaf, float* margins) const;
  void Finish(std::span<float> margins, float* out) const;
  void Transformed(std::span<float> margins, float* out) const;

  std::vector<Node> nodes_;
  bool any_mode_ = false;  // a split compares other than by < (XGBoost) or <= (scikit-learn)
  std::vector<Weight> weights_;
  std::vector<int32_t> roots_;
  std::vector<float> base_margin_;
  size_t features_ = 0;
  size_t max_depth_ = 0;
  Transform transform_ = Transform::kIdentity;
  Aggregate aggregate_ = Aggregate::kSum;
  std::optional<ClassifierHead> head_;
};

}  // namespace runnel::tensor::trees
