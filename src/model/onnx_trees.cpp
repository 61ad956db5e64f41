// ONNX models whose work is one tree ensemble of the ai.onnx.ml domain, as
// scikit-learn (skl2onnx), LightGBM and XGBoost converters write them:
// X (float [N, F]) -> TreeEnsembleRegressor -> Y, or X -> TreeEnsembleClassifier ->
// (label, probabilities), the probabilities possibly through ZipMap; Identity and Cast
// nodes around them are accepted. Served straight from the compiled TreeEnsemble
// (src/tensor/ops_trees.cpp builds it), without the general runtime's tensors.
#include <fmt/format.h>

#include "loaders.hpp"
#include "runnel/core/error.hpp"
#include "runnel/tensor/onnx_trees.hpp"

namespace runnel::model {

namespace {

bool IsEnsemble(const tensor::Node& node) {
  return node.domain == "ai.onnx.ml" && (node.op == "TreeEnsembleRegressor" || node.op == "TreeEnsembleClassifier");
}

// The graph's one ensemble node when every other node only passes its outputs on.
const tensor::Node* OnlyEnsemble(const tensor::Graph& graph) {
  const tensor::Node* ensemble = nullptr;
  for (const auto& node : graph.nodes) {
    if (IsEnsemble(node)) {
      if (ensemble != nullptr) return nullptr;
      ensemble = &node;
    } else if (node.op != "ZipMap" && node.op != "Identity" && node.op != "Cast") {
      return nullptr;
    }
  }
  if (ensemble == nullptr || ensemble->inputs.empty() || graph.inputs.size() != 1 ||
      ensemble->inputs[0] != graph.inputs[0])
    return nullptr;
  return ensemble;
}

// The width F of the graph's one input [N, F], or 0 when it is not such an input.
size_t InputWidth(const tensor::Graph& graph) {
  const auto& info = graph.input_info[0];
  if (!info.type || (*info.type != tensor::DataType::kFloat && *info.type != tensor::DataType::kDouble)) return 0;
  if (info.dims.size() != 2 || !info.dims[1] || *info.dims[1] < 1 || *info.dims[1] > 1000000) return 0;
  return static_cast<size_t>(*info.dims[1]);
}

}  // namespace

std::optional<LoadedTrees> OnnxTrees(const tensor::Graph& graph, const std::string& source) {
  const tensor::Node* ensemble = OnlyEnsemble(graph);
  if (ensemble == nullptr) return std::nullopt;
  const size_t features = InputWidth(graph);
  if (features == 0) return std::nullopt;
  LoadedTrees out;
  try {
    out.ensemble = tensor::OnnxTreeEnsemble(*ensemble, features);
  } catch (const Error& e) {
    throw Error(ErrorCode::Model, fmt::format("{}: {}: {}", source, ensemble->Label(), e.what()));
  }
  out.info = {ModelFormat::Onnx, source, graph.producer + ", " + ensemble->op, ""};
  return out;
}

}  // namespace runnel::model
