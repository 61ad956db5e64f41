// ONNX models (`onnx.ModelProto`, protobuf, read with libonnx-dev's onnx-ml.pb.h), as
// tf2onnx and PyTorch export MLPs and small tabular models: one float input of shape
// [batch, d1, ...] (the batch may be symbolic), initializers stored as raw_data
// (little-endian) or typed fields, and nodes in topological order. Constant subgraphs
// (Constant nodes, initializers) are folded at load; every dynamic value is a
// [batch, width] matrix in the IR.
#include <fmt/format.h>
#include <onnx/onnx-ml.pb.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>

#include "loaders.hpp"
#include "runnel/core/error.hpp"
#include "runnel/model/class_labels.hpp"
#include "runnel/tensor/onnx_import.hpp"

namespace runnel::model {
namespace {

constexpr size_t kMaxElements = size_t{1} << 26;  // 256 MiB of float32 per tensor

struct Constant {
  std::vector<int64_t> dims;
  std::vector<float> values;  // float view of numeric tensors
  std::vector<int64_t> ints;  // integer view (Reshape shapes and the like)
};

class OnnxBuilder {
 public:
  OnnxBuilder(const onnx::ModelProto& model, std::string source) : model_(model), source_(std::move(source)) {}

  Graph Build() {
    const auto& g = model_.graph();
    for (const auto& init : g.initializer())
      constants_[init.name()] = ReadTensor(init, "initializer '" + init.name() + "'");
    for (const auto& input : g.input()) {
      if (constants_.contains(input.name())) continue;  // old exporters list initializers as inputs
      AddInput(input);
    }
    if (graph_.inputs.empty()) Fail("", "the graph has no dynamic input");
    for (const auto& node : g.node()) AddNode(node);
    for (const auto& output : g.output()) {
      auto it = values_.find(output.name());
      if (it == values_.end()) Fail("", fmt::format("graph output '{}' is not computed by any node", output.name()));
      graph_.outputs.push_back(it->second);
    }
    graph_.FuseDenseChains();
    graph_.Validate(source_);
    return std::move(graph_);
  }

 private:
  [[noreturn]] void Fail(const std::string& node, const std::string& what) const {
    if (node.empty()) throw Error(ErrorCode::Model, fmt::format("{}: {}", source_, what));
    throw Error(ErrorCode::Model, fmt::format("{}: node '{}': {}", source_, node, what));
  }

  Constant ReadTensor(const onnx::TensorProto& t, const std::string& what) const {
    Constant c;
    size_t count = 1;
    for (int64_t d : t.dims()) {
      if (d < 0 || static_cast<uint64_t>(d) > kMaxElements || count * static_cast<size_t>(d) > kMaxElements) {
        Fail("", fmt::format("{} has a bad or too large shape", what));
      }
      count *= static_cast<size_t>(d);
      c.dims.push_back(d);
    }
    if (t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
      Fail("", fmt::format("{} uses external data, which is not supported (save with the weights inside)", what));
    }
    const std::string& raw = t.raw_data();
    auto from_raw = [&](size_t width, auto convert) {
      if (raw.size() != count * width) {
        Fail("", fmt::format("{} holds {} bytes of raw data, its shape needs {}", what, raw.size(), count * width));
      }
      for (size_t i = 0; i < count; ++i) convert(raw.data() + i * width);
    };
    auto check = [&](size_t have) {
      if (have != count) Fail("", fmt::format("{} holds {} values, its shape needs {}", what, have, count));
    };
    switch (t.data_type()) {
      case onnx::TensorProto_DataType_FLOAT:
        if (!raw.empty()) {
          from_raw(4, [&](const char* p) {
            float v;
            std::memcpy(&v, p, 4);
            c.values.push_back(v);
          });
        } else {
          check(static_cast<size_t>(t.float_data_size()));
          c.values.assign(t.float_data().begin(), t.float_data().end());
        }
        break;
      case onnx::TensorProto_DataType_DOUBLE:
        if (!raw.empty()) {
          from_raw(8, [&](const char* p) {
            double v;
            std::memcpy(&v, p, 8);
            c.values.push_back(static_cast<float>(v));
          });
        } else {
          check(static_cast<size_t>(t.double_data_size()));
          for (double v : t.double_data()) c.values.push_back(static_cast<float>(v));
        }
        break;
      case onnx::TensorProto_DataType_INT64:
        if (!raw.empty()) {
          from_raw(8, [&](const char* p) {
            int64_t v;
            std::memcpy(&v, p, 8);
            c.ints.push_back(v);
          });
        } else {
          check(static_cast<size_t>(t.int64_data_size()));
          c.ints.assign(t.int64_data().begin(), t.int64_data().end());
        }
        for (int64_t v : c.ints) c.values.push_back(static_cast<float>(v));
        break;
      case onnx::TensorProto_DataType_INT32:
        if (!raw.empty()) {
          from_raw(4, [&](const char* p) {
            int32_t v;
            std::memcpy(&v, p, 4);
            c.ints.push_back(v);
          });
        } else {
          check(static_cast<size_t>(t.int32_data_size()));
          c.ints.assign(t.int32_data().begin(), t.int32_data().end());
        }
        for (int64_t v : c.ints) c.values.push_back(static_cast<float>(v));
        break;
      default:
        Fail("", fmt::format("{} has element type {}, only float, double, int32 and int64 are supported", what,
                             t.data_type()));
    }
    return c;
  }

  void AddInput(const onnx::ValueInfoProto& input) {
    const auto& type = input.type();
    if (!type.has_tensor_type()) Fail("", fmt::format("input '{}' is not a tensor", input.name()));
    const auto elem = type.tensor_type().elem_type();
    if (elem != onnx::TensorProto_DataType_FLOAT && elem != onnx::TensorProto_DataType_DOUBLE) {
      Fail("", fmt::format("input '{}' has element type {}, expected float", input.name(), elem));
    }
    const auto& dims = type.tensor_type().shape().dim();
    if (dims.size() < 2) Fail("", fmt::format("input '{}' must have shape [batch, features...]", input.name()));
    size_t width = 1;
    for (int i = 1; i < dims.size(); ++i) {
      if (!dims[i].has_dim_value() || dims[i].dim_value() <= 0 || dims[i].dim_value() > (1 << 20)) {
        Fail("", fmt::format("input '{}': feature dimension {} must be a fixed positive size", input.name(), i));
      }
      width *= static_cast<size_t>(dims[i].dim_value());
      if (width > (size_t{1} << 24)) Fail("", fmt::format("input '{}' is too wide", input.name()));
    }
    int id = graph_.AddValue(input.name(), width);
    graph_.inputs.push_back(id);
    values_[input.name()] = id;
  }

  const onnx::AttributeProto* Attr(const onnx::NodeProto& node, const char* name) const {
    for (const auto& a : node.attribute()) {
      if (a.name() == name) return &a;
    }
    return nullptr;
  }
  float AttrFloat(const onnx::NodeProto& node, const char* name, float fallback) const {
    const auto* a = Attr(node, name);
    return a != nullptr ? a->f() : fallback;
  }
  int64_t AttrInt(const onnx::NodeProto& node, const char* name, int64_t fallback) const {
    const auto* a = Attr(node, name);
    return a != nullptr ? a->i() : fallback;
  }

  bool IsConstant(const std::string& name) const { return constants_.contains(name); }
  // The name of input `index`, or a clear error when the node has fewer inputs.
  const std::string& InputName(const onnx::NodeProto& node, int index) const {
    if (index < 0 || index >= node.input_size()) {
      Fail(node.name(),
           fmt::format("{} needs input {}, the node has {}", node.op_type(), index + 1, node.input_size()));
    }
    return node.input(index);
  }
  bool HasInput(const onnx::NodeProto& node, int index) const {
    return index < node.input_size() && !node.input(index).empty();
  }
  const Constant& ConstantOf(const onnx::NodeProto& node, int index) const {
    auto it = constants_.find(InputName(node, index));
    if (it == constants_.end()) Fail(node.name(), fmt::format("input '{}' must be a constant", node.input(index)));
    return it->second;
  }
  int Dynamic(const onnx::NodeProto& node, int index) const {
    auto it = values_.find(InputName(node, index));
    if (it == values_.end()) {
      Fail(node.name(),
           IsConstant(node.input(index))
               ? fmt::format("input '{}' is a constant where a computed tensor is expected", node.input(index))
               : fmt::format("input '{}' is not computed before this node", node.input(index)));
    }
    return it->second;
  }
  size_t Width(int id) const { return graph_.value_widths[static_cast<size_t>(id)]; }

  // A constant that broadcasts along the rows of a [batch, width] value: shape [],
  // [1], [width], [1, width] or [1, 1].
  std::vector<float> RowConstant(const onnx::NodeProto& node, const Constant& c, size_t width) const {
    size_t count = c.values.size();
    bool ok = (count == 1 || count == width) && (c.dims.size() < 2 || (c.dims.size() == 2 && c.dims[0] == 1));
    if (!ok) {
      Fail(node.name(), fmt::format("constant of shape [{}] does not broadcast over rows of width {}",
                                    fmt::join(c.dims, ", "), width));
    }
    return c.values;
  }

  void Emit(Node node, const onnx::NodeProto& proto, size_t width) {
    if (proto.output_size() < 1) Fail(proto.name(), "node has no output");
    node.name = proto.name().empty() ? proto.op_type() : proto.name();
    node.output = graph_.AddValue(proto.output(0), width);
    values_[proto.output(0)] = node.output;
    graph_.nodes.push_back(std::move(node));
  }

  void Alias(const onnx::NodeProto& proto, int input) {
    if (proto.output_size() < 1) Fail(proto.name(), "node has no output");
    Node node;
    node.kind = OpKind::Identity;
    node.inputs = {input};
    Emit(std::move(node), proto, Width(input));
  }

  void Activate(const onnx::NodeProto& proto, ActivationSpec spec) {
    Node node;
    node.kind = OpKind::Activate;
    node.inputs = {Dynamic(proto, 0)};
    node.activation = spec;
    const size_t width = Width(node.inputs[0]);  // before the move below
    Emit(std::move(node), proto, width);
  }

  void AddDense(const onnx::NodeProto& proto, int x, const Constant& w, bool transpose, float alpha, const Constant* c,
                float beta) {
    if (w.dims.size() != 2) Fail(proto.name(), fmt::format("weight must be 2-D, has {} dimensions", w.dims.size()));
    const auto rows = static_cast<size_t>(w.dims[0]);
    const auto cols = static_cast<size_t>(w.dims[1]);
    const size_t in = transpose ? cols : rows;
    const size_t out = transpose ? rows : cols;
    if (in != Width(x)) Fail(proto.name(), fmt::format("weight expects {} inputs, the node receives {}", in, Width(x)));
    Node node;
    node.kind = OpKind::Dense;
    node.inputs = {x};
    node.in_width = in;
    node.out_width = out;
    node.weights.resize(in * out);
    for (size_t k = 0; k < in; ++k) {
      for (size_t n = 0; n < out; ++n) {
        node.weights[k * out + n] = alpha * (transpose ? w.values[n * cols + k] : w.values[k * cols + n]);
      }
    }
    if (c != nullptr) {
      auto bias = RowConstant(proto, *c, out);
      node.bias.assign(out, 0.0f);
      for (size_t n = 0; n < out; ++n) node.bias[n] = beta * bias[bias.size() == 1 ? 0 : n];
    }
    Emit(std::move(node), proto, out);
  }

  void AddBinary(const onnx::NodeProto& proto, BinaryOp op) {
    if (proto.input_size() != 2) Fail(proto.name(), "expects two inputs");
    const bool a_const = IsConstant(InputName(proto, 0));
    const bool b_const = IsConstant(InputName(proto, 1));
    Node node;
    node.kind = OpKind::Binary;
    node.binary = op;
    if (a_const && b_const) Fail(proto.name(), "both operands are constants (fold them before export)");
    if (!a_const && !b_const) {
      node.inputs = {Dynamic(proto, 0), Dynamic(proto, 1)};
      const size_t w = std::max(Width(node.inputs[0]), Width(node.inputs[1]));
      Emit(std::move(node), proto, w);
      return;
    }
    const int x = Dynamic(proto, a_const ? 1 : 0);
    node.inputs = {x};
    node.constant = RowConstant(proto, ConstantOf(proto, a_const ? 0 : 1), Width(x));
    node.constant_first = a_const;
    Emit(std::move(node), proto, Width(x));
  }

  void AddNode(const onnx::NodeProto& proto) {
    const std::string& op = proto.op_type();
    if (!proto.domain().empty() && proto.domain() != "ai.onnx") {
      Fail(proto.name(), fmt::format("operator domain '{}' is not supported", proto.domain()));
    }
    if (op == "Constant") {
      const auto* value = Attr(proto, "value");
      if (value == nullptr || !value->has_t()) Fail(proto.name(), "Constant without a tensor 'value'");
      if (proto.output_size() < 1) Fail(proto.name(), "node has no output");
      constants_[proto.output(0)] = ReadTensor(value->t(), "constant '" + proto.output(0) + "'");
    } else if (op == "MatMul") {
      if (IsConstant(InputName(proto, 0))) Fail(proto.name(), "MatMul with a constant left operand is not supported");
      AddDense(proto, Dynamic(proto, 0), ConstantOf(proto, 1), false, 1.0f, nullptr, 0.0f);
    } else if (op == "Gemm") {
      if (AttrInt(proto, "transA", 0) != 0) Fail(proto.name(), "Gemm with transA=1 is not supported");
      const Constant* c = HasInput(proto, 2) ? &ConstantOf(proto, 2) : nullptr;
      AddDense(proto, Dynamic(proto, 0), ConstantOf(proto, 1), AttrInt(proto, "transB", 0) != 0,
               AttrFloat(proto, "alpha", 1.0f), c, AttrFloat(proto, "beta", 1.0f));
    } else if (op == "Add") {
      AddBinary(proto, BinaryOp::Add);
    } else if (op == "Sub") {
      AddBinary(proto, BinaryOp::Sub);
    } else if (op == "Mul") {
      AddBinary(proto, BinaryOp::Mul);
    } else if (op == "Div") {
      AddBinary(proto, BinaryOp::Div);
    } else if (op == "Relu") {
      Activate(proto, {Activation::Relu});
    } else if (op == "LeakyRelu") {
      Activate(proto, {Activation::LeakyRelu, AttrFloat(proto, "alpha", 0.01f)});
    } else if (op == "Sigmoid") {
      Activate(proto, {Activation::Sigmoid});
    } else if (op == "Tanh") {
      Activate(proto, {Activation::Tanh});
    } else if (op == "Elu") {
      Activate(proto, {Activation::Elu, AttrFloat(proto, "alpha", 1.0f)});
    } else if (op == "Selu") {
      if (Attr(proto, "alpha") || Attr(proto, "gamma"))
        Fail(proto.name(), "Selu with custom alpha/gamma is not supported");
      Activate(proto, {Activation::Selu});
    } else if (op == "Softplus") {
      Activate(proto, {Activation::Softplus});
    } else if (op == "Exp") {
      Activate(proto, {Activation::Exponential});
    } else if (op == "HardSigmoid") {
      Activate(proto, {Activation::HardSigmoid, AttrFloat(proto, "alpha", 0.2f), AttrFloat(proto, "beta", 0.5f)});
    } else if (op == "Softmax") {
      const int64_t axis = AttrInt(proto, "axis", -1);
      if (axis != -1 && axis != 1) Fail(proto.name(), "Softmax is supported over the last axis only");
      Activate(proto, {Activation::Softmax});
    } else if (op == "Clip") {
      float lo = AttrFloat(proto, "min", -INFINITY), hi = AttrFloat(proto, "max", INFINITY);
      if (HasInput(proto, 1)) lo = ScalarOf(proto, 1);
      if (HasInput(proto, 2)) hi = ScalarOf(proto, 2);
      Activate(proto, {Activation::Clip, lo, hi});
    } else if (op == "Identity" || op == "Dropout") {
      Alias(proto, Dynamic(proto, 0));
    } else if (op == "Flatten") {
      if (AttrInt(proto, "axis", 1) != 1) Fail(proto.name(), "Flatten is supported with axis=1 only");
      Alias(proto, Dynamic(proto, 0));
    } else if (op == "Reshape") {
      const int x = Dynamic(proto, 0);
      const Constant& shape = ConstantOf(proto, 1);
      // Values are [batch, width] already: only reshapes that keep that are accepted.
      const bool keeps = shape.ints.size() == 2 && (shape.ints[0] == -1 || shape.ints[0] == 0) &&
                         (shape.ints[1] == static_cast<int64_t>(Width(x)) || shape.ints[1] == -1);
      if (!keeps) {
        Fail(proto.name(), fmt::format("Reshape to [{}] is not supported (tabular models keep [batch, {}])",
                                       fmt::join(shape.ints, ", "), Width(x)));
      }
      Alias(proto, x);
    } else if (op == "Cast") {
      const int64_t to = AttrInt(proto, "to", 0);
      if (to != onnx::TensorProto_DataType_FLOAT && to != onnx::TensorProto_DataType_DOUBLE) {
        Fail(proto.name(), fmt::format("Cast to element type {} is not supported (float only)", to));
      }
      Alias(proto, Dynamic(proto, 0));
    } else if (op == "Concat") {
      const int64_t axis = AttrInt(proto, "axis", 1);
      if (axis != 1 && axis != -1) Fail(proto.name(), "Concat is supported along axis 1 only");
      Node node;
      node.kind = OpKind::Concat;
      size_t width = 0;
      for (int i = 0; i < proto.input_size(); ++i) {
        node.inputs.push_back(Dynamic(proto, i));
        width += Width(node.inputs.back());
      }
      Emit(std::move(node), proto, width);
    } else if (op == "BatchNormalization") {
      const int x = Dynamic(proto, 0);
      const size_t n = Width(x);
      auto vec = [&](int i, const char* what) {
        const Constant& c = ConstantOf(proto, i);
        if (c.values.size() != n)
          Fail(proto.name(), fmt::format("{} holds {} values, expected {}", what, c.values.size(), n));
        return c.values;
      };
      auto scale = vec(1, "scale"), bias = vec(2, "B"), mean = vec(3, "mean"), var = vec(4, "var");
      const double epsilon = AttrFloat(proto, "epsilon", 1e-5f);
      Node node;
      node.kind = OpKind::Affine;
      node.inputs = {x};
      for (size_t c = 0; c < n; ++c) {
        const double s = scale[c] / std::sqrt(static_cast<double>(var[c]) + epsilon);
        node.scale.push_back(static_cast<float>(s));
        node.shift.push_back(static_cast<float>(bias[c] - mean[c] * s));
      }
      Emit(std::move(node), proto, n);
    } else {
      Fail(proto.name(), fmt::format("operator '{}' is not supported", op));
    }
  }

  float ScalarOf(const onnx::NodeProto& proto, int index) const {
    const Constant& c = ConstantOf(proto, index);
    if (c.values.size() != 1) Fail(proto.name(), fmt::format("input {} must be a scalar", index));
    return c.values[0];
  }

  const onnx::ModelProto& model_;
  std::string source_;
  Graph graph_;
  std::map<std::string, int> values_;
  std::map<std::string, Constant> constants_;
};

}  // namespace

LoadedGraph BuildDenseOnnx(const onnx::ModelProto& model, const std::string& source) {
  for (const auto& entry : model.metadata_props()) {
    if (entry.key() == kId2LabelMetadata)
      throw Error(ErrorCode::Model,
                  fmt::format("{}: class labels in its metadata: the tensor runtime serves them", source));
  }
  OnnxBuilder builder(model, source);
  Graph graph = builder.Build();
  std::string producer = model.producer_name().empty() ? "ONNX" : model.producer_name();
  if (!model.producer_version().empty()) producer += " " + model.producer_version();
  return {std::move(graph), {ModelFormat::Onnx, source, producer, ""}};
}

LoadedGraph LoadOnnx(std::string_view bytes, const std::string& source) {
  onnx::ModelProto model = tensor::ParseOnnxModel(bytes, source);
  LoadedGraph loaded = BuildDenseOnnx(model, source);
  tensor::InferOnnxShapes(model, source);  // after the builder's checks of every size
  return loaded;
}

}  // namespace runnel::model
