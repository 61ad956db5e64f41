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

void CheckTree(const Tree& tree, size_t index, size_t features, size_t groups, const std::string& source) {
  const size_t n = tree.left.size();
  if (n == 0) Refuse(source, index, "has no node");
  if (tree.right.size() != n || tree.feature.size() != n || tree.threshold.size() != n ||
      tree.default_left.size() != n) {
    Refuse(source, index,
           fmt::format("its node arrays differ in length (left {}, right {}, feature {}, threshold {}, default {})", n,
                       tree.right.size(), tree.feature.size(), tree.threshold.size(), tree.default_left.size()));
  }
  if (tree.group < 0 || static_cast<size_t>(tree.group) >= groups)
    Refuse(source, index, fmt::format("adds to output group {}, but the model has {}", tree.group, groups));
  std::vector<uint8_t> reached(n, 0);
  reached[0] = 1;
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
    if (!std::isfinite(tree.threshold[i]) && !std::isinf(tree.threshold[i]))
      Refuse(source, index, fmt::format("node {} has a NaN threshold", i));
    if (reached[static_cast<size_t>(left)]++ || reached[static_cast<size_t>(right)]++ || left == right)
      Refuse(source, index, fmt::format("node {} shares a child with another node", i));
  }
}

}  // namespace

TreeEnsemble::TreeEnsemble(const std::vector<Tree>& trees, size_t features, std::vector<float> base_margin,
                           Transform transform, const std::string& source)
    : base_margin_(std::move(base_margin)), features_(features), transform_(transform) {
  if (base_margin_.empty()) throw Error(ErrorCode::Model, fmt::format("{}: the model has no output", source));
  if (features_ == 0) throw Error(ErrorCode::Model, fmt::format("{}: the model takes no feature", source));
  if ((transform_ == Transform::kSigmoid || transform_ == Transform::kExp) && groups() != 1)
    throw Error(ErrorCode::Model, fmt::format("{}: a single-output objective with {} groups", source, groups()));
  for (size_t t = 0; t < trees.size(); ++t) {
    const Tree& tree = trees[t];
    CheckTree(tree, t, features_, groups(), source);
    if (nodes_.size() + tree.left.size() > static_cast<size_t>(INT32_MAX))
      throw Error(ErrorCode::Model, fmt::format("{}: more than 2^31 nodes", source));
    const auto base = static_cast<int32_t>(nodes_.size());
    roots_.push_back(base);
    groups_.push_back(tree.group);
    max_depth_ = std::max(max_depth_, Depth(tree));
    for (size_t i = 0; i < tree.left.size(); ++i) {
      Node node{};
      node.value = tree.threshold[i];
      if (tree.left[i] == -1) {
        node.feature = -1;
      } else {
        node.feature = tree.feature[i];
        node.left = base + tree.left[i];
        node.right = base + tree.right[i];
        node.missing = tree.default_left[i] ? node.left : node.right;
      }
      nodes_.push_back(node);
    }
  }
}

int32_t TreeEnsemble::Leaf(int32_t at, const float* row) const {
  const Node* nodes = nodes_.data();
  while (nodes[at].feature >= 0) {
    const Node& node = nodes[at];
    const float x = row[node.feature];
    at = std::isnan(x) ? node.missing : (x < node.value ? node.left : node.right);
  }
  return at;
}

void TreeEnsemble::Finish(std::span<float> margins, float* out) const {
  switch (transform_) {
    case Transform::kIdentity: std::copy(margins.begin(), margins.end(), out); return;
    case Transform::kSigmoid: out[0] = 1.0f / (1.0f + std::exp(-margins[0])); return;
    case Transform::kExp: out[0] = std::exp(margins[0]); return;
    case Transform::kSoftmax: {
      const float top = *std::max_element(margins.begin(), margins.end());
      float sum = 0;
      for (size_t g = 0; g < margins.size(); ++g) sum += out[g] = std::exp(margins[g] - top);
      for (size_t g = 0; g < margins.size(); ++g) out[g] /= sum;
      return;
    }
    case Transform::kArgMax:
      out[0] = static_cast<float>(std::max_element(margins.begin(), margins.end()) - margins.begin());
      return;
  }
}

void TreeEnsemble::ScoreRow(std::span<const float> input, std::span<float> output) const {
  std::vector<float> margins(base_margin_);
  for (size_t t = 0; t < roots_.size(); ++t) {
    // The plain walk, kept apart from Leaf() so that the reference shares no code
    // with what it checks.
    size_t at = static_cast<size_t>(roots_[t]);
    while (nodes_[at].feature >= 0) {
      const float x = input[static_cast<size_t>(nodes_[at].feature)];
      const bool left = std::isnan(x) ? nodes_[at].missing == nodes_[at].left : x < nodes_[at].value;
      at = static_cast<size_t>(left ? nodes_[at].left : nodes_[at].right);
    }
    margins[static_cast<size_t>(groups_[t])] += nodes_[at].value;
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
    for (size_t r = 0; r < n; ++r) std::copy(base_margin_.begin(), base_margin_.end(), &margins[r * groups]);
    for (size_t t = 0; t < roots_.size(); ++t) {
      const size_t group = static_cast<size_t>(groups_[t]);
      const float* row = input.data() + begin * features_;
      for (size_t r = 0; r < n; ++r, row += features_)
        margins[r * groups + group] += nodes_[Leaf(roots_[t], row)].value;
    }
    for (size_t r = 0; r < n; ++r) {
      Finish(std::span<float>(&margins[r * groups], groups), output.data() + (begin + r) * output_width());
    }
  }
}

}  // namespace runnel::model::trees
