#include "runnel/tensor/onnx_import.hpp"

#include <fmt/format.h>
#include <onnx/onnx-ml.pb.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unordered_map>

#include "kernels.hpp"
#include "runnel/tensor/ops.hpp"
#include "runnel/tensor/tensor_files.hpp"

namespace runnel::tensor {
namespace {

[[noreturn]] void Fail(const std::string& source, const std::string& what) {
  throw Error(ErrorCode::Model, fmt::format("{}: {}", source, what));
}

DataType TypeOfProto(int type, const std::string& source, const std::string& what) {
  if (!IsSupportedType(type))
    throw UnsupportedError(fmt::format("{}: {} has element type {}", source, what, DataTypeName(type)));
  return static_cast<DataType>(type);
}

// Copies `count` elements of raw little-endian data (this machine's order).
void FromRaw(const std::string& raw, Tensor& t, const std::string& source, const std::string& what) {
  const size_t need = t.size() * ElementSize(t.type());
  if (raw.size() != need) {
    Fail(source, fmt::format("{} holds {} bytes of raw data, its shape {} needs {}", what, raw.size(),
                             ShapeText(t.shape()), need));
  }
  if (need > 0) std::memcpy(t.bytes().data(), raw.data(), need);
  if (t.type() == DataType::kBool) {
    for (auto& b : t.bytes()) b = b == std::byte{0} ? std::byte{0} : std::byte{1};
  }
}

template <typename Field, typename T>
void FromField(const Field& field, std::span<T> out, const std::string& source, const std::string& what) {
  if (static_cast<size_t>(field.size()) != out.size()) {
    Fail(source, fmt::format("{} holds {} values, its shape needs {}", what, field.size(), out.size()));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if constexpr (std::is_same_v<T, bool>) {
      out[i] = field[static_cast<int>(i)] != 0;
    } else {
      out[i] = static_cast<T>(field[static_cast<int>(i)]);
    }
  }
}

// How many values the proto's typed field for `type` holds.
size_t FieldValues(const onnx::TensorProto& p, DataType type) {
  switch (type) {
    case DataType::kFloat: return static_cast<size_t>(p.float_data_size());
    case DataType::kDouble: return static_cast<size_t>(p.double_data_size());
    case DataType::kInt64: return static_cast<size_t>(p.int64_data_size());
    case DataType::kString: return static_cast<size_t>(p.string_data_size());
    default: return static_cast<size_t>(p.int32_data_size());
  }
}

// Where a tensor's external data lies: a file inside the model's directory, a byte
// range of it.
struct ExternalRange {
  std::filesystem::path file;
  uint64_t offset = 0;
  std::optional<uint64_t> length;
};

uint64_t ExternalNumber(const std::string& text, const std::string& source, const std::string& what) {
  if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos)
    Fail(source, fmt::format("{}: external data offset or length '{}' is not a number", what, text));
  return std::stoull(text);
}

// The external data's file, which must stay inside `dir` whatever its name or symlinks
// say (no absolute paths, no "..", no link out).
ExternalRange ExternalRangeOf(const onnx::TensorProto& p, const std::filesystem::path& dir, const std::string& source,
                              const std::string& what) {
  if (dir.empty())
    throw UnsupportedError(
        fmt::format("{}: {} keeps its data in an external file, and this model has no directory "
                    "(load it from a file, not from the registry)",
                    source, what));
  ExternalRange r;
  std::string location;
  for (const auto& entry : p.external_data()) {
    if (entry.key() == "location") location = entry.value();
    if (entry.key() == "offset") r.offset = ExternalNumber(entry.value(), source, what);
    if (entry.key() == "length") r.length = ExternalNumber(entry.value(), source, what);
  }
  const std::filesystem::path relative(location);
  bool climbs = false;
  for (const auto& part : relative) climbs = climbs || part == "..";
  if (location.empty() || relative.is_absolute() || climbs)
    Fail(source, fmt::format("{}: external data location '{}' is not a file name inside the model's directory", what,
                             location));
  std::error_code ec;
  const auto root = std::filesystem::canonical(dir, ec);
  r.file = std::filesystem::canonical(dir / relative, ec);
  const auto [end, _] = std::mismatch(root.begin(), root.end(), r.file.begin(), r.file.end());
  if (ec || end != root.end() || !std::filesystem::is_regular_file(r.file))
    Fail(source, fmt::format("{}: external data '{}' is not a file inside {}", what, location, dir.string()));
  return r;
}

// Reads `need` bytes of external data, after checking the range against the file.
std::string ReadExternal(const onnx::TensorProto& p, const std::filesystem::path& dir, size_t need,
                         const std::string& source, const std::string& what) {
  const ExternalRange r = ExternalRangeOf(p, dir, source, what);
  const uint64_t size = std::filesystem::file_size(r.file);
  if (r.length && *r.length != need)
    Fail(source, fmt::format("{}: external data of {} bytes, its shape needs {}", what, *r.length, need));
  if (r.offset > size || size - r.offset < need)
    Fail(source, fmt::format("{}: external data at offset {} needs {} bytes, {} holds {}", what, r.offset, need,
                             r.file.filename().string(), size));
  std::ifstream in(r.file, std::ios::binary);
  std::string bytes(need, '\0');
  in.seekg(static_cast<std::streamoff>(r.offset));
  if (!in.read(bytes.data(), static_cast<std::streamsize>(need)))
    Fail(source, fmt::format("{}: cannot read external data from {}", what, r.file.string()));
  return bytes;
}

// The file's data is checked against the shape before the tensor is allocated: a
// shape claiming millions of elements with a few bytes of data allocates nothing.
// `dir`: the model's directory, for external data (empty: none allowed).
Tensor ReadTensor(const onnx::TensorProto& p, const std::string& source, const std::string& what,
                  const std::filesystem::path& dir = {}) {
  const DataType type = TypeOfProto(p.data_type(), source, what);
  Shape shape(p.dims().begin(), p.dims().end());
  size_t count = 0;
  try {
    count = ElementCount(shape);
  } catch (const Error& e) {
    Fail(source, fmt::format("{}: {}", what, e.what()));
  }
  if (p.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    if (type == DataType::kString) throw UnsupportedError(fmt::format("{}: {}: external string data", source, what));
    const std::string raw = ReadExternal(p, dir, count * ElementSize(type), source, what);
    Tensor t(type, std::move(shape));
    FromRaw(raw, t, source, what);
    return t;
  }
  const bool raw = type != DataType::kString && p.has_raw_data();
  if (raw && p.raw_data().size() != count * ElementSize(type)) {
    Fail(source, fmt::format("{} holds {} bytes of raw data, its shape {} needs {}", what, p.raw_data().size(),
                             ShapeText(shape), count * ElementSize(type)));
  }
  if (!raw && FieldValues(p, type) != count) {
    Fail(source, fmt::format("{} holds {} {}, its shape needs {}", what, FieldValues(p, type),
                             type == DataType::kString ? "strings" : "values", count));
  }
  Tensor t(type, std::move(shape));
  if (type == DataType::kString) {
    t.strings().assign(p.string_data().begin(), p.string_data().end());
  } else if (raw) {
    FromRaw(p.raw_data(), t, source, what);
  } else {
    switch (type) {
      case DataType::kFloat: FromField(p.float_data(), t.data<float>(), source, what); break;
      case DataType::kDouble: FromField(p.double_data(), t.data<double>(), source, what); break;
      case DataType::kInt64: FromField(p.int64_data(), t.data<int64_t>(), source, what); break;
      case DataType::kInt32: FromField(p.int32_data(), t.data<int32_t>(), source, what); break;
      case DataType::kInt8: FromField(p.int32_data(), t.data<int8_t>(), source, what); break;
      case DataType::kUint8: FromField(p.int32_data(), t.data<uint8_t>(), source, what); break;
      case DataType::kBool: FromField(p.int32_data(), t.data<bool>(), source, what); break;
      case DataType::kString: break;
    }
  }
  return t;
}

// A sequence of maps to float tensors: what ZipMap (ai.onnx.ml) makes of a
// classifier's probabilities.
bool IsZipMapValue(const onnx::TypeProto& type) {
  if (!type.has_sequence_type() || !type.sequence_type().elem_type().has_map_type()) return false;
  const auto& value = type.sequence_type().elem_type().map_type().value_type();
  return value.has_tensor_type() && value.tensor_type().elem_type() == onnx::TensorProto_DataType_FLOAT;
}

ValueInfo ReadValueInfo(const onnx::ValueInfoProto& v, const std::string& source) {
  ValueInfo info;
  info.name = v.name();
  if (!v.has_type()) return info;
  if (IsZipMapValue(v.type())) {
    info.type = DataType::kFloat;  // ZipMap's maps are held as their [N, classes] probabilities
    return info;
  }
  if (!v.type().has_tensor_type()) {
    throw UnsupportedError(
        fmt::format("{}: value '{}' is not a tensor (sequences, maps and optionals)", source, v.name()));
  }
  const auto& tt = v.type().tensor_type();
  if (tt.elem_type() != 0) info.type = TypeOfProto(tt.elem_type(), source, fmt::format("value '{}'", v.name()));
  if (tt.has_shape()) {
    info.has_shape = true;
    for (const auto& d : tt.shape().dim()) {
      info.dims.push_back(d.has_dim_value() ? std::optional<int64_t>(d.dim_value()) : std::nullopt);
      info.symbols.push_back(d.has_dim_param() ? d.dim_param() : "");
    }
  }
  return info;
}

// What shape inference found for each value the graph has (inputs, outputs and
// value_info of the inferred model); values of types the runtime does not hold (float16,
// sequences) are left unknown.
void KeepInferredShapes(Graph& graph, const onnx::GraphProto& g, const std::string& source) {
  graph.inferred.assign(graph.value_names.size(), ValueInfo{});
  std::unordered_map<std::string_view, size_t> ids;
  for (size_t i = 0; i < graph.value_names.size(); ++i) ids.emplace(graph.value_names[i], i);
  auto keep = [&](const onnx::ValueInfoProto& v) {
    const auto id = ids.find(v.name());
    if (id == ids.end() || !v.type().has_tensor_type()) return;
    try {
      graph.inferred[id->second] = ReadValueInfo(v, source);
    } catch (const Error&) {
      graph.inferred[id->second] = ValueInfo{};
    }
  };
  for (const auto& v : g.input()) keep(v);
  for (const auto& v : g.value_info()) keep(v);
  for (const auto& v : g.output()) keep(v);
}

// An attribute's type: as declared, or, in files that leave it out (IR version 1 had
// no type field), the kind of the field that holds its value.
onnx::AttributeProto::AttributeType TypeOfAttribute(const onnx::AttributeProto& a) {
  using A = onnx::AttributeProto;
  if (a.type() != A::UNDEFINED) return a.type();
  if (a.ints_size() > 0) return A::INTS;
  if (a.floats_size() > 0) return A::FLOATS;
  if (a.strings_size() > 0) return A::STRINGS;
  if (a.has_t()) return A::TENSOR;
  if (a.has_s()) return A::STRING;
  if (a.has_i()) return A::INT;
  if (a.has_f()) return A::FLOAT;
  return A::UNDEFINED;
}

Attribute ReadAttribute(const onnx::AttributeProto& a, const std::string& source, const std::string& node) {
  Attribute out;
  using A = onnx::AttributeProto;
  switch (TypeOfAttribute(a)) {
    case A::FLOAT:
      out.kind = Attribute::Kind::kFloat;
      out.f = a.f();
      break;
    case A::INT:
      out.kind = Attribute::Kind::kInt;
      out.i = a.i();
      break;
    case A::STRING:
      out.kind = Attribute::Kind::kString;
      out.s = a.s();
      break;
    case A::TENSOR:
      out.kind = Attribute::Kind::kTensor;
      out.t = std::make_shared<Tensor>(ReadTensor(a.t(), source, fmt::format("{}: attribute '{}'", node, a.name())));
      break;
    case A::FLOATS:
      out.kind = Attribute::Kind::kFloats;
      out.floats.assign(a.floats().begin(), a.floats().end());
      break;
    case A::INTS:
      out.kind = Attribute::Kind::kInts;
      out.ints.assign(a.ints().begin(), a.ints().end());
      break;
    case A::STRINGS:
      out.kind = Attribute::Kind::kStrings;
      out.strings.assign(a.strings().begin(), a.strings().end());
      break;
    case A::GRAPH:
    case A::GRAPHS: out.kind = Attribute::Kind::kGraph; break;
    default: out.kind = Attribute::Kind::kOther; break;
  }
  return out;
}

class GraphBuilder {
 public:
  GraphBuilder(const onnx::ModelProto& model, std::string source, std::filesystem::path dir)
      : model_(model), source_(std::move(source)), dir_(std::move(dir)) {
    for (const auto& op : model.opset_import()) {
      const std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
      opsets_[domain] = static_cast<int>(op.version());
    }
  }

  std::shared_ptr<Graph> Build() {
    const auto& g = model_.graph();
    for (const auto& init : g.initializer()) {
      const int id = Value(init.name());
      graph_->constants[id] =
          std::make_shared<Tensor>(ReadTensor(init, source_, fmt::format("initializer '{}'", init.name()), dir_));
    }
    for (const auto& input : g.input()) {
      const int id = Value(input.name());
      if (graph_->constants[id]) continue;  // an initializer listed as an input: a constant here
      graph_->inputs.push_back(id);
      graph_->input_info.push_back(ReadValueInfo(input, source_));
    }
    for (int i = 0; i < g.node_size(); ++i) AddNode(g.node(i));
    for (const auto& output : g.output()) {
      const int id = Value(output.name());
      if (!produced_[id] && !graph_->constants[id]) {
        Fail(source_, fmt::format("graph output '{}' is computed by no node", output.name()));
      }
      graph_->outputs.push_back(id);
      graph_->output_info.push_back(ReadValueInfo(output, source_));
    }
    return graph_;
  }

 private:
  int Value(const std::string& name) {
    auto [it, added] = ids_.emplace(name, static_cast<int>(graph_->value_names.size()));
    if (added) {
      graph_->value_names.push_back(name);
      graph_->constants.emplace_back();
      produced_.push_back(false);
    }
    return it->second;
  }

  void AddNode(const onnx::NodeProto& p) {
    Node node;
    node.name = p.name();
    node.op = p.op_type();
    node.domain = p.domain() == "ai.onnx" ? "" : p.domain();
    const auto opset = opsets_.find(node.domain);
    if (opset == opsets_.end()) {
      Fail(source_, fmt::format("{}: its domain '{}' is not imported by the model", node.Label(), node.domain));
    }
    node.opset = opset->second;
    node.kernel = FindKernel(node.domain, node.op, node.opset);
    if (node.kernel == nullptr) {
      throw UnsupportedError(fmt::format("{}{} (opset {}): {} of {}", node.domain.empty() ? "" : node.domain + ".",
                                         node.op, node.opset, node.Label(), source_));
    }
    for (const auto& a : p.attribute()) node.attributes[a.name()] = ReadAttribute(a, source_, node.Label());
    if (const Prepare prepare = FindPrepare(node.domain, node.op, node.opset)) {
      try {
        node.state = prepare(node);
      } catch (const UnsupportedError& e) {
        // "unsupported: Op (opset N): node 'x' of file: what"
        const std::string_view what = std::string_view(e.what()).substr(std::string_view("unsupported: ").size());
        throw UnsupportedError(
            fmt::format("{} (opset {}): {} of {}: {}", node.op, node.opset, node.Label(), source_, what));
      } catch (const Error& e) {
        Fail(source_, fmt::format("{}: {}", node.Label(), e.what()));
      }
    }
    for (const auto& name : p.input()) {
      if (name.empty()) {
        node.inputs.push_back(-1);
        continue;
      }
      const int id = Value(name);
      if (!produced_[id] && !graph_->constants[id] && !IsInput(id)) {
        Fail(source_, fmt::format("{}: input '{}' is computed by no node before it", node.Label(), name));
      }
      node.inputs.push_back(id);
    }
    for (const auto& name : p.output()) {
      if (name.empty()) {
        node.outputs.push_back(-1);
        continue;
      }
      const int id = Value(name);
      if (produced_[id] || graph_->constants[id] || IsInput(id)) {
        Fail(source_, fmt::format("{}: output '{}' is computed twice", node.Label(), name));
      }
      produced_[id] = true;
      node.outputs.push_back(id);
    }
    if (node.outputs.empty() || node.outputs.front() < 0) {
      Fail(source_, fmt::format("{}: its first output is missing", node.Label()));
    }
    if (!Fold(node)) graph_->nodes.push_back(std::move(node));
  }

  bool IsInput(int id) const {
    return std::find(graph_->inputs.begin(), graph_->inputs.end(), id) != graph_->inputs.end();
  }

  // Constant folding: a node whose inputs are all known at load runs now, once, and
  // its outputs become constants (Constant nodes, shape arithmetic on initializers).
  bool Fold(const Node& node) {
    std::vector<const Tensor*> in;
    for (int id : node.inputs) {
      if (id >= 0 && !graph_->constants[id]) return false;
      in.push_back(id >= 0 ? graph_->constants[id].get() : nullptr);
    }
    std::vector<Tensor> out(node.outputs.size());
    try {
      node.kernel(node, in, out);
    } catch (const UnsupportedError&) {
      throw;
    } catch (const Error& e) {
      Fail(source_, fmt::format("{}: {}", node.Label(), e.what()));
    }
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      if (node.outputs[k] >= 0) graph_->constants[node.outputs[k]] = std::make_shared<Tensor>(std::move(out[k]));
    }
    return true;
  }

  const onnx::ModelProto& model_;
  std::string source_;
  std::filesystem::path dir_;  // the model's directory, for external data
  std::shared_ptr<Graph> graph_ = std::make_shared<Graph>();
  std::unordered_map<std::string, int> ids_;
  std::vector<bool> produced_;  // per value id: some node's output
  std::map<std::string, int> opsets_;
};

}  // namespace

onnx::ModelProto ParseOnnxModel(std::string_view bytes, const std::string& source) {
  onnx::ModelProto model;
  if (bytes.size() > (size_t{2} << 30) || !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    Fail(source, "not a valid ONNX model (protobuf parse failed)");
  }
  if (!model.has_graph()) Fail(source, "the ONNX model has no graph");
  CheckOnnxNodes(model, source);
  return model;
}

std::shared_ptr<const Graph> LoadOnnxGraph(std::string_view bytes, const std::string& source,
                                           const std::filesystem::path& dir) {
  return LoadOnnxGraph(ParseOnnxModel(bytes, source), source, dir);
}

std::shared_ptr<const Graph> LoadOnnxGraph(onnx::ModelProto model, const std::string& source,
                                           const std::filesystem::path& dir) {
  auto graph = GraphBuilder(model, source, dir).Build();
  InferOnnxShapes(model, source);  // after the builder's checks of every size
  FuseSparseText(*graph);
  PackConstantMatMuls(*graph);
  FuseErfGelu(*graph);
  FuseConvRelu(*graph);
  UseOneDnnConvs(*graph);
  KeepInferredShapes(*graph, model.graph(), source);
  graph->producer = model.producer_name().empty() ? "ONNX" : model.producer_name();
  if (!model.producer_version().empty()) graph->producer += " " + model.producer_version();
  for (const auto& entry : model.metadata_props()) graph->metadata[entry.key()] = entry.value();
  return graph;
}

Tensor LoadOnnxTensor(std::string_view bytes, const std::string& source) {
  onnx::TensorProto proto;
  if (bytes.size() > (size_t{2} << 30) || !proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    Fail(source, "not a valid ONNX tensor (protobuf parse failed)");
  }
  return ReadTensor(proto, source, fmt::format("tensor '{}'", proto.name()));
}

std::string SaveOnnxTensor(const Tensor& t, const std::string& name) {
  onnx::TensorProto proto;
  proto.set_name(name);
  proto.set_data_type(static_cast<int>(t.type()));
  for (int64_t d : t.shape()) proto.add_dims(d);
  if (t.type() == DataType::kString) {
    for (const auto& s : t.strings()) proto.add_string_data(s);
  } else {
    proto.set_raw_data(reinterpret_cast<const char*>(t.bytes().data()), t.bytes().size());
  }
  return proto.SerializeAsString();
}

}  // namespace runnel::tensor
