// ONNX models whose work is one tree ensemble of the ai.onnx.ml domain, as
// scikit-learn (skl2onnx), LightGBM and XGBoost converters write them:
// X (float [N, F]) -> TreeEnsembleRegressor -> Y, or X -> TreeEnsembleClassifier ->
// (label, probabilities), the probabilities possibly through ZipMap; Identity and Cast
// nodes around them are accepted. Nodes are identified by (tree id, node id) in any
// order; they are renumbered breadth-first from each tree's root, which puts children
// after their parents as TreeEnsemble requires.
#include <fmt/format.h>
#include <onnx/onnx-ml.pb.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "loaders.hpp"
#include "runnel/core/error.hpp"

namespace runnel::model {

namespace {

using trees::Mode;
using trees::Transform;

[[noreturn]] void Refuse(const std::string& source, const std::string& node, const std::string& what) {
  throw Error(ErrorCode::Model, fmt::format("{}: node '{}': {}", source, node, what));
}

class Attributes {
 public:
  Attributes(const onnx::NodeProto& node, std::string source) : node_(node), source_(std::move(source)) {
    for (const auto& a : node.attribute()) by_name_[a.name()] = &a;
  }

  std::vector<int64_t> Ints(const std::string& name) const {
    const auto* a = Find(name);
    return a == nullptr ? std::vector<int64_t>{} : std::vector<int64_t>(a->ints().begin(), a->ints().end());
  }
  // floats, or the float tensor of `name`_as_tensor (opset 3).
  std::vector<float> Floats(const std::string& name) const {
    if (const auto* a = Find(name)) return {a->floats().begin(), a->floats().end()};
    const auto* t = Find(name + "_as_tensor");
    if (t == nullptr) return {};
    const auto& tensor = t->t();
    if (tensor.data_type() != onnx::TensorProto_DataType_FLOAT)
      Fail(fmt::format("{}_as_tensor is not float32 (type {})", name, tensor.data_type()));
    if (!tensor.raw_data().empty()) {
      const std::string& raw = tensor.raw_data();
      if (raw.size() % 4 != 0) Fail(fmt::format("{}_as_tensor has {} bytes of raw data", name, raw.size()));
      std::vector<float> out(raw.size() / 4);
      std::memcpy(out.data(), raw.data(), raw.size());
      return out;
    }
    return {tensor.float_data().begin(), tensor.float_data().end()};
  }
  std::vector<std::string> Strings(const std::string& name) const {
    const auto* a = Find(name);
    return a == nullptr ? std::vector<std::string>{}
                        : std::vector<std::string>(a->strings().begin(), a->strings().end());
  }
  std::string String(const std::string& name, const std::string& fallback) const {
    const auto* a = Find(name);
    return a == nullptr ? fallback : a->s();
  }
  int64_t Int(const std::string& name, int64_t fallback) const {
    const auto* a = Find(name);
    return a == nullptr ? fallback : a->i();
  }

  [[noreturn]] void Fail(const std::string& what) const { Refuse(source_, node_.name(), what); }

 private:
  const onnx::AttributeProto* Find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  const onnx::NodeProto& node_;
  std::string source_;
  std::map<std::string, const onnx::AttributeProto*> by_name_;
};

Mode ModeOf(const std::string& mode, const Attributes& attrs) {
  if (mode == "BRANCH_LEQ") return Mode::kLessEqual;
  if (mode == "BRANCH_LT") return Mode::kLess;
  if (mode == "BRANCH_GTE") return Mode::kGreaterEqual;
  if (mode == "BRANCH_GT") return Mode::kGreater;
  if (mode == "BRANCH_EQ") return Mode::kEqual;
  if (mode == "BRANCH_NEQ") return Mode::kNotEqual;
  attrs.Fail(fmt::format("node mode '{}' is not supported", mode));
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

// Every tree renumbered breadth-first from its root; `index` maps each node to its
// (tree, new index) for the weights.
std::vector<trees::Tree> BuildTrees(const NodeTable& table, const Attributes& attrs,
                                    std::map<NodeKey, std::pair<size_t, int32_t>>& index) {
  std::map<NodeKey, size_t> position;
  std::map<int64_t, std::set<int64_t>> children;  // per tree: ids that are some node's child
  for (size_t i = 0; i < table.ids.size(); ++i) {
    if (!position.emplace(NodeKey{table.trees[i], table.ids[i]}, i).second)
      attrs.Fail(fmt::format("tree {} lists node {} twice", table.trees[i], table.ids[i]));
    if (table.modes[i] != "LEAF") {
      children[table.trees[i]].insert(table.true_ids[i]);
      children[table.trees[i]].insert(table.false_ids[i]);
    }
  }
  std::map<int64_t, int64_t> roots;  // tree id -> root node id
  std::map<int64_t, size_t> sizes;
  for (size_t i = 0; i < table.ids.size(); ++i) {
    ++sizes[table.trees[i]];
    if (children[table.trees[i]].contains(table.ids[i])) continue;
    if (!roots.emplace(table.trees[i], table.ids[i]).second)
      attrs.Fail(fmt::format("tree {} has more than one root (nodes {} and {})", table.trees[i], roots[table.trees[i]],
                             table.ids[i]));
  }
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
      tree.mode.push_back(ModeOf(table.modes[i], attrs));
      for (int64_t child : {table.true_ids[i], table.false_ids[i]}) {
        auto it = position.find({tree_id, child});
        if (it == position.end())
          attrs.Fail(fmt::format("tree {}: node {} has no child {}", tree_id, table.ids[i], child));
        if (!index.emplace(NodeKey{tree_id, child}, std::pair{out.size(), static_cast<int32_t>(order.size())}).second)
          attrs.Fail(fmt::format("tree {}: node {} is reached twice", tree_id, child));
        (child == table.true_ids[i] ? tree.left : tree.right).push_back(static_cast<int32_t>(order.size()));
        order.push_back(it->second);
      }
    }
    if (order.size() != sizes[tree_id])
      attrs.Fail(fmt::format("tree {}: {} of its {} nodes cannot be reached from its root", tree_id,
                             sizes[tree_id] - order.size(), sizes[tree_id]));
    out.push_back(std::move(tree));
  }
  if (roots.size() != sizes.size()) attrs.Fail("a tree has no root (its nodes form a cycle)");
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

Transform TransformOf(const std::string& name, const Attributes& attrs) {
  if (name == "NONE") return Transform::kIdentity;
  if (name == "LOGISTIC") return Transform::kSigmoid;
  if (name == "SOFTMAX") return Transform::kSoftmax;
  if (name == "SOFTMAX_ZERO") return Transform::kSoftmaxZero;
  attrs.Fail(fmt::format("post_transform '{}' is not supported", name));
}

// The ensemble's trees with their leaves' `prefix`_* weights (target or class).
std::vector<trees::Tree> TreesOf(const Attributes& attrs, const std::string& prefix) {
  std::map<NodeKey, std::pair<size_t, int32_t>> index;
  auto trees = BuildTrees(NodeTable(attrs), attrs, index);
  AddWeights(attrs, prefix, trees, index);
  return trees;
}

std::shared_ptr<const trees::TreeEnsemble> Regressor(const onnx::NodeProto& node, size_t features,
                                                     const std::string& source) {
  const Attributes attrs(node, source);
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
    attrs.Fail(fmt::format("aggregate_function '{}' is not supported (SUM and AVERAGE are)", aggregate));
  return std::make_shared<const trees::TreeEnsemble>(
      trees, features, std::move(base), TransformOf(attrs.String("post_transform", "NONE"), attrs), source,
      aggregate == "AVERAGE" ? trees::Aggregate::kAverage : trees::Aggregate::kSum);
}

std::shared_ptr<const trees::TreeEnsemble> Classifier(const onnx::NodeProto& node, size_t features,
                                                      const std::string& source) {
  const Attributes attrs(node, source);
  auto trees = TreesOf(attrs, "class");
  trees::ClassifierHead head;
  const auto int_labels = attrs.Ints("classlabels_int64s");
  const auto string_labels = attrs.Strings("classlabels_strings");
  for (int64_t label : int_labels) head.labels.push_back(static_cast<float>(label));
  for (size_t i = 0; i < string_labels.size(); ++i) head.labels.push_back(static_cast<float>(i));
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
  const Transform transform = TransformOf(attrs.String("post_transform", "NONE"), attrs);
  if (head.single_score && transform != Transform::kSigmoid && transform != Transform::kIdentity)
    attrs.Fail("a binary classifier with one score column needs post_transform LOGISTIC or NONE");
  return std::make_shared<const trees::TreeEnsemble>(trees, features, std::move(base), transform, source,
                                                     trees::Aggregate::kSum, std::move(head));
}

// The width of the graph's one float input [N, F].
size_t InputWidth(const onnx::GraphProto& graph, const std::string& source) {
  std::set<std::string> initializers;
  for (const auto& init : graph.initializer()) initializers.insert(init.name());
  const onnx::ValueInfoProto* input = nullptr;
  for (const auto& candidate : graph.input()) {
    if (initializers.contains(candidate.name())) continue;
    if (input != nullptr) throw Error(ErrorCode::Model, fmt::format("{}: a tree ensemble takes one input", source));
    input = &candidate;
  }
  if (input == nullptr) throw Error(ErrorCode::Model, fmt::format("{}: the graph has no input", source));
  const auto& type = input->type().tensor_type();
  if (type.elem_type() != onnx::TensorProto_DataType_FLOAT && type.elem_type() != onnx::TensorProto_DataType_DOUBLE)
    throw Error(ErrorCode::Model, fmt::format("{}: input '{}' has element type {}, expected float", source,
                                              input->name(), type.elem_type()));
  const auto& dims = type.shape().dim();
  if (dims.size() != 2 || !dims[1].has_dim_value() || dims[1].dim_value() < 1 || dims[1].dim_value() > 1000000)
    throw Error(
        ErrorCode::Model,
        fmt::format("{}: input '{}' must be [batch, features] with a known number of features", source, input->name()));
  return static_cast<size_t>(dims[1].dim_value());
}

}  // namespace

std::optional<LoadedTrees> LoadOnnxTrees(std::string_view bytes, const std::string& source) {
  // Most ONNX files are networks: they are left to LoadOnnx without a second parse.
  if (bytes.find("TreeEnsemble") == std::string_view::npos) return std::nullopt;
  onnx::ModelProto model;
  if (bytes.size() > (size_t{2} << 30) || !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return std::nullopt;  // LoadOnnx names the failure
  const onnx::NodeProto* ensemble = nullptr;
  for (const auto& node : model.graph().node()) {
    const std::string& op = node.op_type();
    if (op == "TreeEnsembleRegressor" || op == "TreeEnsembleClassifier") {
      if (node.domain() != "ai.onnx.ml")
        Refuse(source, node.name(), fmt::format("{} outside the ai.onnx.ml domain", op));
      if (ensemble != nullptr) Refuse(source, node.name(), "a second tree ensemble in one graph is not supported");
      ensemble = &node;
    } else if (op != "ZipMap" && op != "Identity" && op != "Cast") {
      Refuse(source, node.name(), fmt::format("operator '{}' beside a tree ensemble is not supported", op));
    }
  }
  if (ensemble == nullptr) return std::nullopt;
  const size_t features = InputWidth(model.graph(), source);
  LoadedTrees out;
  out.ensemble = ensemble->op_type() == "TreeEnsembleRegressor" ? Regressor(*ensemble, features, source)
                                                                : Classifier(*ensemble, features, source);
  std::string producer = model.producer_name().empty() ? "ONNX" : model.producer_name();
  if (!model.producer_version().empty()) producer += " " + model.producer_version();
  out.info = {ModelFormat::Onnx, source, producer + ", " + ensemble->op_type(), ""};
  return out;
}

}  // namespace runnel::model
