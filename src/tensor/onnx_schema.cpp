// Each node of an ONNX model against ONNX's own schema of its operator, from
// libonnx-dev (OpSchema::Verify, the check ONNX's checker and ONNX Runtime apply to a
// node): input and output counts, required attributes present, no attribute the
// operator does not have, each attribute's value in its field. An attribute with a typo
// would otherwise be ignored and its default used: a silently wrong answer.
//
// Not onnx::checker::check_model as a whole: it refuses graphs ONNX Runtime runs (no
// graph name, an input or output whose type declares no shape), and its tensor check
// opens the files external data names, which a hostile file must not make us probe.
#include "runnel/tensor/onnx_import.hpp"

#include <fmt/format.h>
#include <onnx/defs/schema.h>

#include <map>

#include "runnel/core/error.hpp"

namespace runnel::tensor {
namespace {

// The highest opset of `domain` this libonnx knows, 0 for a domain it does not know
// (com.microsoft's, a user's): a node of a later opset may follow a newer schema.
int KnownOpset(const std::string& domain) {
  const auto& ranges = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  const auto it = ranges.find(domain);
  return it == ranges.end() ? 0 : it->second.second;
}

}  // namespace

void CheckOnnxNodes(const onnx::ModelProto& model, const std::string& source) {
  std::map<std::string, int64_t> opsets;
  for (const auto& op : model.opset_import()) opsets[op.domain() == "ai.onnx" ? "" : op.domain()] = op.version();
  for (const auto& node : model.graph().node()) {
    const std::string domain = node.domain() == "ai.onnx" ? "" : node.domain();
    const auto opset = opsets.find(domain);
    if (opset == opsets.end() || opset->second < 1 || opset->second > KnownOpset(domain)) continue;
    const auto* schema = onnx::OpSchemaRegistry::Schema(node.op_type(), static_cast<int>(opset->second), domain);
    if (schema == nullptr) continue;  // not an ONNX operator at that opset: the loader says unsupported
    try {
      schema->Verify(node);
    } catch (const std::exception& e) {
      throw Error(ErrorCode::Model, fmt::format("{}: node '{}' ({} of opset {}): {}", source, node.name(),
                                                node.op_type(), opset->second, e.what()));
    }
  }
}

}  // namespace runnel::tensor
