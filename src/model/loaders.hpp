// Format loaders behind LoadModel. Each takes the whole file's bytes (so fuzzers and
// zip members need no temporary files) and the name to use in messages.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "runnel/model/graph.hpp"
#include "runnel/model/model.hpp"
#include "runnel/tensor/graph.hpp"
#include "runnel/tensor/trees.hpp"

namespace onnx {
class ModelProto;
}

namespace runnel::model {

struct LoadedGraph {
  Graph graph;
  ModelInfo info;
};

LoadedGraph LoadKerasH5(std::string_view bytes, const std::string& source);
LoadedGraph LoadKerasV3(std::string_view bytes, const std::string& source);
// The dense fast path's ONNX loader: parses, builds, then runs ONNX's shape inference.
LoadedGraph LoadOnnx(std::string_view bytes, const std::string& source);
// Builds the dense graph of a parsed model without shape inference (the caller runs it
// once). Throws Error(Model) for a graph the dense path does not take.
LoadedGraph BuildDenseOnnx(const onnx::ModelProto& model, const std::string& source);
LoadedGraph LoadTfGraph(std::string_view bytes, const std::string& source);

struct LoadedTrees {
  std::shared_ptr<const trees::TreeEnsemble> ensemble;
  ModelInfo info;
};

LoadedTrees LoadXGBoostJson(std::string_view bytes, const std::string& source);
// An ONNX graph whose work is one ai.onnx.ml tree ensemble over a float [N, F] input,
// served from the compiled ensemble; nullopt for any other graph (the general runtime
// serves those). Throws Error(Model) for an ensemble it cannot run.
std::optional<LoadedTrees> OnnxTrees(const tensor::Graph& graph, const std::string& source);

}  // namespace runnel::model
