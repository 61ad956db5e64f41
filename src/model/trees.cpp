#include "runnel/model/trees.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "runnel/core/error.hpp"

namespace runnel::model::trees {

namespace {

[[noreturn]] void Refuse(const std::string& source, size_t tree, const std::string& what) {
  throw Error(ErrorCode::Model, fmt::format("{}: tree {}: {}", source, tree, what));
}

// The depth of a tree whose children come after their parents (checked first).
size_t Depth(const Tree& tree) {
  std::vector<size_t> depth(tree.left.size(), 0);
  size_t deepest = 0;
  for (size_t i = 0; i < tree.left.size(); ++i) {
    deepest = std::max(deepest, depth[i]);
    if (tree.left[i] < 0) continue;
    depth[static_cast<size_t>(tree.left[i])] = depth[i] + 1;
    depth[static_cast<size_t>(tree.right[i])] = depth[i] + 1;
  }
  return deepest;
}

void CheckShape(const Tree& tree, size_t index, size_t features, const std::string& source) {
  const size_t n = tree.left.size();
  if (n == 0) Refuse(source, index, "has no node");
  if (tree.right.size() != n || tree.feature.size() != n || tree.threshold.size() != n ||
      tree.default_left.size() != n || (!tree.mode.empty() && tree.mode.size() != n)) {
    Refuse(source, index,
           fmt::format("its node arrays differ in length (left {}, right {}, feature {}, threshold {}, default {}, "
                       "mode {})",
                       n, tree.right.size(), tree.feature.size(), tree.threshold.size(), tree.default_left.size(),
                       tree.mode.size()));
  }
  std::vector<uint8_t> reached(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (tree.left[i] == -1) continue;  // a leaf
    const auto left = tree.left[i], right = tree.right[i];
    // Children after their parent: every walk moves forward, so it ends.
    if (left <= static_cast<int32_t>(i) || right <= static_cast<int32_t>(i) || static_cast<size_t>(left) >= n ||
        static_cast<size_t>(right) >= n) {
      Refuse(source, index,
             fmt::format("node {} has children {} and {}, outside {}..{}", i, left, right, i + 1, n - 1));
    }
    if (tree.feature[i] < 0 || static_cast<size_t>(tree.feature[i]) >= features)
      Refuse(source, index,
             fmt::format("node {} splits on feature {}, but the model has {}", i, tree.feature[i], features));
    if (std::isnan(tree.threshold[i])) Refuse(source, index, fmt::format("node {} has a NaN threshold", i));
    if (left == right || reached[static_cast<size_t>(left)]++ || reached[static_cast<size_t>(right)]++)
      Refuse(source, index, fmt::format("node {} shares a child with another node", i));
  }
}

}  // namespace

TreeEnsemble::TreeEnsemble(const std::vector<Tree>& trees, size_t features, std::vector<float> base_margin,
                           Transform transform, const std::string& source, Aggregate aggregate,
                           std::optional<ClassifierHead> head)
    : base_margin_(std::move(base_margin)),
      features_(features),
      transform_(transform),
      aggregate_(aggregate),
      head_(std::move(head)) {
  if (head_) {
    const size_t scores = head_->single_score ? 2 : groups();
    if (head_->labels.size() != scores || (head_->single_score && groups() != 1) || transform_ == Transform::kArgMax)
      throw Error(ErrorCode::Model,
                  fmt::format("{}: {} class labels for {} score columns", source, head_->labels.size(), groups()));
  }
  if (base_margin_.empty()) throw Error(ErrorCode::Model, fmt::format("{}: the model has no output", source));
  if (features_ == 0) throw Error(ErrorCode::Model, fmt::format("{}: the model takes no feature", source));
  if (trees.empty()) throw Error(ErrorCode::Model, fmt::format("{}: the model has no tree", source));
  for (size_t t = 0; t < trees.size(); ++t) AddTree(trees[t], t, source);
}

// Checks one tree and appends its nodes, and its leaves' weights, to the arrays.
void TreeEnsemble::AddTree(const Tree& tree, size_t index, const std::string& source) {
  CheckShape(tree, index, features_, source);
  const size_t n = tree.left.size();
  if (nodes_.size() + n > static_cast<size_t>(INT32_MAX) || weights_.size() + n > static_cast<size_t>(INT32_MAX))
    throw Error(ErrorCode::Model, fmt::format("{}: more than 2^31 nodes", source));
  // Each leaf's weights, in the order given.
  std::vector<std::vector<Weight>> leaf_weights(n);
  auto add = [&](int32_t node, int32_t group, float value) {
    if (node < 0 || static_cast<size_t>(node) >= n || tree.left[static_cast<size_t>(node)] != -1)
      Refuse(source, index, fmt::format("a weight is for node {}, which is not a leaf", node));
    if (group < 0 || static_cast<size_t>(group) >= groups())
      Refuse(source, index, fmt::format("adds to output group {}, but the model has {}", group, groups()));
    if (std::isnan(value)) Refuse(source, index, fmt::format("leaf {} has a NaN weight", node));
    leaf_weights[static_cast<size_t>(node)].push_back({group, value});
  };
  if (tree.weights.empty()) {
    for (size_t i = 0; i < n; ++i) {
      if (tree.left[i] == -1) add(static_cast<int32_t>(i), tree.group, tree.threshold[i]);
    }
  } else {
    for (const auto& w : tree.weights) add(w.node, w.group, w.value);
  }
  const auto base = static_cast<int32_t>(nodes_.size());
  roots_.push_back(base);
  max_depth_ = std::max(max_depth_, Depth(tree));
  for (size_t i = 0; i < n; ++i) {
    Node node{};
    node.value = tree.threshold[i];
    if (tree.left[i] == -1) {
      node.feature = -1;
      node.left = static_cast<int32_t>(weights_.size());
      weights_.insert(weights_.end(), leaf_weights[i].begin(), leaf_weights[i].end());
      node.right = static_cast<int32_t>(weights_.size());
    } else {
      node.feature = tree.feature[i];
      node.mode = tree.mode.empty() ? Mode::kLess : tree.mode[i];
      node.left = base + tree.left[i];
      node.right = base + tree.right[i];
      node.missing = tree.default_left[i] ? node.left : node.right;
    }
    nodes_.push_back(node);
  }
}

namespace {

bool Holds(Mode mode, float x, float t) {
  switch (mode) {
    case Mode::kLess: return x < t;
    case Mode::kLessEqual: return x <= t;
    case Mode::kGreater: return x > t;
    case Mode::kGreaterEqual: return x >= t;
    case Mode::kEqual: return x == t;
    case Mode::kNotEqual: return x != t;
  }
  return false;
}

}  // namespace

int32_t TreeEnsemble::Leaf(int32_t at, const float* row) const {
  const Node* nodes = nodes_.data();
  while (nodes[at].feature >= 0) {
    const Node& node = nodes[at];
    const float x = row[node.feature];
    if (std::isnan(x)) {
      at = node.missing;
    } else if (node.mode == Mode::kLess) {  // XGBoost's every split, sklearn's kLessEqual next
      at = x < node.value ? node.left : node.right;
    } else if (node.mode == Mode::kLessEqual) {
      at = x <= node.value ? node.left : node.right;
    } else {
      at = Holds(node.mode, x, node.value) ? node.left : node.right;
    }
  }
  return at;
}

void TreeEnsemble::AddLeaf(const Node& leaf, float* margins) const {
  for (int32_t w = leaf.left; w < leaf.right; ++w)
    margins[weights_[static_cast<size_t>(w)].group] += weights_[static_cast<size_t>(w)].value;
}

void TreeEnsemble::Finish(std::span<float> margins, float* out) const {
  if (aggregate_ == Aggregate::kAverage) {
    const float trees = static_cast<float>(roots_.size());
    for (size_t g = 0; g < margins.size(); ++g) margins[g] = margins[g] / trees + base_margin_[g];
  } else {
    for (size_t g = 0; g < margins.size(); ++g) margins[g] += base_margin_[g];
  }
  if (!head_) return Transformed(margins, out);
  float* probabilities = out + 1;
  Transformed(margins, probabilities);
  if (head_->single_score) {
    const float p = probabilities[0];
    probabilities[0] = 1.0f - p;
    probabilities[1] = p;
  }
  const size_t classes = head_->labels.size();
  out[0] = head_->labels[static_cast<size_t>(std::max_element(probabilities, probabilities + classes) - probabilities)];
}

void TreeEnsemble::Transformed(std::span<float> margins, float* out) const {
  switch (transform_) {
    case Transform::kIdentity: std::copy(margins.begin(), margins.end(), out); return;
    case Transform::kSigmoid:
      for (size_t g = 0; g < margins.size(); ++g) out[g] = 1.0f / (1.0f + std::exp(-margins[g]));
      return;
    case Transform::kExp:
      for (size_t g = 0; g < margins.size(); ++g) out[g] = std::exp(margins[g]);
      return;
    case Transform::kSoftmax:
    case Transform::kSoftmaxZero: {
      const bool skip_zero = transform_ == Transform::kSoftmaxZero;
      float top = -INFINITY;
      for (float m : margins) {
        if (!(skip_zero && m == 0.0f)) top = std::max(top, m);
      }
      float sum = 0;
      for (size_t g = 0; g < margins.size(); ++g) {
        out[g] = skip_zero && margins[g] == 0.0f ? 0.0f : std::exp(margins[g] - top);
        sum += out[g];
      }
      for (size_t g = 0; g < margins.size() && sum > 0; ++g) out[g] /= sum;
      return;
    }
    case Transform::kArgMax:
      out[0] = static_cast<float>(std::max_element(margins.begin(), margins.end()) - margins.begin());
      return;
  }
}

void TreeEnsemble::ScoreRow(std::span<const float> input, std::span<float> output) const {
  std::vector<float> margins(base_margin_.size(), 0.0f);
  for (int32_t root : roots_) {
    // The plain walk, kept apart from Leaf() so that the reference shares no code
    // with what it checks.
    size_t at = static_cast<size_t>(root);
    while (nodes_[at].feature >= 0) {
      const Node& node = nodes_[at];
      const float x = input[static_cast<size_t>(node.feature)];
      const bool truth = std::isnan(x) ? node.missing == node.left : Holds(node.mode, x, node.value);
      at = static_cast<size_t>(truth ? node.left : node.right);
    }
    for (int32_t w = nodes_[at].left; w < nodes_[at].right; ++w)
      margins[static_cast<size_t>(weights_[static_cast<size_t>(w)].group)] += weights_[static_cast<size_t>(w)].value;
  }
  Finish(margins, output.data());
}

void TreeEnsemble::Score(std::span<const float> input, size_t rows, std::span<float> output) const {
  // Rows go through one tree at a time in blocks: the tree's top levels stay in cache
  // for the whole block.
  constexpr size_t kBlock = 64;
  const size_t groups = base_margin_.size();
  std::vector<float> margins(kBlock * groups);
  for (size_t begin = 0; begin < rows; begin += kBlock) {
    const size_t n = std::min(kBlock, rows - begin);
    std::fill(margins.begin(), margins.begin() + static_cast<std::ptrdiff_t>(n * groups), 0.0f);
    for (int32_t root : roots_) {
      const float* row = input.data() + begin * features_;
      for (size_t r = 0; r < n; ++r, row += features_) AddLeaf(nodes_[Leaf(root, row)], &margins[r * groups]);
    }
    for (size_t r = 0; r < n; ++r) {
      Finish(std::span<float>(&margins[r * groups], groups), output.data() + (begin + r) * output_width());
    }
  }
}

}  // namespace runnel::model::trees
