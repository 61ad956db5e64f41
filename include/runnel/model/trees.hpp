// Tree ensembles (gradient boosting, random forests) compiled into one flat array of
// nodes and scored over whole batches. Loaders (XGBoost's JSON model format,
// xgboost_loader.cpp) build a TreeEnsemble from Trees; the ensemble checks every index
// once, so scoring never leaves the arrays whatever the file said.
//
// Semantics (XGBoost's): at a split, a row goes left when its feature value is less
// than the threshold (both float32), right otherwise; a missing value (NaN) goes the
// node's default way. A row's margin for output group g is base_margin[g] plus the
// leaf values of every tree of group g; the transform then turns margins into outputs.
//
// Thread safety: immutable after construction; Score and ScoreRow may run concurrently.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace runnel::model::trees {

// What turns a row's margins into its outputs.
enum class Transform {
  kIdentity,  // regression, raw margins
  kSigmoid,   // binary:logistic, reg:logistic: one probability
  kExp,       // count:poisson, reg:gamma, reg:tweedie
  kSoftmax,   // multi:softprob: one probability per class
  kArgMax,    // multi:softmax: the class index
};

// One tree as a loader reads it: node i splits on feature[i] at threshold[i] (its
// children left[i], right[i]) or, when left[i] is -1, is a leaf of value threshold[i].
struct Tree {
  std::vector<int32_t> left, right, feature;
  std::vector<float> threshold;
  std::vector<uint8_t> default_left;
  int32_t group = 0;  // the output group (class) it adds to
};

class TreeEnsemble {
 public:
  // Checks and compiles: every array of a tree as long as the others, children after
  // their parent (so every walk ends) and inside the tree, features below
  // `features`, groups below the number of base margins. Throws Error(Model) naming
  // `source` and the tree and node at fault.
  TreeEnsemble(const std::vector<Tree>& trees, size_t features, std::vector<float> base_margin, Transform transform,
               const std::string& source);

  size_t input_width() const { return features_; }
  size_t groups() const { return base_margin_.size(); }
  // Outputs per row: one per group, except kArgMax and kSigmoid/kExp of one group: one.
  size_t output_width() const { return transform_ == Transform::kArgMax ? 1 : groups(); }
  size_t trees() const { return roots_.size(); }
  size_t nodes() const { return nodes_.size(); }
  size_t max_depth() const { return max_depth_; }
  Transform transform() const { return transform_; }

  // input: rows x input_width() (NaN: missing), row-major; output: rows x
  // output_width(). Walks blocks of rows through one tree at a time.
  void Score(std::span<const float> input, size_t rows, std::span<float> output) const;
  // One row, one tree after the other straight from the arrays: the reference that
  // Score is tested against.
  void ScoreRow(std::span<const float> input, std::span<float> output) const;

 private:
  struct Node {
    int32_t feature;  // -1: a leaf
    float value;      // the threshold, or the leaf's value
    int32_t left;     // absolute indices into nodes_
    int32_t right;
    int32_t missing;  // left or right
  };
  int32_t Leaf(int32_t root, const float* row) const;
  void Finish(std::span<float> margins, float* out) const;

  std::vector<Node> nodes_;
  std::vector<int32_t> roots_;
  std::vector<int32_t> groups_;  // per tree
  std::vector<float> base_margin_;
  size_t features_ = 0;
  size_t max_depth_ = 0;
  Transform transform_ = Transform::kIdentity;
};

}  // namespace runnel::model::trees
