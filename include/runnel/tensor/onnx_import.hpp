// Reading ONNX files into the general runtime: models (onnx.ModelProto) and tensors
// (onnx.TensorProto, as the ONNX backend test data stores them). Files are hostile:
// every shape and length is checked against what the file holds before allocating.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "runnel/tensor/graph.hpp"

namespace onnx {
class ModelProto;
}

namespace runnel::tensor {

// Checks every node of the model's graph against ONNX's schema of its operator at the
// model's opset (libonnx's OpSchema::Verify: input and output counts, required and
// unknown attributes, attribute fields), for the opsets libonnx knows (the default
// domain up to 17, ai.onnx.ml up to 3); nodes of later opsets and other domains are
// left to the loaders. Then, as ONNX Runtime does at load, each node's inputs whose
// types the file states (graph inputs, declared values, initializers, Constants)
// against its operator's type constraints: each a type the operator takes, inputs
// sharing a type parameter (Add's two) of one type. Throws Error(Model) naming
// `source`, the node and the reason. Thread safety: any number of calls at once.
void CheckOnnxNodes(const onnx::ModelProto& model, const std::string& source);

// Runs ONNX's shape inference (libonnx's InferShapes, strict) over the model as ONNX
// Runtime does at load, when libonnx knows the model's opsets, then checks each node's
// input types, now including the inferred ones, as CheckOnnxNodes does. Afterwards the
// model's graph holds the inferred type and shape of each value in its value_info and
// outputs. Shapes the file declares for them are dropped first (ONNX Runtime too keeps
// the inferred ones when they disagree); declared types are checked. Initializers larger
// than 1,024 elements and external ones are not read (inference sees their type and
// shape). libonnx's inference trusts what it reads (a hostile file crashed it), so it
// runs in a child process (RunIsolated; a crash or a hang there is an error here).
// Throws Error(Model) naming `source` and ONNX's reason (which names the node) for types
// or shapes an operator cannot take. Thread safety: any number of calls at once on
// different models.
void InferOnnxShapes(onnx::ModelProto& model, const std::string& source);

// Parses an ONNX model and checks its nodes (CheckOnnxNodes). Throws Error(Model) naming
// `source` for bytes that are not an ONNX model with a graph.
onnx::ModelProto ParseOnnxModel(std::string_view bytes, const std::string& source);

// Parses an ONNX model and binds every node to its kernel. Initializers may keep their
// data in external files (ONNX's external data) inside `dir`, the model's directory:
// a location that is absolute, climbs with "..", or resolves (symlinks included)
// outside `dir` is refused, as is any external data when `dir` is empty. Throws
// Error(Model) naming `source` and the node for a malformed file, UnsupportedError
// ("unsupported: Op (opset N)") for an operator, domain, element type or attribute the
// runtime lacks; every node is first checked by CheckOnnxNodes, the graph then by
// InferOnnxShapes, whose shapes fill Graph::inferred.
std::shared_ptr<const Graph> LoadOnnxGraph(std::string_view bytes, const std::string& source,
                                           const std::filesystem::path& dir = {});

// LoadOnnxGraph over a model ParseOnnxModel returned (its nodes already checked).
std::shared_ptr<const Graph> LoadOnnxGraph(onnx::ModelProto model, const std::string& source,
                                           const std::filesystem::path& dir = {});

// Parses a serialized onnx.TensorProto. Throws Error(Model) naming `source`.
Tensor LoadOnnxTensor(std::string_view bytes, const std::string& source);

}  // namespace runnel::tensor
