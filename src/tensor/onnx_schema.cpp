// Each node of an ONNX model against ONNX's own schema of its operator, from
// libonnx-dev (OpSchema::Verify, the check ONNX's checker and ONNX Runtime apply to a
// node): input and output counts, required attributes present, no attribute the
// operator does not have, each attribute's value in its field. An attribute with a typo
// would otherwise be ignored and its default used: a silently wrong answer.
//
// Then ONNX Runtime's check of each node's input types against its operator's type
// constraints, for the inputs whose types the file states (graph inputs, initializers,
// Constants, declared values): an Add of a float input and an int64 constant is
// refused at load, naming the node.
//
// Then ONNX's shape inference (InferShapes, strict), as ONNX Runtime runs it at load,
// and the input-type check again over the types it found: a node whose inputs' shapes
// or types its operator cannot take (MatMul of [2, 3] and [4, 5]) is refused at load,
// naming it, and the shapes inference finds are kept for `runnel model inspect`.
// libonnx 1.12's inference functions trust their inputs' ranks, and a hostile file
// crashes them (a Gemm of opset 6 with a one-dimensional B: SEGV, found by fuzz_tensor;
// Python's onnx.shape_inference crashes on it too): inference runs in a child process.
//
// Not onnx::checker::check_model as a whole: it refuses graphs ONNX Runtime runs (no
// graph name, an input or output whose type declares no shape), and its tensor check
// opens the files external data names, which a hostile file must not make us probe.
#include "runnel/tensor/onnx_import.hpp"

#include <fmt/format.h>
#include <onnx/defs/data_type_utils.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <vector>

#include "runnel/core/error.hpp"
#include "runnel/core/isolation.hpp"

namespace runnel::tensor {
namespace {

// The highest opset of `domain` this libonnx knows, 0 for a domain it does not know
// (com.microsoft's, a user's): a node of a later opset may follow a newer schema.
int KnownOpset(const std::string& domain) {
  const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  const auto it = ranges.find(domain);
  return it == ranges.end() ? 0 : it->second.second;
}

// The model's opset per domain ("ai.onnx" read as the default domain, "").
std::map<std::string, int64_t> Opsets(const onnx::ModelProto& model) {
  std::map<std::string, int64_t> opsets;
  for (const auto& op : model.opset_import()) opsets[op.domain() == "ai.onnx" ? "" : op.domain()] = op.version();
  return opsets;
}

// A node's schema at the model's opset, with that opset; null when libonnx does not
// know the operator there (a later opset, another domain): then the loaders decide.
struct NodeSchema {
  const onnx::OpSchema* schema = nullptr;
  int64_t opset = 0;
};

NodeSchema SchemaOf(const onnx::NodeProto& node, const std::map<std::string, int64_t>& opsets) {
  const std::string domain = node.domain() == "ai.onnx" ? "" : node.domain();
  const auto opset = opsets.find(domain);
  if (opset == opsets.end() || opset->second < 1 || opset->second > KnownOpset(domain)) return {};
  return {onnx::OpSchemaRegistry::Schema(node.op_type(), static_cast<int>(opset->second), domain), opset->second};
}

Error NodeError(const std::string& source, const onnx::NodeProto& node, int64_t opset, const std::string& reason) {
  return Error(ErrorCode::Model,
               fmt::format("{}: node '{}' ({} of opset {}): {}", source, node.name(), node.op_type(), opset, reason));
}

// The type of each value whose type the file states ("tensor(float)", interned by
// libonnx): graph inputs and outputs, declared values, initializers, Constants.
using KnownTypes = std::unordered_map<std::string, onnx::DataType>;

KnownTypes TypesOf(const onnx::GraphProto& g) {
  KnownTypes types;
  auto add = [&](const std::string& name, const onnx::TypeProto& type) {
    if (type.value_case() == onnx::TypeProto::VALUE_NOT_SET) return;
    if (type.has_tensor_type() && type.tensor_type().elem_type() == 0) return;
    try {
      types[name] = onnx::Utils::DataTypeUtils::ToType(type);
    } catch (const std::exception&) {  // a type libonnx cannot name: nothing to compare
    }
  };
  for (const auto& v : g.input()) add(v.name(), v.type());
  for (const auto& v : g.value_info()) add(v.name(), v.type());
  for (const auto& v : g.output()) add(v.name(), v.type());
  auto add_tensor = [&](const std::string& name, int element_type) {
    onnx::TypeProto type;
    type.mutable_tensor_type()->set_elem_type(element_type);
    add(name, type);
  };
  for (const auto& t : g.initializer()) add_tensor(t.name(), t.data_type());
  for (const auto& node : g.node()) {
    if (node.op_type() != "Constant" || !node.domain().empty() || node.output_size() != 1) continue;
    for (const auto& a : node.attribute()) {
      if (a.name() == "value" && a.has_t()) add_tensor(node.output(0), a.t().data_type());
    }
  }
  return types;
}

// ONNX Runtime's check of a node's inputs at load: each input's type is one its
// operator takes there, and inputs that share a type parameter (Add's T) have one type.
// Not the outputs: ONNX's own output check refuses files ONNX Runtime runs (an int64
// Constant at opset 6 in the PyTorch-converted tests).
void CheckInputTypes(const onnx::NodeProto& node, const NodeSchema& known, const KnownTypes& types,
                     const std::string& source) {
  const auto& formals = known.schema->inputs();
  std::map<std::string, std::pair<onnx::DataType, std::string>> bound;  // type parameter -> type, input
  if (formals.empty()) return;
  const bool variadic = formals.back().GetOption() == onnx::OpSchema::Variadic;
  for (int i = 0; i < node.input_size(); ++i) {
    if (node.input(i).empty()) continue;
    const auto type = types.find(node.input(i));
    if (type == types.end()) continue;
    const size_t f = static_cast<size_t>(i) < formals.size() ? static_cast<size_t>(i) : formals.size() - 1;
    if (static_cast<size_t>(i) >= formals.size() && !variadic) continue;
    const auto& formal = formals[f];
    if (!formal.GetTypes().contains(type->second)) {
      throw NodeError(source, node, known.opset,
                      fmt::format("input '{}' is {}, which input {} ('{}') does not take", node.input(i), *type->second,
                                  f, formal.GetName()));
    }
    if (f + 1 == formals.size() && variadic && !formal.GetIsHomogeneous()) continue;
    const auto [it, fresh] = bound.emplace(formal.GetTypeStr(), std::pair{type->second, node.input(i)});
    if (!fresh && it->second.first != type->second) {
      throw NodeError(
          source, node, known.opset,
          fmt::format("input '{}' is {} and input '{}' is {}: {} takes one type for both ({})", it->second.second,
                      *it->second.first, node.input(i), *type->second, node.op_type(), formal.GetTypeStr()));
    }
  }
}

// Each node's input types against its operator's constraints, as far as `types` knows
// them.
void CheckInputTypes(const onnx::ModelProto& model, const std::map<std::string, int64_t>& opsets,
                     const KnownTypes& types, const std::string& source) {
  for (const auto& node : model.graph().node()) {
    const NodeSchema known = SchemaOf(node, opsets);
    if (known.schema != nullptr) CheckInputTypes(node, known, types, source);
  }
}

// Whether libonnx knows every opset the model imports of the domains it knows: a later
// opset's operators may take other inputs (ReduceSum's axes became an input at 13),
// which the earlier schema's inference would wrongly refuse.
bool KnowsOpsets(const onnx::ModelProto& model) {
  for (const auto& op : model.opset_import()) {
    const std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
    const int known = KnownOpset(domain);
    if (known != 0 && op.version() > known) return false;
  }
  return true;
}

// ---- what the child process does to its copy of the model before inference ----

// Shape inference reads the data of the initializers that carry shapes, axes, pads
// and counts, all small; larger ones, and those whose data lies in external files
// (which inference must not open), are given to it as graph inputs of their type and
// shape instead.
constexpr int64_t kInferredDataElements = 1024;

bool InlineAndSmall(const onnx::TensorProto& t) {
  if (t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) return false;
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || d > kInferredDataElements) return false;
    n *= d;
    if (n > kInferredDataElements) return false;
  }
  return true;
}

void GiveLargeInitializersAsInputs(onnx::GraphProto& g) {
  std::set<std::string> listed;
  for (const auto& input : g.input()) listed.insert(input.name());
  google::protobuf::RepeatedPtrField<onnx::TensorProto> all;
  g.mutable_initializer()->Swap(&all);
  for (auto& t : all) {
    if (InlineAndSmall(t)) {
      g.add_initializer()->Swap(&t);
    } else if (!listed.contains(t.name())) {
      auto* input = g.add_input();
      input->set_name(t.name());
      auto* type = input->mutable_type()->mutable_tensor_type();
      type->set_elem_type(t.data_type());
      auto* shape = type->mutable_shape();
      for (int64_t d : t.dims()) shape->add_dim()->set_dim_value(d);
    }
  }
}

// libonnx 1.12's inference fails on any value of a map type ("type case unsupported for
// symbolic shape inference"), and ZipMap (a classifier's probabilities as a sequence of
// maps) ends most scikit-learn classifiers: its nodes are left out. Their outputs are
// then not inferred (the runtime checks them itself).
void RemoveZipMaps(onnx::GraphProto& g) {
  auto& nodes = *g.mutable_node();
  nodes.erase(std::remove_if(nodes.begin(), nodes.end(), [](const auto& n) { return n.op_type() == "ZipMap"; }),
              nodes.end());
}

// The shapes the file declares for intermediate values and outputs are dropped before
// inference (ONNX Runtime warns and keeps the inferred one when they disagree; ONNX's
// strict inference would refuse the file); declared element types are kept, and
// checked. The Graph keeps what the file declared (GraphBuilder read it before).
void DropDeclaredShapes(onnx::GraphProto& g) {
  g.clear_value_info();
  for (auto& output : *g.mutable_output()) {
    if (output.type().has_tensor_type()) output.mutable_type()->mutable_tensor_type()->clear_shape();
  }
}

// The outputs of operators without an inference function in libonnx (OneHotEncoder,
// Imputer...) get the one type their schema allows, as ONNX Runtime gives them;
// otherwise strict inference would refuse the next node for an input of no type.
void DeclareFixedOutputTypes(onnx::GraphProto& g, const std::map<std::string, int64_t>& opsets) {
  std::set<std::string> typed;
  for (const auto& output : g.output()) {
    if (output.type().value_case() != onnx::TypeProto::VALUE_NOT_SET) typed.insert(output.name());
  }
  for (int n = 0; n < g.node_size(); ++n) {
    const auto& node = g.node(n);
    const NodeSchema known = SchemaOf(node, opsets);
    if (known.schema == nullptr || known.schema->has_type_and_shape_inference_function() ||
        known.schema->HasFunction() || known.schema->outputs().empty()) {
      continue;
    }
    const auto& formals = known.schema->outputs();
    for (int i = 0; i < node.output_size(); ++i) {
      const auto& formal = formals[std::min(static_cast<size_t>(i), formals.size() - 1)];
      if (node.output(i).empty() || typed.contains(node.output(i)) || formal.GetTypes().size() != 1) continue;
      auto* info = g.add_value_info();
      info->set_name(node.output(i));
      *info->mutable_type() = onnx::Utils::DataTypeUtils::ToTypeProto(*formal.GetTypes().begin());
    }
  }
}

// In the child: inference over its copy of the model, the input types checked again
// with what it found; returns the values' types and shapes (the graph's value_info and
// outputs) as a serialized GraphProto.
std::string InferInChild(onnx::ModelProto& model, const std::string& source) {
  const auto opsets = Opsets(model);
  auto& g = *model.mutable_graph();
  DropDeclaredShapes(g);
  DeclareFixedOutputTypes(g, opsets);
  GiveLargeInitializersAsInputs(g);
  RemoveZipMaps(g);
  try {
    const onnx::ShapeInferenceOptions options(/*check_type_val=*/false, /*strict_mode_val=*/1,
                                              /*data_prop_val=*/false);
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    std::string reason = e.what();
    while (!reason.empty() && reason.back() == '\n') reason.pop_back();
    throw Error(ErrorCode::Model, fmt::format("{}: ONNX shape inference: {}", source, reason));
  }
  CheckInputTypes(model, opsets, TypesOf(g), source);
  onnx::GraphProto found;
  found.mutable_value_info()->Swap(g.mutable_value_info());
  found.mutable_output()->Swap(g.mutable_output());
  return found.SerializeAsString();
}

}  // namespace

void InferOnnxShapes(onnx::ModelProto& model, const std::string& source) {
  if (!KnowsOpsets(model)) return;
  const IsolatedCall call{source, "ONNX's shape inference"};
  const std::string bytes = RunIsolated(call, [&] { return InferInChild(model, source); });
  onnx::GraphProto found;
  auto& g = *model.mutable_graph();
  if (!found.ParseFromString(bytes) || found.output_size() != g.output_size()) {
    throw Error(ErrorCode::Model, fmt::format("{}: ONNX's shape inference answered garbage", source));
  }
  g.mutable_value_info()->Swap(found.mutable_value_info());
  g.mutable_output()->Swap(found.mutable_output());
}

void CheckOnnxNodes(const onnx::ModelProto& model, const std::string& source) {
  const auto opsets = Opsets(model);
  std::vector<NodeSchema> schemas;
  schemas.reserve(static_cast<size_t>(model.graph().node_size()));
  for (const auto& node : model.graph().node()) {
    schemas.push_back(SchemaOf(node, opsets));
    if (schemas.back().schema == nullptr) continue;  // the loader's own checks decide
    try {
      schemas.back().schema->Verify(node);
    } catch (const std::exception& e) {
      throw NodeError(source, node, schemas.back().opset, e.what());
    }
  }
  // Types only once every node is known well formed (input counts within its schema).
  const KnownTypes types = TypesOf(model.graph());
  for (int i = 0; i < model.graph().node_size(); ++i) {
    const NodeSchema& known = schemas[static_cast<size_t>(i)];
    if (known.schema != nullptr) CheckInputTypes(model.graph().node(i), known, types, source);
  }
}

}  // namespace runnel::tensor
