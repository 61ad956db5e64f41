// TreeEnsembleRegressor and TreeEnsembleClassifier (ai.onnx.ml), as scikit-learn
// (skl2onnx), LightGBM and XGBoost converters write them. The nodes_* attributes
// identify nodes by (tree id, node id) in any order; they are renumbered breadth-first
// from each tree's root, which puts children after their parents as TreeEnsemble
// requires. The ensemble is compiled once at load (the node's state).
#include <algorithm>
#include <map>
#include <set>

#include "kernels.hpp"
#include "runnel/tensor/onnx_trees.hpp"

namespace runnel::tensor {
namespace {

using trees::Mode;
using trees::Transform;

// The node's attributes, absent ones empty; every failure an Error(Model).
class Attributes {
 public:
  explicit Attributes(const Node& node) : node_(node) {}

  std::vector<int64_t> Ints(std::string_view name) const { return node_.IntList(name); }
  // floats, or the tensor of `name`_as_tensor (ai.onnx.ml opset 3).
  std::vector<float> Floats(const std::string& name) const {
    if (const auto* a = node_.Find(name); a != nullptr && a->kind == Attribute::Kind::kFloats) return a->floats;
    const auto* t = node_.Find(name + "_as_tensor");
    if (t == nullptr || !t->t) return {};
    if (t->t->type() != DataType::kFloat && t->t->type() != DataType::kDouble)
      Fail(fmt::format("{}_as_tensor is {}, not float", name, DataTypeName(static_cast<int>(t->t->type()))));
    std::vector<float> out(t->t->size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(ValueAt(*t->t, i));
    return out;
  }
  std::vector<std::string> Strings(std::string_view name) const { return node_.StringList(name); }
  std::string String(std::string_view name, const std::string& fallback) const { return node_.String(name, fallback); }
  int64_t Int(std::string_view name, int64_t fallback) const { return node_.Int(name, fallback); }

  [[noreturn]] static void Fail(const std::string& what) { throw Error(ErrorCode::Model, what); }

 private:
  const Node& node_;
};

Mode ModeOf(const std::string& mode) {
  if (mode == "BRANCH_LEQ") return Mode::kLessEqual;
  if (mode == "BRANCH_LT") return Mode::kLess;
  if (mode == "BRANCH_GTE") return Mode::kGreaterEqual;
  if (mode == "BRANCH_GT") return Mode::kGreater;
  if (mode == "BRANCH_EQ") return Mode::kEqual;
  if (mode == "BRANCH_NEQ") return Mode::kNotEqual;
  throw UnsupportedError(fmt::format("node mode '{}'", mode));
}

// The nodes_* attributes, one entry per node of every tree.
struct NodeTable {
  std::vector<int64_t> trees, ids, features, true_ids, false_ids, tracks_true;
  std::vector<float> values;
  std::vector<std::string> modes;

  explicit NodeTable(const Attributes& a)
      : trees(a.Ints("nodes_treeids")),
        ids(a.Ints("nodes_nodeids")),
        features(a.Ints("nodes_featureids")),
        true_ids(a.Ints("nodes_truenodeids")),
        false_ids(a.Ints("nodes_falsenodeids")),
        tracks_true(a.Ints("nodes_missing_value_tracks_true")),
        values(a.Floats("nodes_values")),
        modes(a.Strings("nodes_modes")) {
    const size_t n = trees.size();
    if (n == 0) a.Fail("the ensemble has no node");
    if (ids.size() != n || features.size() != n || true_ids.size() != n || false_ids.size() != n ||
        values.size() != n || modes.size() != n || (!tracks_true.empty() && tracks_true.size() != n)) {
      a.Fail("its nodes_* attributes differ in length");
    }
  }
};

// (tree id, node id) -> position in the NodeTable.
using NodeKey = std::pair<int64_t, int64_t>;

// Each tree's root (the one node no split points to). Throws for two roots.
std::map<int64_t, int64_t> Roots(const NodeTable& table, std::map<NodeKey, size_t>& position,
                                 std::map<int64_t, size_t>& sizes) {
  std::map<int64_t, std::set<int64_t>> children;  // per tree: ids that are some node's child
  for (size_t i = 0; i < table.ids.size(); ++i) {
    if (!position.emplace(NodeKey{table.trees[i], table.ids[i]}, i).second)
      Attributes::Fail(fmt::format("tree {} lists node {} twice", table.trees[i], table.ids[i]));
    if (table.modes[i] != "LEAF") {
      children[table.trees[i]].insert(table.true_ids[i]);
      children[table.trees[i]].insert(table.false_ids[i]);
    }
  }
  std::map<int64_t, int64_t> roots;
  for (size_t i = 0; i < table.ids.size(); ++i) {
    ++sizes[table.trees[i]];
    if (children[table.trees[i]].contains(table.ids[i])) continue;
    if (!roots.emplace(table.trees[i], table.ids[i]).second)
      Attributes::Fail(fmt::format("tree {} has more than one root (nodes {} and {})", table.trees[i],
                                   roots[table.trees[i]], table.ids[i]));
  }
  if (roots.size() != sizes.size()) Attributes::Fail("a tree has no root (its nodes form a cycle)");
  return roots;
}

// Every tree renumbered breadth-first from its root; `index` maps each node to its
// (tree, new index) for the weights.
std::vector<trees::Tree> BuildTrees(const NodeTable& table, std::map<NodeKey, std::pair<size_t, int32_t>>& index) {
  std::map<NodeKey, size_t> position;
  std::map<int64_t, size_t> sizes;
  const auto roots = Roots(table, position, sizes);
  std::vector<trees::Tree> out;
  for (const auto& [tree_id, root] : roots) {
    trees::Tree tree;
    std::vector<size_t> order = {position.at({tree_id, root})};
    index[{tree_id, root}] = {out.size(), 0};
    for (size_t k = 0; k < order.size(); ++k) {
      const size_t i = order[k];
      tree.feature.push_back(static_cast<int32_t>(std::clamp<int64_t>(table.features[i], -1, INT32_MAX)));
      tree.threshold.push_back(table.values[i]);
      tree.default_left.push_back(!table.tracks_true.empty() && table.tracks_true[i] != 0);
      if (table.modes[i] == "LEAF") {
        tree.left.push_back(-1);
        tree.right.push_back(-1);
        tree.mode.push_back(Mode::kLess);
        continue;
      }
      tree.mode.push_back(ModeOf(table.modes[i]));
      for (int64_t child : {table.true_ids[i], table.false_ids[i]}) {
        auto it = position.find({tree_id, child});
        if (it == position.end())
          Attributes::Fail(fmt::format("tree {}: node {} has no child {}", tree_id, table.ids[i], child));
        if (!index.emplace(NodeKey{tree_id, child}, std::pair{out.size(), static_cast<int32_t>(order.size())}).second)
          Attributes::Fail(fmt::format("tree {}: node {} is reached twice", tree_id, child));
        (child == table.true_ids[i] ? tree.left : tree.right).push_back(static_cast<int32_t>(order.size()));
        order.push_back(it->second);
      }
    }
    if (order.size() != sizes[tree_id])
      Attributes::Fail(fmt::format("tree {}: {} of its {} nodes cannot be reached from its root", tree_id,
                                   sizes[tree_id] - order.size(), sizes[tree_id]));
    out.push_back(std::move(tree));
  }
  return out;
}

// The leaves' weights (class_* or target_*) added to their trees.
void AddWeights(const Attributes& attrs, const std::string& prefix, std::vector<trees::Tree>& trees,
                const std::map<NodeKey, std::pair<size_t, int32_t>>& index) {
  const auto tree_ids = attrs.Ints(prefix + "_treeids");
  const auto node_ids = attrs.Ints(prefix + "_nodeids");
  const auto groups = attrs.Ints(prefix + "_ids");
  const auto values = attrs.Floats(prefix + "_weights");
  if (node_ids.size() != tree_ids.size() || groups.size() != tree_ids.size() || values.size() != tree_ids.size())
    attrs.Fail(fmt::format("its {}_* attributes differ in length", prefix));
  for (size_t w = 0; w < tree_ids.size(); ++w) {
    auto it = index.find({tree_ids[w], node_ids[w]});
    if (it == index.end())
      attrs.Fail(fmt::format("a weight is for node {} of tree {}, which does not exist", node_ids[w], tree_ids[w]));
    const auto group = static_cast<int32_t>(std::clamp<int64_t>(groups[w], -1, INT32_MAX));
    trees[it->second.first].weights.push_back({it->second.second, group, values[w]});
  }
}

Transform TransformOf(const std::string& name) {
  if (name == "NONE") return Transform::kIdentity;
  if (name == "LOGISTIC") return Transform::kSigmoid;
  if (name == "SOFTMAX") return Transform::kSoftmax;
  if (name == "SOFTMAX_ZERO") return Transform::kSoftmaxZero;
  throw UnsupportedError(fmt::format("post_transform '{}'", name));
}

// The ensemble's trees with their leaves' `prefix`_* weights (target or class).
std::vector<trees::Tree> TreesOf(const Attributes& attrs, const std::string& prefix) {
  std::map<NodeKey, std::pair<size_t, int32_t>> index;
  auto trees = BuildTrees(NodeTable(attrs), index);
  AddWeights(attrs, prefix, trees, index);
  return trees;
}

// The columns the splits read: one past the highest feature id.
size_t UsedFeatures(const std::vector<trees::Tree>& trees) {
  int64_t highest = 0;
  for (const auto& tree : trees) {
    for (size_t i = 0; i < tree.feature.size(); ++i) {
      if (tree.left[i] != -1) highest = std::max<int64_t>(highest, tree.feature[i]);
    }
  }
  return static_cast<size_t>(highest) + 1;
}

std::shared_ptr<const trees::TreeEnsemble> Regressor(const Attributes& attrs, size_t features) {
  auto trees = TreesOf(attrs, "target");
  const int64_t targets = attrs.Int("n_targets", 1);
  // Each target is some leaf's: more targets than weights is a hostile file.
  size_t weights = 0;
  for (const auto& tree : trees) weights += tree.weights.size();
  if (targets < 1 || static_cast<uint64_t>(targets) > std::max<size_t>(1, weights))
    attrs.Fail(fmt::format("n_targets is {} for {} leaf weights", targets, weights));
  auto base = attrs.Floats("base_values");
  if (base.empty()) base.assign(static_cast<size_t>(targets), 0.0f);
  if (base.size() != static_cast<size_t>(targets))
    attrs.Fail(fmt::format("{} base values for {} targets", base.size(), targets));
  const std::string aggregate = attrs.String("aggregate_function", "SUM");
  if (aggregate != "SUM" && aggregate != "AVERAGE")
    throw UnsupportedError(fmt::format("aggregate_function '{}' (SUM and AVERAGE are supported)", aggregate));
  if (features == 0) features = UsedFeatures(trees);
  return std::make_shared<const trees::TreeEnsemble>(
      trees, features, std::move(base), TransformOf(attrs.String("post_transform", "NONE")), "the ensemble",
      aggregate == "AVERAGE" ? trees::Aggregate::kAverage : trees::Aggregate::kSum);
}

std::shared_ptr<const trees::TreeEnsemble> Classifier(const Attributes& attrs, size_t features) {
  auto trees = TreesOf(attrs, "class");
  trees::ClassifierHead head;
  const auto int_labels = attrs.Ints("classlabels_int64s");
  const auto string_labels = attrs.Strings("classlabels_strings");
  for (int64_t label : int_labels) head.labels.push_back(static_cast<float>(label));
  for (size_t i = 0; i < string_labels.size(); ++i) head.labels.push_back(static_cast<float>(i));
  head.label_names = string_labels;
  if (head.labels.size() < 2) attrs.Fail("a classifier needs two class labels or more");
  // One score column for two classes (every weight for the same class): binary.
  std::set<int32_t> used;
  for (const auto& tree : trees) {
    for (const auto& w : tree.weights) used.insert(w.group);
  }
  head.single_score = head.labels.size() == 2 && used.size() == 1;
  if (head.single_score) {
    for (auto& tree : trees) {
      for (auto& w : tree.weights) w.group = 0;
    }
  }
  const size_t groups = head.single_score ? 1 : head.labels.size();
  auto base = attrs.Floats("base_values");
  if (base.empty()) base.assign(groups, 0.0f);
  if (head.single_score && base.size() == 2) base = {base[1]};
  if (base.size() != groups) attrs.Fail(fmt::format("{} base values for {} classes", base.size(), groups));
  const Transform transform = TransformOf(attrs.String("post_transform", "NONE"));
  if (head.single_score && transform != Transform::kSigmoid && transform != Transform::kIdentity)
    throw UnsupportedError(
        "a binary classifier with one score column and a post_transform other than LOGISTIC or "
        "NONE");
  if (features == 0) features = UsedFeatures(trees);
  return std::make_shared<const trees::TreeEnsemble>(trees, features, std::move(base), transform, "the ensemble",
                                                     trees::Aggregate::kSum, std::move(head));
}

struct EnsembleState : NodeState {
  std::shared_ptr<const trees::TreeEnsemble> ensemble;
  std::vector<int64_t> int_labels;
  std::vector<std::string> string_labels;
};

std::shared_ptr<const NodeState> PrepareEnsemble(const Node& node) {
  auto state = std::make_shared<EnsembleState>();
  state->ensemble = OnnxTreeEnsemble(node, 0);
  state->int_labels = node.IntList("classlabels_int64s");
  state->string_labels = node.StringList("classlabels_strings");
  return state;
}

// X as rows of exactly the ensemble's input width (wider inputs: the columns past
// it are never read), as float.
std::vector<float> Rows(const Tensor& x, size_t width, size_t& rows) {
  if (x.rank() != 1 && x.rank() != 2)
    throw Error(ErrorCode::Model, fmt::format("input X has shape {}, expected [N, F]", ShapeText(x.shape())));
  rows = x.rank() == 1 ? 1 : static_cast<size_t>(x.dim(0));
  const size_t have = x.rank() == 1 ? x.size() : static_cast<size_t>(x.dim(1));
  if (have < width)
    throw Error(ErrorCode::Model, fmt::format("input X has {} features, the trees split on {}", have, width));
  std::vector<float> out(rows * width);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < width; ++c) out[r * width + c] = static_cast<float>(ValueAt(x, r * have + c));
  }
  return out;
}

// Scores X into rows x output_width() floats.
std::vector<float> Score(const EnsembleState& s, const Tensor& x, size_t& rows) {
  const auto input = Rows(x, s.ensemble->input_width(), rows);
  std::vector<float> scores(rows * s.ensemble->output_width());
  s.ensemble->Score(input, rows, scores);
  return scores;
}

void TreeEnsembleRegressor(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const auto& s = node.State<EnsembleState>();
  size_t rows = 0;
  const auto scores = Score(s, Required(node, in, 0), rows);
  const size_t width = s.ensemble->output_width();
  out[0] = Tensor::Of<float>(DataType::kFloat, {static_cast<int64_t>(rows), static_cast<int64_t>(width)}, scores);
}

// Outputs: Y, the label per row (int64 or string), and Z, the scores per class.
void TreeEnsembleClassifier(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const auto& s = node.State<EnsembleState>();
  size_t rows = 0;
  const auto scores = Score(s, Required(node, in, 0), rows);
  const size_t width = s.ensemble->output_width(), classes = width - 1;
  const bool strings = !s.string_labels.empty();
  out[0] = Tensor(strings ? DataType::kString : DataType::kInt64, {static_cast<int64_t>(rows)});
  if (out.size() > 1) out[1] = Tensor(DataType::kFloat, {static_cast<int64_t>(rows), static_cast<int64_t>(classes)});
  const auto& labels = s.ensemble->head()->labels;  // as floats: int64 labels, or string labels' indexes
  for (size_t r = 0; r < rows; ++r) {
    const size_t k = static_cast<size_t>(std::find(labels.begin(), labels.end(), scores[r * width]) - labels.begin());
    if (strings) {
      out[0].strings()[r] = s.string_labels.at(k);
    } else {
      out[0].data<int64_t>()[r] = s.int_labels.at(k);
    }
    if (out.size() > 1) std::copy_n(&scores[r * width + 1], classes, &out[1].data<float>()[r * classes]);
  }
}

}  // namespace

std::shared_ptr<const trees::TreeEnsemble> OnnxTreeEnsemble(const Node& node, size_t features) {
  const Attributes attrs(node);
  if (node.op == "TreeEnsembleRegressor") return Regressor(attrs, features);
  if (node.op == "TreeEnsembleClassifier") return Classifier(attrs, features);
  throw Error(ErrorCode::Model, fmt::format("{} is not a tree ensemble", node.Label()));
}

void AddTreeKernels(std::vector<KernelEntry>& t) {
  t.push_back({"TreeEnsembleRegressor", 1, TreeEnsembleRegressor, "ai.onnx.ml", PrepareEnsemble});
  t.push_back({"TreeEnsembleClassifier", 1, TreeEnsembleClassifier, "ai.onnx.ml", PrepareEnsemble});
}

}  // namespace runnel::tensor
