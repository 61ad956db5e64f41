// Keras models, both on-disk formats:
//
// Legacy HDF5 (.h5, `model.save("m.h5")`, Keras 2): the root attribute `model_config`
// holds the architecture as JSON ({"class_name": "Sequential"|"Functional"|"Model",
// "config": {...}}); weights live under /model_weights/<layer>/, whose attribute
// `weight_names` lists the datasets in order (e.g. "dense/kernel:0", "dense/bias:0").
// /optimizer_weights is ignored.
//
// Keras v3 (.keras): a zip holding config.json (the same architecture JSON, newer
// spellings), metadata.json ({"keras_version": ...}) and model.weights.h5, where the
// variables of the i-th layer of a class are at /layers/<snake_case class>[_i]/vars/<n>
// (the first "dense", then "dense_1", ...), in the same order as above.
//
// Both become the same Graph. Every shape read from the file is checked against the
// architecture before use; errors name the file and the layer.
#include <fmt/format.h>
#include <zip.h>

#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "hdf5_file.hpp"
#include "isolation.hpp"
#include "loaders.hpp"
#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"

namespace runnel::model {
namespace {

using nlohmann::json;

// Returns the weights of a layer, in Keras order.
using WeightReader = std::function<std::vector<Tensor>(const std::string& layer_name, const std::string& class_name)>;

struct KerasContext {
  std::string source;
  int keras_major = 2;
  WeightReader weights;
};

[[noreturn]] void Fail(const KerasContext& ctx, const std::string& layer, const std::string& what) {
  if (layer.empty()) throw Error(ErrorCode::Model, fmt::format("{}: {}", ctx.source, what));
  throw Error(ErrorCode::Model, fmt::format("{}: layer '{}': {}", ctx.source, layer, what));
}

const json* Find(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::string GetString(const KerasContext& ctx, const std::string& layer, const json& object, const char* key) {
  const json* value = Find(object, key);
  if (value == nullptr || !value->is_string()) Fail(ctx, layer, fmt::format("'{}' must be a string", key));
  return value->get<std::string>();
}

double GetNumber(const KerasContext& ctx, const std::string& layer, const json& object, const char* key,
                 double fallback) {
  const json* value = Find(object, key);
  if (value == nullptr) return fallback;
  if (!value->is_number()) Fail(ctx, layer, fmt::format("'{}' must be a number", key));
  return value->get<double>();
}

bool GetBool(const json& object, const char* key, bool fallback) {
  const json* value = Find(object, key);
  return value != nullptr && value->is_boolean() ? value->get<bool>() : fallback;
}

// Product of the non-batch dimensions of a Keras shape like [null, 3, 3].
size_t ShapeWidth(const KerasContext& ctx, const std::string& layer, const json& shape) {
  if (!shape.is_array() || shape.size() < 2 || shape.size() > 5) {
    Fail(ctx, layer, "input shape must be [batch, d1, ...] with 1 to 4 feature dimensions");
  }
  size_t width = 1;
  for (size_t i = 1; i < shape.size(); ++i) {
    if (!shape[i].is_number_integer() || shape[i].get<int64_t>() <= 0 || shape[i].get<int64_t>() > (1 << 20)) {
      Fail(ctx, layer, "input dimensions must be positive integers (only the batch may be unknown)");
    }
    width *= shape[i].get<size_t>();
    if (width > (size_t{1} << 24)) Fail(ctx, layer, "input is too wide");
  }
  return width;
}

std::optional<size_t> DeclaredInputWidth(const KerasContext& ctx, const std::string& layer, const json& config) {
  for (const char* key : {"batch_input_shape", "batch_shape"}) {
    if (const json* shape = Find(config, key)) return ShapeWidth(ctx, layer, *shape);
  }
  return std::nullopt;
}

ActivationSpec ParseActivation(const KerasContext& ctx, const std::string& layer, const json& value) {
  std::string name;
  if (value.is_string()) {
    name = value.get<std::string>();
  } else if (value.is_object()) {
    // Keras 3 may serialise {"module": "keras.activations", "class_name": "function", "config": "relu"}.
    const json* config = Find(value, "config");
    if (config != nullptr && config->is_string()) {
      name = config->get<std::string>();
    } else {
      Fail(ctx, layer, "unsupported activation object");
    }
  } else if (value.is_null()) {
    name = "linear";
  } else {
    Fail(ctx, layer, "activation must be a name");
  }
  if (name == "linear" || name == "None") return {Activation::Linear};
  if (name == "relu") return {Activation::Relu};
  if (name == "sigmoid") return {Activation::Sigmoid};
  if (name == "tanh") return {Activation::Tanh};
  if (name == "softmax") return {Activation::Softmax};
  if (name == "elu") return {Activation::Elu, 1.0f};
  if (name == "selu") return {Activation::Selu};
  if (name == "gelu") return {Activation::Gelu};
  if (name == "swish" || name == "silu") return {Activation::Swish};
  if (name == "softplus") return {Activation::Softplus};
  if (name == "leaky_relu") return {Activation::LeakyRelu, 0.2f};
  if (name == "relu6") return {Activation::Clip, 0.0f, 6.0f};
  if (name == "exponential") return {Activation::Exponential};
  if (name == "hard_sigmoid") {
    // Keras 2: clip(0.2x + 0.5); Keras 3: relu6(x + 3) / 6.
    return ctx.keras_major >= 3 ? ActivationSpec{Activation::HardSigmoid, 1.0f / 6.0f, 0.5f}
                                : ActivationSpec{Activation::HardSigmoid, 0.2f, 0.5f};
  }
  Fail(ctx, layer, fmt::format("activation '{}' is not supported", name));
}

// Keras's naming.to_snake_case: "BatchNormalization" -> "batch_normalization".
std::string SnakeCase(const std::string& name) {
  static const std::regex kNonWord("\\W+");
  static const std::regex kCapitalWord("(.)([A-Z][a-z]+)");
  static const std::regex kLowerUpper("([a-z])([A-Z])");
  std::string out = std::regex_replace(name, kNonWord, "");
  out = std::regex_replace(out, kCapitalWord, "$1_$2");
  out = std::regex_replace(out, kLowerUpper, "$1_$2");
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

struct LayerSpec {
  std::string class_name;
  std::string name;
  const json* config = nullptr;
  std::vector<std::string> inbound;  // names of the layers feeding node 0
};

// Collects the layer names of Keras 3 "__keras_tensor__" references anywhere in `args`.
void CollectHistory(const json& value, std::vector<std::string>& out) {
  if (value.is_object()) {
    if (const json* config = Find(value, "config")) {
      if (const json* history = Find(*config, "keras_history")) {
        if (history->is_array() && !history->empty() && (*history)[0].is_string()) {
          out.push_back((*history)[0].get<std::string>());
          return;
        }
      }
    }
    for (const auto& [key, item] : value.items()) CollectHistory(item, out);
  } else if (value.is_array()) {
    for (const auto& item : value) CollectHistory(item, out);
  }
}

std::vector<std::string> ParseInbound(const KerasContext& ctx, const std::string& layer, const json& layer_json) {
  std::vector<std::string> names;
  const json* nodes = Find(layer_json, "inbound_nodes");
  if (nodes == nullptr || !nodes->is_array() || nodes->empty()) return names;
  if (nodes->size() > 1) Fail(ctx, layer, "shared layers (applied more than once) are not supported");
  const json& node = (*nodes)[0];
  if (node.is_array()) {
    // Keras 2: [["dense", 0, 0, {}], ...]
    for (const auto& ref : node) {
      if (!ref.is_array() || ref.empty() || !ref[0].is_string()) Fail(ctx, layer, "malformed inbound node");
      names.push_back(ref[0].get<std::string>());
    }
  } else if (node.is_object()) {
    // Keras 3: {"args": [...], "kwargs": {...}}
    if (const json* args = Find(node, "args")) CollectHistory(*args, names);
  } else {
    Fail(ctx, layer, "malformed inbound node");
  }
  return names;
}

std::vector<std::string> ParseEndpointNames(const KerasContext& ctx, const json& config, const char* key) {
  const json* value = Find(config, key);
  if (value == nullptr || !value->is_array()) Fail(ctx, "", fmt::format("the model config lacks '{}'", key));
  std::vector<std::string> names;
  if (!value->empty() && (*value)[0].is_string()) {  // a single ["name", 0, 0]
    names.push_back((*value)[0].get<std::string>());
    return names;
  }
  for (const auto& ref : *value) {
    if (!ref.is_array() || ref.empty() || !ref[0].is_string()) Fail(ctx, "", fmt::format("malformed '{}'", key));
    names.push_back(ref[0].get<std::string>());
  }
  return names;
}

const Tensor& Expect(const KerasContext& ctx, const std::string& layer, const std::vector<Tensor>& weights,
                     size_t index, const char* what, std::vector<size_t> dims) {
  if (index >= weights.size()) Fail(ctx, layer, fmt::format("weight '{}' is missing", what));
  const Tensor& t = weights[index];
  if (t.dims != dims) {
    Fail(
        ctx, layer,
        fmt::format("weight '{}' has shape [{}], expected [{}]", what, fmt::join(t.dims, ", "), fmt::join(dims, ", ")));
  }
  return t;
}

class GraphBuilder {
 public:
  explicit GraphBuilder(const KerasContext& ctx) : ctx_(ctx) {}

  int AddInput(const std::string& name, size_t width) {
    int id = graph_.AddValue(name, width);
    graph_.inputs.push_back(id);
    values_[name] = id;
    return id;
  }

  // Dense: units, activation, kernel [in, units] and (use_bias) bias [units].
  void DenseNode(const LayerSpec& layer, size_t in_width, Node& node) {
    const json& config = *layer.config;
    const std::string& name = layer.name;
    const double units = GetNumber(ctx_, name, config, "units", -1);
    if (units < 1 || units > (1 << 20) || units != std::floor(units))
      Fail(ctx_, name, "'units' must be a positive integer");
    node.kind = OpKind::Dense;
    node.in_width = in_width;
    node.out_width = static_cast<size_t>(units);
    node.activation = ParseActivation(ctx_, name, Find(config, "activation") ? config["activation"] : json("linear"));
    auto weights = ctx_.weights(name, layer.class_name);
    node.weights = Expect(ctx_, name, weights, 0, "kernel", {node.in_width, node.out_width}).values;
    if (GetBool(config, "use_bias", true)) node.bias = Expect(ctx_, name, weights, 1, "bias", {node.out_width}).values;
  }

  // BatchNormalization at inference: an affine map from gamma, beta and the moving
  // statistics (gamma and beta optional: scale, center).
  void BatchNormalizationNode(const LayerSpec& layer, size_t n, Node& node) {
    const json& config = *layer.config;
    const std::string& name = layer.name;
    CheckLastAxis(name, config);
    const bool scale = GetBool(config, "scale", true);
    const bool center = GetBool(config, "center", true);
    const double epsilon = GetNumber(ctx_, name, config, "epsilon", 1e-3);
    auto weights = ctx_.weights(name, layer.class_name);
    size_t index = 0;
    std::vector<float> gamma(n, 1.0f), beta(n, 0.0f);
    if (scale) gamma = Expect(ctx_, name, weights, index++, "gamma", {n}).values;
    if (center) beta = Expect(ctx_, name, weights, index++, "beta", {n}).values;
    const auto& mean = Expect(ctx_, name, weights, index++, "moving_mean", {n}).values;
    const auto& variance = Expect(ctx_, name, weights, index++, "moving_variance", {n}).values;
    node.kind = OpKind::Affine;
    for (size_t c = 0; c < n; ++c) {
      const double s = gamma[c] / std::sqrt(static_cast<double>(variance[c]) + epsilon);
      node.scale.push_back(static_cast<float>(s));
      node.shift.push_back(static_cast<float>(beta[c] - mean[c] * s));
    }
  }

  // Normalization: an affine map from mean and variance (weights, or the config's
  // lists); `invert` undoes it.
  void NormalizationNode(const LayerSpec& layer, size_t n, Node& node) {
    const json& config = *layer.config;
    const std::string& name = layer.name;
    CheckLastAxis(name, config);
    std::vector<float> mean, variance;
    auto weights = ctx_.weights(name, layer.class_name);
    if (weights.size() >= 2) {
      mean = Expect(ctx_, name, weights, 0, "mean",
                    weights[0].dims.size() == 2 ? std::vector<size_t>{1, n} : std::vector<size_t>{n})
                 .values;
      variance = Expect(ctx_, name, weights, 1, "variance", weights[1].dims).values;
    } else {
      mean = ConfigVector(name, config, "mean", n);
      variance = ConfigVector(name, config, "variance", n);
    }
    if (variance.size() != n)
      Fail(ctx_, name, fmt::format("variance holds {} values, expected {}", variance.size(), n));
    const bool invert = GetBool(config, "invert", false);
    node.kind = OpKind::Affine;
    for (size_t c = 0; c < n; ++c) {
      // Keras: (x - mean) / max(sqrt(variance), epsilon), epsilon = 1e-7.
      const double sd = std::max(std::sqrt(static_cast<double>(variance[c])), 1e-7);
      node.scale.push_back(static_cast<float>(invert ? sd : 1.0 / sd));
      node.shift.push_back(static_cast<float>(invert ? mean[c] : -mean[c] / sd));
    }
  }

  // Add, Subtract, Multiply of two or more inputs as a chain ((a op b) op c) ...;
  // returns the last node's value.
  int AddBinaryChain(const LayerSpec& layer, const std::vector<int>& inputs) {
    const std::string& name = layer.name;
    const std::string& cls = layer.class_name;
    if (inputs.size() < 2 || (cls == "Subtract" && inputs.size() != 2))
      Fail(ctx_, name, fmt::format("{} needs two inputs, got {}", cls, inputs.size()));
    const BinaryOp op = cls == "Add" ? BinaryOp::Add : cls == "Subtract" ? BinaryOp::Sub : BinaryOp::Mul;
    int acc = inputs[0];
    for (size_t i = 1; i < inputs.size(); ++i) {
      Node step;
      step.kind = OpKind::Binary;
      step.binary = op;
      step.name = name;
      step.inputs = {acc, inputs[i]};
      const size_t w =
          std::max(graph_.value_widths[static_cast<size_t>(acc)], graph_.value_widths[static_cast<size_t>(inputs[i])]);
      step.output = i + 1 == inputs.size() ? graph_.AddValue(name, w) : graph_.AddValue(name + "/partial", w);
      acc = step.output;
      graph_.nodes.push_back(std::move(step));
    }
    values_[name] = acc;
    return acc;
  }

  // Translates one layer applied to `inputs` (value ids); returns its output value.
  int AddLayer(const LayerSpec& layer, const std::vector<int>& inputs) {
    const json& config = *layer.config;
    const std::string& name = layer.name;
    auto width = [&](size_t i) { return graph_.value_widths[static_cast<size_t>(inputs.at(i))]; };
    auto single = [&] {
      if (inputs.size() != 1) Fail(ctx_, name, fmt::format("expects one input, got {}", inputs.size()));
    };
    const std::string& cls = layer.class_name;
    Node node;
    node.name = name;
    node.inputs = inputs;
    size_t out_width = inputs.empty() ? 0 : width(0);

    if (cls == "Dense") {
      single();
      DenseNode(layer, width(0), node);
      out_width = node.out_width;
    } else if (cls == "Activation") {
      single();
      node.kind = OpKind::Activate;
      node.activation = ParseActivation(ctx_, name, Find(config, "activation") ? config["activation"] : json(nullptr));
    } else if (cls == "ReLU") {
      single();
      if (Find(config, "max_value") || GetNumber(ctx_, name, config, "negative_slope", 0) != 0 ||
          GetNumber(ctx_, name, config, "threshold", 0) != 0) {
        Fail(ctx_, name, "ReLU with max_value, negative_slope or threshold is not supported");
      }
      node.kind = OpKind::Activate;
      node.activation = {Activation::Relu};
    } else if (cls == "LeakyReLU") {
      single();
      node.kind = OpKind::Activate;
      const double slope = GetNumber(ctx_, name, config, "negative_slope", GetNumber(ctx_, name, config, "alpha", 0.3));
      node.activation = {Activation::LeakyRelu, static_cast<float>(slope)};
    } else if (cls == "ELU") {
      single();
      node.kind = OpKind::Activate;
      node.activation = {Activation::Elu, static_cast<float>(GetNumber(ctx_, name, config, "alpha", 1.0))};
    } else if (cls == "Softmax") {
      single();
      node.kind = OpKind::Activate;
      node.activation = {Activation::Softmax};
    } else if (cls == "Dropout" || cls == "GaussianNoise" || cls == "GaussianDropout" || cls == "AlphaDropout" ||
               cls == "ActivityRegularization" || cls == "Flatten") {
      single();  // identities at inference; Flatten is one because values are flat already
      node.kind = OpKind::Identity;
    } else if (cls == "BatchNormalization") {
      single();
      BatchNormalizationNode(layer, width(0), node);
    } else if (cls == "Normalization") {
      single();
      NormalizationNode(layer, width(0), node);
    } else if (cls == "Add" || cls == "Subtract" || cls == "Multiply") {
      return AddBinaryChain(layer, inputs);
    } else if (cls == "Concatenate") {
      const double axis = GetNumber(ctx_, name, config, "axis", -1);
      if (axis != -1 && axis != 1) Fail(ctx_, name, "Concatenate is supported along the last axis only");
      if (inputs.empty()) Fail(ctx_, name, "Concatenate needs inputs");
      node.kind = OpKind::Concat;
      out_width = 0;
      for (size_t i = 0; i < inputs.size(); ++i) out_width += width(i);
    } else {
      Fail(ctx_, name, fmt::format("layer class '{}' is not supported", cls));
    }
    node.output = graph_.AddValue(name, out_width);
    values_[name] = node.output;
    graph_.nodes.push_back(std::move(node));
    return values_[name];
  }

  int Value(const std::string& layer_name, const std::string& user) const {
    auto it = values_.find(layer_name);
    if (it == values_.end()) Fail(ctx_, user, fmt::format("input layer '{}' is not defined before it", layer_name));
    return it->second;
  }
  bool HasValue(const std::string& layer_name) const { return values_.contains(layer_name); }

  Graph Finish(std::vector<int> outputs) {
    graph_.outputs = std::move(outputs);
    return std::move(graph_);
  }

 private:
  void CheckLastAxis(const std::string& name, const json& config) const {
    const json* axis = Find(config, "axis");
    if (axis == nullptr) return;
    json value = *axis;
    if (value.is_array() && value.size() == 1) value = value[0];
    if (!value.is_number_integer() || (value.get<int>() != -1 && value.get<int>() != 1)) {
      Fail(ctx_, name, "only normalization over the last axis is supported");
    }
  }

  std::vector<float> ConfigVector(const std::string& name, const json& config, const char* key, size_t n) const {
    const json* value = Find(config, key);
    if (value == nullptr) Fail(ctx_, name, fmt::format("'{}' is neither in the weights nor in the config", key));
    std::vector<float> out;
    if (value->is_number()) out.assign(n, value->get<float>());
    if (value->is_array()) {
      for (const auto& v : value->flatten()) {
        if (!v.is_number()) Fail(ctx_, name, fmt::format("'{}' must hold numbers", key));
        out.push_back(v.get<float>());
      }
    }
    if (out.size() == 1) out.assign(n, out[0]);
    if (out.size() != n) Fail(ctx_, name, fmt::format("'{}' holds {} values, expected {}", key, out.size(), n));
    return out;
  }

  const KerasContext& ctx_;
  Graph graph_;
  std::map<std::string, int> values_;
};

std::vector<LayerSpec> ParseLayers(const KerasContext& ctx, const json& config) {
  const json* layers = Find(config, "layers");
  if (layers == nullptr || !layers->is_array()) Fail(ctx, "", "the model config has no 'layers' list");
  if (layers->size() > 10000) Fail(ctx, "", "too many layers");
  std::vector<LayerSpec> specs;
  for (const auto& layer : *layers) {
    LayerSpec spec;
    spec.class_name = GetString(ctx, "", layer, "class_name");
    const json* layer_config = Find(layer, "config");
    if (layer_config == nullptr || !layer_config->is_object()) {
      Fail(ctx, "", fmt::format("a {} layer has no config", spec.class_name));
    }
    spec.config = layer_config;
    spec.name = Find(*layer_config, "name") ? GetString(ctx, "", *layer_config, "name")
                : Find(layer, "name")       ? GetString(ctx, "", layer, "name")
                                            : fmt::format("layer_{}", specs.size());
    if (spec.class_name == "Sequential" || spec.class_name == "Functional" || spec.class_name == "Model") {
      Fail(ctx, spec.name, "nested models are not supported");
    }
    spec.inbound = ParseInbound(ctx, spec.name, layer);
    specs.push_back(std::move(spec));
  }
  return specs;
}

Graph BuildSequential(const KerasContext& ctx, const json& config) {
  auto layers = ParseLayers(ctx, config);
  if (layers.empty()) Fail(ctx, "", "the Sequential model has no layers");
  GraphBuilder builder(ctx);
  size_t first = 0;
  int current = -1;
  if (layers[0].class_name == "InputLayer") {
    auto width = DeclaredInputWidth(ctx, layers[0].name, *layers[0].config);
    if (!width) Fail(ctx, layers[0].name, "the input layer declares no shape");
    current = builder.AddInput(layers[0].name, *width);
    first = 1;
  } else if (auto width = DeclaredInputWidth(ctx, layers[0].name, *layers[0].config)) {
    current = builder.AddInput("input", *width);
  } else if (const json* build = Find(config, "build_input_shape")) {
    current = builder.AddInput("input", ShapeWidth(ctx, "", *build));
  } else {
    Fail(ctx, layers[0].name, "the model declares no input shape");
  }
  for (size_t i = first; i < layers.size(); ++i) current = builder.AddLayer(layers[i], {current});
  return builder.Finish({current});
}

Graph BuildFunctional(const KerasContext& ctx, const json& config) {
  auto layers = ParseLayers(ctx, config);
  const auto input_names = ParseEndpointNames(ctx, config, "input_layers");
  const auto output_names = ParseEndpointNames(ctx, config, "output_layers");
  GraphBuilder builder(ctx);
  std::map<std::string, const LayerSpec*> by_name;
  for (const auto& layer : layers) by_name[layer.name] = &layer;
  for (const auto& input : input_names) {
    auto it = by_name.find(input);
    if (it == by_name.end() || it->second->class_name != "InputLayer") {
      Fail(ctx, input, "listed as a model input but is not an InputLayer");
    }
    auto width = DeclaredInputWidth(ctx, input, *it->second->config);
    if (!width) Fail(ctx, input, "the input layer declares no shape");
    builder.AddInput(input, *width);
  }
  for (const auto& layer : layers) {
    if (layer.class_name == "InputLayer") {
      if (!builder.HasValue(layer.name)) Fail(ctx, layer.name, "an InputLayer that is not a model input");
      continue;
    }
    if (layer.inbound.empty()) Fail(ctx, layer.name, "the layer has no inputs");
    std::vector<int> inputs;
    for (const auto& source : layer.inbound) inputs.push_back(builder.Value(source, layer.name));
    builder.AddLayer(layer, inputs);
  }
  std::vector<int> outputs;
  for (const auto& output : output_names) outputs.push_back(builder.Value(output, output));
  return builder.Finish(outputs);
}

Graph BuildGraph(const KerasContext& ctx, const json& model) {
  const std::string cls = GetString(ctx, "", model, "class_name");
  const json* config = Find(model, "config");
  if (config == nullptr || !config->is_object()) Fail(ctx, "", "the model config has no 'config' object");
  Graph graph;
  if (cls == "Sequential") {
    graph = BuildSequential(ctx, *config);
  } else if (cls == "Functional" || cls == "Model") {
    graph = BuildFunctional(ctx, *config);
  } else {
    Fail(ctx, "", fmt::format("model class '{}' is not supported (Sequential or Functional)", cls));
  }
  graph.Validate(ctx.source);
  return graph;
}

json ParseJson(const KerasContext& ctx, std::string_view text, const char* what) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: {} is not valid JSON at byte {}: {}", ctx.source, what, e.byte, e.what()));
  }
}

int MajorVersion(const std::string& version) {
  return version.empty() || !std::isdigit(static_cast<unsigned char>(version[0])) ? 2 : std::atoi(version.c_str());
}

// ---- zip (libzip), for .keras ----

struct ZipDeleter {
  void operator()(zip_t* archive) const { zip_discard(archive); }
};
struct ZipFileDeleter {
  void operator()(zip_file_t* file) const { zip_fclose(file); }
};

// Reads one member, refusing from the archive's directory alone (before allocating)
// a member larger than `limit` or than what is left of `*budget` (the model's
// inflated size so far, MaxModelBytes in all), or inflating more than kMaxInflation
// times its stored size: a decompression bomb costs milliseconds, not memory.
std::string ReadZipMember(zip_t* archive, const char* name, const std::string& source, size_t limit, size_t* budget) {
  zip_stat_t stat;
  zip_stat_init(&stat);
  if (zip_stat(archive, name, 0, &stat) != 0 || !(stat.valid & ZIP_STAT_SIZE)) {
    throw Error(ErrorCode::Model, fmt::format("{}: the archive has no '{}'", source, name));
  }
  if (stat.size > limit || stat.size > *budget) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: '{}' inflates to {} bytes, more than the {} bytes allowed (RUNNEL_MAX_MODEL_BYTES)",
                            source, name, stat.size, std::min<uint64_t>(limit, *budget)));
  }
  const uint64_t stored = (stat.valid & ZIP_STAT_COMP_SIZE) ? stat.comp_size : stat.size;
  if (stat.size > 4096 && stat.size / std::max<uint64_t>(stored, 1) > kMaxInflation) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: '{}' inflates {} stored bytes to {}: more than {} times, a decompression bomb", source,
                            name, stored, stat.size, kMaxInflation));
  }
  *budget -= static_cast<size_t>(stat.size);
  std::unique_ptr<zip_file_t, ZipFileDeleter> file(zip_fopen(archive, name, 0));
  if (!file) throw Error(ErrorCode::Model, fmt::format("{}: cannot open '{}' in the archive", source, name));
  std::string data(static_cast<size_t>(stat.size), '\0');
  zip_int64_t got = zip_fread(file.get(), data.data(), stat.size);
  if (got < 0 || static_cast<zip_uint64_t>(got) != stat.size) {
    throw Error(ErrorCode::Model, fmt::format("{}: '{}' is truncated or corrupt", source, name));
  }
  return data;
}

}  // namespace

namespace {

LoadedGraph ParseKerasH5(std::string_view bytes, const std::string& source) {
  Hdf5File file(bytes, source);
  KerasContext ctx;
  ctx.source = source;
  if (!file.HasAttribute("/", "model_config")) {
    throw Error(ErrorCode::Model, fmt::format("{}: no 'model_config' attribute: a weights-only file cannot be served "
                                              "(save the full model)",
                                              source));
  }
  const std::string version = file.HasAttribute("/", "keras_version") ? file.StringAttribute("/", "keras_version") : "";
  ctx.keras_major = MajorVersion(version);
  const std::string weights_root = file.Exists("/model_weights") ? "/model_weights" : "";
  ctx.weights = [&file, &weights_root, &source](const std::string& layer, const std::string&) {
    const std::string group = weights_root + "/" + layer;
    std::vector<Tensor> out;
    if (!file.Exists(group) || !file.HasAttribute(group, "weight_names")) return out;
    for (const auto& weight : file.StringListAttribute(group, "weight_names")) {
      if (weight.empty() || weight.find("..") != std::string::npos) {
        throw Error(ErrorCode::Model, fmt::format("{}: layer '{}': bad weight name '{}'", source, layer, weight));
      }
      out.push_back(file.ReadTensor(group + "/" + weight));
    }
    return out;
  };
  json model = ParseJson(ctx, file.StringAttribute("/", "model_config"), "model_config");
  LoadedGraph loaded{BuildGraph(ctx, model),
                     {ModelFormat::KerasH5, source, "Keras " + (version.empty() ? "?" : version), ""}};
  return loaded;
}

LoadedGraph ParseKerasV3Weights(KerasContext ctx, const json& model, const std::string& version,
                                const std::string& weights_bytes, const std::string& source) {
  Hdf5File file(weights_bytes, source + ":model.weights.h5");
  std::map<std::string, int> used;  // snake_case class name -> times seen
  ctx.weights = [&file, &used](const std::string& layer, const std::string& class_name) {
    std::string key = SnakeCase(class_name);
    auto [it, fresh] = used.try_emplace(key, 0);
    if (!fresh) key += "_" + std::to_string(++it->second);
    std::string vars;
    for (const std::string& candidate :
         {"/layers/" + key + "/vars", "/layers/" + layer + "/vars", "/" + layer + "/vars"}) {
      if (file.Exists(candidate)) {
        vars = candidate;
        break;
      }
    }
    std::vector<Tensor> out;
    if (vars.empty()) return out;
    const auto names = file.Children(vars);
    for (size_t i = 0; i < names.size(); ++i) out.push_back(file.ReadTensor(vars + "/" + std::to_string(i)));
    return out;
  };
  return {BuildGraph(ctx, model), {ModelFormat::KerasV3, source, "Keras " + (version.empty() ? "?" : version), ""}};
}

}  // namespace

LoadedGraph LoadKerasH5(std::string_view bytes, const std::string& source) {
  return ParseIsolated(source, [&] { return ParseKerasH5(bytes, source); });
}

LoadedGraph LoadKerasV3(std::string_view bytes, const std::string& source) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (src == nullptr) throw Error(ErrorCode::Model, fmt::format("{}: cannot read the zip archive", source));
  std::unique_ptr<zip_t, ZipDeleter> archive(zip_open_from_source(src, ZIP_RDONLY, &error));
  if (!archive) {
    zip_source_free(src);
    std::string reason = zip_error_strerror(&error);
    zip_error_fini(&error);
    throw Error(ErrorCode::Model, fmt::format("{}: not a valid .keras zip archive: {}", source, reason));
  }
  zip_error_fini(&error);
  constexpr size_t kMaxJson = size_t{64} << 20;
  size_t budget = MaxModelBytes();
  KerasContext ctx;
  ctx.source = source;
  std::string version;
  {
    std::string metadata_text = ReadZipMember(archive.get(), "metadata.json", source, kMaxJson, &budget);
    json metadata = ParseJson(ctx, metadata_text, "metadata.json");
    if (const json* v = Find(metadata, "keras_version"); v != nullptr && v->is_string())
      version = v->get<std::string>();
  }
  ctx.keras_major = MajorVersion(version);
  json model = ParseJson(ctx, ReadZipMember(archive.get(), "config.json", source, kMaxJson, &budget), "config.json");
  const std::string weights_bytes = ReadZipMember(archive.get(), "model.weights.h5", source, budget, &budget);
  return ParseIsolated(source, [&] { return ParseKerasV3Weights(ctx, model, version, weights_bytes, source); });
}

}  // namespace runnel::model
