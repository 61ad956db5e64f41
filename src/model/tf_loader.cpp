// TensorFlow frozen graphs (`GraphDef`, protobuf, read with src/model/tf_graph.proto):
// dense networks as Keras exports them frozen: one float Placeholder, Const weights
// (float32, tensor_content or float_val), and MatMul, BiasAdd, Add, Relu, Sigmoid,
// Tanh, Softmax and Identity nodes. Nodes may come in any order; they are visited from
// the Placeholder along their uses. The output is the node nobody consumes. Anything
// else is refused naming the node and its op.
#include <fmt/format.h>

#include <cstring>
#include <map>
#include <set>

#include "loaders.hpp"
#include "runnel/core/error.hpp"
#include "tf_graph.pb.h"

namespace runnel::model {
namespace {

constexpr size_t kMaxElements = size_t{1} << 26;

struct Tensor {
  std::vector<int64_t> dims;
  std::vector<float> values;
};

class TfBuilder {
 public:
  TfBuilder(const tf::GraphDef& graph, std::string source) : def_(graph), source_(std::move(source)) {}

  Graph Build() {
    std::map<std::string, const tf::NodeDef*> by_name;
    for (const auto& node : def_.node()) {
      if (!by_name.emplace(node.name(), &node).second) Fail(node, "the name repeats");
    }
    if (by_name.empty()) Fail("", "the graph has no nodes");
    // Constants first; then the one input; then the rest in dependency order.
    for (const auto& node : def_.node()) {
      if (node.op() == "Const") constants_[node.name()] = ReadConst(node);
    }
    const tf::NodeDef* input = nullptr;
    for (const auto& node : def_.node()) {
      if (node.op() == "Placeholder" || node.op() == "PlaceholderV2") {
        if (input != nullptr) Fail(node, "a second Placeholder: one input is supported");
        input = &node;
      }
    }
    if (input == nullptr) Fail("", "no Placeholder: the graph has no input");
    AddInput(*input);
    std::set<std::string> pending;
    for (const auto& node : def_.node()) {
      if (node.op() != "Const" && &node != input && node.op() != "NoOp") pending.insert(node.name());
    }
    while (!pending.empty()) {
      bool progress = false;
      for (auto it = pending.begin(); it != pending.end();) {
        const tf::NodeDef& node = *by_name.at(*it);
        bool ready = true;
        for (const auto& in : node.input()) {
          const std::string name = InputName(in);
          if (!values_.contains(name) && !constants_.contains(name)) {
            if (!by_name.contains(name)) Fail(node, fmt::format("input '{}' does not exist", name));
            ready = false;
          }
        }
        if (!ready) {
          ++it;
          continue;
        }
        AddNode(node);
        it = pending.erase(it);
        progress = true;
      }
      if (!progress) Fail(*by_name.at(*pending.begin()), "the graph has a cycle");
    }
    // The output: the dynamic value nobody consumes.
    std::set<std::string> consumed;
    for (const auto& node : def_.node()) {
      for (const auto& in : node.input()) consumed.insert(InputName(in));
    }
    for (const auto& [name, id] : values_) {
      if (!consumed.contains(name)) graph_.outputs.push_back(id);
    }
    if (graph_.outputs.size() != 1) Fail("", fmt::format("expected one output, found {}", graph_.outputs.size()));
    graph_.FuseDenseChains();
    graph_.Validate(source_);
    return std::move(graph_);
  }

 private:
  [[noreturn]] void Fail(const tf::NodeDef& node, const std::string& what) const {
    throw Error(ErrorCode::Model, fmt::format("{}: node '{}' ({}): {}", source_, node.name(), node.op(), what));
  }
  [[noreturn]] void Fail(const std::string& node, const std::string& what) const {
    if (node.empty()) throw Error(ErrorCode::Model, fmt::format("{}: {}", source_, what));
    throw Error(ErrorCode::Model, fmt::format("{}: node '{}': {}", source_, node, what));
  }

  // "name:0" and "^name" (control input) name the node "name".
  static std::string InputName(const std::string& input) {
    std::string name = input.starts_with('^') ? input.substr(1) : input;
    if (auto colon = name.find(':'); colon != std::string::npos) name.resize(colon);
    return name;
  }

  Tensor ReadConst(const tf::NodeDef& node) const {
    auto it = node.attr().find("value");
    if (it == node.attr().end() || !it->second.has_tensor()) Fail(node, "a Const without a 'value' tensor");
    const tf::TensorProto& t = it->second.tensor();
    if (t.dtype() != 1) Fail(node, fmt::format("tensor type {} is not float32 (1)", t.dtype()));
    Tensor out;
    size_t count = 1;
    for (const auto& d : t.tensor_shape().dim()) {
      if (d.size() < 0 || static_cast<uint64_t>(d.size()) > kMaxElements) Fail(node, "a dimension is out of range");
      out.dims.push_back(d.size());
      count *= static_cast<size_t>(d.size());
      if (count > kMaxElements) Fail(node, "the tensor is too large");
    }
    if (!t.tensor_content().empty()) {
      if (t.tensor_content().size() != count * sizeof(float)) {
        Fail(node, fmt::format("tensor_content holds {} bytes, the shape needs {}", t.tensor_content().size(),
                               count * sizeof(float)));
      }
      out.values.resize(count);
      std::memcpy(out.values.data(), t.tensor_content().data(), count * sizeof(float));
    } else if (static_cast<size_t>(t.float_val_size()) == count) {
      out.values.assign(t.float_val().begin(), t.float_val().end());
    } else if (t.float_val_size() == 1) {
      out.values.assign(count, t.float_val(0));  // a splat
    } else {
      Fail(node, fmt::format("{} float values for a shape of {}", t.float_val_size(), count));
    }
    return out;
  }

  void AddInput(const tf::NodeDef& node) {
    auto shape = node.attr().find("shape");
    int64_t width = -1;
    if (shape != node.attr().end() && shape->second.has_shape()) {
      const auto& dims = shape->second.shape().dim();
      if (dims.size() == 2 && dims[1].size() > 0) width = dims[1].size();
    }
    // Frozen Keras graphs often carry no shape: the first MatMul's weight tells it.
    if (width < 0) {
      for (const auto& other : def_.node()) {
        if (other.op() == "MatMul" && other.input_size() == 2 && InputName(other.input(0)) == node.name()) {
          auto w = constants_.find(InputName(other.input(1)));
          if (w != constants_.end() && w->second.dims.size() == 2) width = w->second.dims[0];
        }
      }
    }
    if (width <= 0 || static_cast<uint64_t>(width) > kMaxElements) {
      Fail(node, "cannot tell the input width (no [batch, n] shape and no MatMul consuming it)");
    }
    const int id = graph_.AddValue(node.name(), static_cast<size_t>(width));
    graph_.inputs.push_back(id);
    values_[node.name()] = id;
  }

  int Dynamic(const tf::NodeDef& node, int i) const {
    if (node.input_size() <= i) Fail(node, fmt::format("input {} is missing", i));
    auto it = values_.find(InputName(node.input(i)));
    if (it == values_.end()) Fail(node, fmt::format("input '{}' must be computed, not a constant", node.input(i)));
    return it->second;
  }

  const Tensor& ConstantOf(const tf::NodeDef& node, int i) const {
    if (node.input_size() <= i) Fail(node, fmt::format("input {} is missing", i));
    auto it = constants_.find(InputName(node.input(i)));
    if (it == constants_.end()) Fail(node, fmt::format("input '{}' must be a Const", node.input(i)));
    return it->second;
  }

  bool Flag(const tf::NodeDef& node, const char* name) const {
    auto it = node.attr().find(name);
    return it != node.attr().end() && it->second.b();
  }

  size_t Width(int id) const { return graph_.value_widths[static_cast<size_t>(id)]; }

  void Emit(Node node, const tf::NodeDef& def, size_t width) {
    node.name = def.name();
    node.output = graph_.AddValue(def.name(), width);
    values_[def.name()] = node.output;
    graph_.nodes.push_back(std::move(node));
  }

  void AddNode(const tf::NodeDef& def) {
    const std::string& op = def.op();
    Node node;
    if (op == "MatMul") {
      if (Flag(def, "transpose_a")) Fail(def, "transpose_a is not supported");
      const int x = Dynamic(def, 0);
      const Tensor& w = ConstantOf(def, 1);
      if (w.dims.size() != 2) Fail(def, "the weight must be 2-D");
      const bool t = Flag(def, "transpose_b");
      const auto rows = static_cast<size_t>(w.dims[0]);
      const auto cols = static_cast<size_t>(w.dims[1]);
      const size_t in = t ? cols : rows;
      const size_t out = t ? rows : cols;
      if (in != Width(x)) Fail(def, fmt::format("the weight takes {} inputs, the node receives {}", in, Width(x)));
      node.kind = OpKind::Dense;
      node.inputs = {x};
      node.in_width = in;
      node.out_width = out;
      node.weights.resize(in * out);
      for (size_t k = 0; k < in; ++k) {
        for (size_t n = 0; n < out; ++n)
          node.weights[k * out + n] = t ? w.values[n * cols + k] : w.values[k * cols + n];
      }
      Emit(std::move(node), def, out);
    } else if (op == "BiasAdd" || op == "Add" || op == "AddV2") {
      const int x = Dynamic(def, 0);
      const Tensor& b = ConstantOf(def, 1);
      if (b.values.size() != Width(x) && b.values.size() != 1)
        Fail(def, fmt::format("a bias of {} values for a width of {}", b.values.size(), Width(x)));
      node.kind = OpKind::Binary;
      node.binary = BinaryOp::Add;
      node.inputs = {x};
      node.constant = b.values;
      Emit(std::move(node), def, Width(x));
    } else if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "Softmax") {
      const int x = Dynamic(def, 0);
      node.kind = OpKind::Activate;
      node.inputs = {x};
      node.activation.kind = op == "Relu"      ? Activation::Relu
                             : op == "Sigmoid" ? Activation::Sigmoid
                             : op == "Tanh"    ? Activation::Tanh
                                               : Activation::Softmax;
      Emit(std::move(node), def, Width(x));
    } else if (op == "Identity") {
      const int x = Dynamic(def, 0);
      node.kind = OpKind::Identity;
      node.inputs = {x};
      Emit(std::move(node), def, Width(x));
    } else {
      Fail(def, "unsupported op (Placeholder, Const, MatMul, BiasAdd, Add, Relu, Sigmoid, Tanh, Softmax, Identity)");
    }
  }

  const tf::GraphDef& def_;
  std::string source_;
  Graph graph_;
  std::map<std::string, Tensor> constants_;
  std::map<std::string, int> values_;
};

}  // namespace

LoadedGraph LoadTfGraph(std::string_view bytes, const std::string& source) {
  if (bytes.size() > (size_t{1} << 30)) throw Error(ErrorCode::Model, fmt::format("{}: larger than 1 GiB", source));
  tf::GraphDef def;
  if (!def.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    throw Error(ErrorCode::Model, fmt::format("{}: not a TensorFlow GraphDef (protobuf parse failed)", source));
  }
  LoadedGraph out;
  out.graph = TfBuilder(def, source).Build();
  out.info.format = ModelFormat::TfGraph;
  out.info.source = source;
  out.info.producer = "TensorFlow (frozen GraphDef)";
  return out;
}

}  // namespace runnel::model
