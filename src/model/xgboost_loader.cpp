// XGBoost's JSON model format (Booster.save_model("model.json"), XGBoost 1.x and 2.x):
// learner.learner_model_param (base_score, num_class, num_feature), learner.objective,
// learner.gradient_booster (gbtree, or dart with its weight_drop) holding the trees as
// parallel arrays. Read with nlohmann::json; every array is checked by TreeEnsemble
// before anything is scored.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "loaders.hpp"
#include "runnel/core/error.hpp"

namespace runnel::model {

namespace {

using nlohmann::json;
using trees::Transform;

[[noreturn]] void Refuse(const std::string& source, const std::string& what) {
  throw Error(ErrorCode::Model, fmt::format("{}: {}", source, what));
}

const json& Member(const json& object, const char* name, const std::string& source, const std::string& where) {
  if (!object.is_object() || !object.contains(name)) Refuse(source, fmt::format("{} has no '{}'", where, name));
  return object.at(name);
}

// XGBoost writes its parameters as strings ("5E-1", "3"); accept numbers too.
double Number(const json& value, const std::string& source, const std::string& what) {
  if (value.is_number()) return value.get<double>();
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    char* end = nullptr;
    const double parsed = std::strtod(text.c_str(), &end);
    if (!text.empty() && end == text.c_str() + text.size() && std::isfinite(parsed)) return parsed;
  }
  Refuse(source, fmt::format("{} is not a number: {}", what, value.dump()));
}

std::string Text(const json& value, const std::string& source, const std::string& what) {
  if (!value.is_string()) Refuse(source, fmt::format("{} is not a string: {}", what, value.dump()));
  return value.get<std::string>();
}

size_t Count(const json& params, const char* name, size_t fallback, const std::string& source) {
  if (!params.contains(name)) return fallback;
  const double value = Number(params.at(name), source, name);
  if (value < 0 || value > 1e9 || value != std::floor(value)) Refuse(source, fmt::format("{} is {}", name, value));
  return static_cast<size_t>(value);
}

template <class T>
std::vector<T> Array(const json& tree, const char* name, size_t index, const std::string& source) {
  const json& value = Member(tree, name, source, fmt::format("tree {}", index));
  if (!value.is_array()) Refuse(source, fmt::format("tree {}: '{}' is not an array", index, name));
  std::vector<T> out;
  out.reserve(value.size());
  for (const auto& item : value) {
    if (item.is_boolean()) {
      out.push_back(static_cast<T>(item.get<bool>()));
    } else if (item.is_number()) {
      const double number = item.get<double>();
      if constexpr (std::is_integral_v<T>) {
        if (number != std::floor(number) || number < -2147483648.0 || number > 2147483647.0)
          Refuse(source, fmt::format("tree {}: '{}' holds {}, not an index", index, name, number));
      }
      out.push_back(static_cast<T>(number));
    } else {
      Refuse(source, fmt::format("tree {}: '{}' holds {}, not a number", index, name, item.dump()));
    }
  }
  return out;
}

trees::Tree ReadTree(const json& tree, size_t index, float weight, const std::string& source) {
  trees::Tree out;
  out.left = Array<int32_t>(tree, "left_children", index, source);
  out.right = Array<int32_t>(tree, "right_children", index, source);
  out.feature = Array<int32_t>(tree, "split_indices", index, source);
  out.threshold = Array<float>(tree, "split_conditions", index, source);
  out.default_left = Array<uint8_t>(tree, "default_left", index, source);
  if (tree.contains("split_type")) {
    for (int type : Array<int32_t>(tree, "split_type", index, source)) {
      if (type != 0) Refuse(source, fmt::format("tree {}: categorical splits are not supported", index));
    }
  }
  if (tree.contains("tree_param") && Count(tree.at("tree_param"), "size_leaf_vector", 0, source) > 1)
    Refuse(source, fmt::format("tree {}: vector leaves (multi_strategy) are not supported", index));
  // A dart model weighs each tree at prediction.
  for (size_t i = 0; i < out.left.size() && weight != 1.0f; ++i) {
    if (out.left[i] == -1 && i < out.threshold.size()) out.threshold[i] *= weight;
  }
  return out;
}

struct Objective {
  Transform transform;
  // How base_score (given as an output) becomes a margin.
  enum class Link { kIdentity, kLogit, kLog } link;
};

Objective ObjectiveOf(const std::string& name, size_t classes, const std::string& source) {
  using Link = Objective::Link;
  if (name == "binary:logistic" || name == "reg:logistic") return {Transform::kSigmoid, Link::kLogit};
  if (name == "multi:softprob") return {Transform::kSoftmax, Link::kIdentity};
  if (name == "multi:softmax") return {Transform::kArgMax, Link::kIdentity};
  if (name == "count:poisson" || name == "reg:gamma" || name == "reg:tweedie") return {Transform::kExp, Link::kLog};
  if (name == "reg:squarederror" || name == "reg:squaredlogerror" || name == "reg:pseudohubererror" ||
      name == "reg:absoluteerror" || name == "reg:quantileerror" || name == "binary:logitraw" ||
      name.starts_with("rank:")) {
    return {Transform::kIdentity, Link::kIdentity};
  }
  Refuse(source, fmt::format("objective '{}' is not supported{}", name, classes > 0 ? " (multi-class)" : ""));
}

float BaseMargin(double base_score, Objective::Link link, const std::string& source) {
  switch (link) {
    case Objective::Link::kIdentity: return static_cast<float>(base_score);
    case Objective::Link::kLogit:
      if (base_score <= 0 || base_score >= 1) Refuse(source, fmt::format("base_score {} is not in (0, 1)", base_score));
      return static_cast<float>(-std::log(1.0 / base_score - 1.0));
    case Objective::Link::kLog:
      if (base_score <= 0) Refuse(source, fmt::format("base_score {} is not positive", base_score));
      return static_cast<float>(std::log(base_score));
  }
  return 0;
}

std::string Producer(const json& doc) {
  if (!doc.contains("version") || !doc.at("version").is_array()) return "XGBoost";
  std::string version;
  for (const auto& part : doc.at("version")) version += (version.empty() ? "" : ".") + part.dump();
  return "XGBoost " + version;
}

}  // namespace

LoadedTrees LoadXGBoostJson(std::string_view bytes, const std::string& source) {
  json doc;
  try {
    doc = json::parse(bytes);
  } catch (const json::exception& e) {
    Refuse(source, fmt::format("not valid JSON: {}", e.what()));
  }
  if (!doc.is_object() || !doc.contains("learner"))
    Refuse(source, "a JSON file that is not an XGBoost model (no 'learner'; save it with Booster.save_model)");
  const json& learner = doc.at("learner");
  const json& params = Member(learner, "learner_model_param", source, "learner");
  const size_t classes = Count(params, "num_class", 0, source);
  const size_t targets = Count(params, "num_target", 1, source);
  const size_t features = Count(params, "num_feature", 0, source);
  const std::string objective_name =
      Text(Member(Member(learner, "objective", source, "learner"), "name", source, "learner.objective"), source,
           "learner.objective.name");
  const Objective objective = ObjectiveOf(objective_name, classes, source);
  const json& booster = Member(learner, "gradient_booster", source, "learner");
  const std::string kind =
      Text(Member(booster, "name", source, "learner.gradient_booster"), source, "learner.gradient_booster.name");
  if (kind != "gbtree" && kind != "dart")
    Refuse(source, fmt::format("booster '{}' is not supported (gbtree and dart are)", kind));
  const json& model = kind == "dart" ? Member(Member(booster, "gbtree", source, "the dart booster"), "model", source,
                                              "the dart booster's gbtree")
                                     : Member(booster, "model", source, "learner.gradient_booster");
  const json& tree_list = Member(model, "trees", source, "the booster's model");
  const json& tree_info = Member(model, "tree_info", source, "the booster's model");
  if (!tree_list.is_array() || !tree_info.is_array() || tree_list.size() != tree_info.size())
    Refuse(source, "'trees' and 'tree_info' are not arrays of the same length");
  std::vector<float> weights(tree_list.size(), 1.0f);
  if (kind == "dart") {
    const json& drop = Member(booster, "weight_drop", source, "the dart booster");
    if (!drop.is_array() || drop.size() != tree_list.size()) Refuse(source, "'weight_drop' does not weigh every tree");
    for (size_t t = 0; t < drop.size(); ++t) weights[t] = static_cast<float>(Number(drop[t], source, "weight_drop"));
  }
  std::vector<trees::Tree> trees;
  trees.reserve(tree_list.size());
  for (size_t t = 0; t < tree_list.size(); ++t) {
    trees.push_back(ReadTree(tree_list[t], t, weights[t], source));
    const double group = Number(tree_info[t], source, "tree_info");
    if (group < 0 || group > 1e6 || group != std::floor(group))
      Refuse(source, fmt::format("tree {}: tree_info {} is not an output group", t, group));
    trees.back().group = static_cast<int32_t>(group);
  }
  // Every output group has trees of its own: a larger count is a hostile file (and
  // would be allocated per row of a batch).
  const size_t groups = classes > 0 ? classes : targets;
  if (groups == 0 || groups > std::max<size_t>(1, trees.size()))
    Refuse(source, fmt::format("{} output groups (num_class {}, num_target {}) for {} trees", groups, classes, targets,
                               trees.size()));
  const double base_score = Number(Member(params, "base_score", source, "learner_model_param"), source, "base_score");
  std::vector<float> base(groups, BaseMargin(base_score, objective.link, source));
  LoadedTrees out;
  out.ensemble =
      std::make_shared<const trees::TreeEnsemble>(trees, features, std::move(base), objective.transform, source);
  out.info.format = ModelFormat::XGBoostJson;
  out.info.source = source;
  out.info.producer = Producer(doc) + ", " + objective_name;
  return out;
}

}  // namespace runnel::model
