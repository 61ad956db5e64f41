#include "runnel/tensor/trees.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "runnel/core/error.hpp"

namespace runnel::tensor::trees {

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
  // Breadth-first from the root, each split's two children side by side.
  const auto base = static_cast<int32_t>(nodes_.size());
  roots_.push_back(base);
  max_depth_ = std::max(max_depth_, Depth(tree));
  std::vector<size_t> order = {0};
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    Node node{};
    node.value = tree.threshold[i];
    if (tree.left[i] == -1) {
      node.feature = -1 - static_cast<int32_t>(leaf_weights[i].size());
      node.left = static_cast<int32_t>(weights_.size());
      weights_.insert(weights_.end(), leaf_weights[i].begin(), leaf_weights[i].end());
    } else {
      node.feature = tree.feature[i];
      node.mode = tree.mode.empty() ? Mode::kLess : tree.mode[i];
      any_mode_ = any_mode_ || (node.mode != Mode::kLess && node.mode != Mode::kLessEqual);
      node.missing_left = tree.default_left[i];
      node.left = base + static_cast<int32_t>(order.size());
      order.push_back(static_cast<size_t>(tree.left[i]));
      order.push_back(static_cast<size_t>(tree.right[i]));
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

template <bool kAnyMode>
void TreeEnsemble::Walk(const int32_t* starts, const float* const* rows, size_t count, int32_t* leaves) const {
  const Node* nodes = nodes_.data();
  for (size_t l = 0; l < count; ++l) leaves[l] = starts[l];
  for (bool moved = true; moved;) {
    moved = false;
    for (size_t l = 0; l < count; ++l) {
      const Node& node = nodes[leaves[l]];
      if (node.feature < 0) continue;
      moved = true;
      const float x = rows[l][node.feature];
      bool truth;
      if constexpr (kAnyMode) {
        truth = Holds(node.mode, x, node.value);
      } else {  // < or <=, without a branch on the outcome
        truth = (x < node.value) | ((node.mode == Mode::kLessEqual) & (x == node.value));
      }
      truth = std::isnan(x) ? node.missing_left != 0 : truth;
      leaves[l] = node.left + (truth ? 0 : 1);
    }
  }
}

void TreeEnsemble::WalkLanes(const int32_t* starts, const float* const* rows, size_t count, int32_t* leaves) const {
  if (any_mode_) return Walk<true>(starts, rows, count, leaves);
  Walk<false>(starts, rows, count, leaves);
}

void TreeEnsemble::AddLeaf(const Node& leaf, float* margins) const {
  const Weight* w = weights_.data() + leaf.left;
  for (const Weight* end = w + (-1 - leaf.feature); w < end; ++w) margins[w->group] += w->value;
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
    // The plain walk, one node after the other, sharing no code with Walk().
    size_t at = static_cast<size_t>(root);
    while (nodes_[at].feature >= 0) {
      const Node& node = nodes_[at];
      const float x = input[static_cast<size_t>(node.feature)];
      const bool truth = std::isnan(x) ? node.missing_left != 0 : Holds(node.mode, x, node.value);
      at = static_cast<size_t>(truth ? node.left : node.left + 1);
    }
    const auto first = static_cast<size_t>(nodes_[at].left);
    for (size_t w = first; w < first + static_cast<size_t>(-1 - nodes_[at].feature); ++w)
      margins[static_cast<size_t>(weights_[w].group)] += weights_[w].value;
  }
  Finish(margins, output.data());
}

void TreeEnsemble::Score(std::span<const float> input, size_t rows, std::span<float> output) const {
  // kLanes walks go down together, one level at a time, so that their node loads and
  // comparisons overlap instead of waiting on each other: kLanes trees of one row when
  // rows are few, else blocks of rows through one tree at a time (its top levels stay
  // in cache), kLanes rows of the block at once.
  constexpr size_t kBlock = 256;
  const size_t groups = base_margin_.size();
  std::vector<float> margins(std::min(rows, kBlock) * groups);
  int32_t starts[kLanes], leaves[kLanes];
  const float* lane_rows[kLanes];
  for (size_t begin = 0; begin < rows; begin += kBlock) {
    const size_t n = std::min(kBlock, rows - begin);
    std::fill(margins.begin(), margins.begin() + static_cast<std::ptrdiff_t>(n * groups), 0.0f);
    if (n < kFewRows) {
      for (size_t r = 0; r < n; ++r) {
        std::fill_n(lane_rows, kLanes, input.data() + (begin + r) * features_);
        for (size_t t = 0; t < roots_.size(); t += kLanes) {
          const size_t count = std::min(kLanes, roots_.size() - t);
          WalkLanes(roots_.data() + t, lane_rows, count, leaves);
          for (size_t l = 0; l < count; ++l) AddLeaf(nodes_[static_cast<size_t>(leaves[l])], &margins[r * groups]);
        }
      }
    } else {
      for (int32_t root : roots_) {
        std::fill_n(starts, kLanes, root);
        for (size_t lane = 0; lane < n; lane += kLanes) {
          const size_t count = std::min(kLanes, n - lane);
          for (size_t l = 0; l < count; ++l) lane_rows[l] = input.data() + (begin + lane + l) * features_;
          WalkLanes(starts, lane_rows, count, leaves);
          for (size_t l = 0; l < count; ++l)
            AddLeaf(nodes_[static_cast<size_t>(leaves[l])], &margins[(lane + l) * groups]);
        }
      }
    }
    for (size_t r = 0; r < n; ++r) {
      Finish(std::span<float>(&margins[r * groups], groups), output.data() + (begin + r) * output_width());
    }
  }
}

}  // namespace runnel::tensor::trees
