// Loading and running a model. A Model is immutable and shared read-only by every
// worker (std::shared_ptr<const Model>); each worker owns a ModelSession holding its
// scratch buffers, so prediction allocates nothing once the largest batch was seen.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/model/graph.hpp"
#include "runnel/model/kernels.hpp"
#include "runnel/model/pmml.hpp"
#include "runnel/model/tensor_model.hpp"
#include "runnel/tensor/trees.hpp"

namespace runnel::model {

namespace trees = tensor::trees;

enum class ModelFormat { KerasH5, KerasV3, Onnx, Pmml, TfGraph, XGBoostJson };
const char* ModelFormatName(ModelFormat format);

struct ModelInfo {
  ModelFormat format = ModelFormat::Onnx;
  std::string source;    // file name, for messages
  std::string producer;  // e.g. "Keras 2.15.0", "tf2onnx 1.16.1"
  std::string version;   // file name and a hash of its bytes, e.g. "model.h5@1f2e3d4c5b6a7988"
};

// A model is a graph (Keras, ONNX, TensorFlow: positional inputs and outputs), a PMML
// document (named inputs and outputs, see pmml.hpp), a tree ensemble (XGBoost:
// positional, see trees.hpp) or, for ONNX graphs the dense fast path cannot run, a
// graph of the general tensor runtime (tensor_model.hpp).
class Model {
 public:
  // Validates the graph and packs the weights. Throws Error(Model) naming the source.
  Model(Graph graph, ModelInfo info);
  Model(std::shared_ptr<const pmml::PmmlModel> pmml, ModelInfo info);
  // `outputs`: the ensemble's outputs by name (an ONNX graph's), empty when unnamed.
  Model(std::shared_ptr<const trees::TreeEnsemble> trees, ModelInfo info, std::vector<ModelPort> outputs = {});
  Model(std::shared_ptr<const TensorModel> tensor, ModelInfo info);

  const Graph& graph() const { return graph_; }
  const ModelInfo& info() const { return info_; }
  size_t input_width() const { return input_width_; }
  // Texts per row for the model's string inputs (general-runtime ONNX graphs only).
  size_t text_width() const;
  size_t output_width() const { return output_width_; }
  const PackedDense& packed(size_t node_index) const { return packed_[node_index]; }

  // One line per node: "dense_1  Dense 9 -> 32 relu", for `runnel model inspect`.
  std::vector<std::string> Describe() const;

  // Named models (PMML): the fields each input column feeds, in order, and the names
  // of the outputs: the predicted value (named after the target), then one
  // "probability_<class>" per class. Both empty for positional (graph) models.
  const std::vector<std::string>& input_names() const { return input_names_; }
  // The class labels output value `index` is served as the index of (a classifier's
  // string label: ONNX graphs and tree ensembles); empty for other outputs.
  std::span<const std::string> output_labels(size_t index) const;
  const std::vector<std::string>& output_names() const { return output_names_; }
  // Graph models (Keras, ONNX, TensorFlow, the general runtime; ONNX tree ensembles'
  // outputs): their inputs and outputs by name, in the order input_width and
  // output_width concatenate them, for [model] inputs and output_from. Empty for a
  // model that does not name them (PMML names its fields its own way, above).
  const std::vector<ModelPort>& input_ports() const { return input_ports_; }
  const std::vector<ModelPort>& output_ports() const { return output_ports_; }
  const pmml::PmmlModel* pmml() const { return pmml_.get(); }        // non-owning; null unless PMML
  const trees::TreeEnsemble* trees() const { return trees_.get(); }  // non-owning; null unless trees
  const TensorModel* tensor() const { return tensor_.get(); }        // non-owning; null unless one
  bool is_graph() const { return !pmml_ && !trees_ && !tensor_; }

 private:
  Graph graph_;
  ModelInfo info_;
  std::vector<PackedDense> packed_;  // per node; empty unless Dense
  std::shared_ptr<const pmml::PmmlModel> pmml_;
  std::shared_ptr<const trees::TreeEnsemble> trees_;
  std::shared_ptr<const TensorModel> tensor_;
  std::vector<std::string> input_names_, output_names_;
  std::vector<ModelPort> input_ports_, output_ports_;
  size_t input_width_ = 0;
  size_t output_width_ = 0;
};

// Reads a model file, choosing the loader by its content (HDF5 signature, zip, XML for
// PMML, a TensorFlow GraphDef, else ONNX protobuf: the dense fast path when it can run
// the graph, else the general tensor runtime). Throws Error(Model) naming the file and the layer or node at fault,
// Error(Io) when the file cannot be read. Never crashes on malformed input. With a
// tokenizer or logit labels in `options` (tensor_model.hpp), the model must be an
// ONNX graph with token inputs / one logits output.
std::shared_ptr<const Model> LoadModel(const std::filesystem::path& path, const LoadOptions& options = {});

// The same from bytes already in memory (a model registry row): `source` names it in
// messages, `version` becomes info().version. Same errors as LoadModel.
std::shared_ptr<const Model> LoadModelFromBytes(std::string_view bytes, const std::string& source,
                                                const std::string& version, const LoadOptions& options = {});

// The largest model Runnel loads, in bytes, whole or inflated from an archive:
// $RUNNEL_MAX_MODEL_BYTES when set to a positive number, else 1 GiB. A larger file, or
// an archive whose members would inflate past it, is refused before anything is
// allocated for it (Error(Model) naming the file and the member).
size_t MaxModelBytes();
// An archive member inflating more than this many times its stored size is refused as
// a decompression bomb (weights compress far less).
inline constexpr uint64_t kMaxInflation = 200;

// The format LoadModel would read `bytes` as.
ModelFormat DetectModelFormat(std::string_view bytes);
// FNV-1a 64 of the bytes: identifies a model file's exact content.
uint64_t ContentHash(std::string_view bytes);

// Per-thread executor. Not thread-safe; create one per worker.
class ModelSession {
 public:
  explicit ModelSession(std::shared_ptr<const Model> model);

  // input: rows x input_width, row-major and dense; texts: rows x text_width (the
  // string inputs, empty for models without); output: rows x output_width. The
  // returned span points into the session and stays valid until the next call.
  // Throws Error(InvalidInput) when the sizes do not match the model's widths.
  std::span<const float> Predict(std::span<const float> input, size_t rows, std::span<const std::string> texts = {});

  const Model& model() const { return *model_; }

 private:
  void Reserve(size_t rows);
  // The dense graph's run, in stages: inputs into their buffers, each node, outputs.
  void ScatterInputs(std::span<const float> input, size_t rows);
  void RunNode(size_t node, size_t rows);
  void GatherOutputs(size_t rows);

  std::shared_ptr<const Model> model_;
  std::unique_ptr<tensor::Session> tensor_session_;  // with a TensorModel
  std::vector<size_t> strides_;              // per value: padded width
  std::vector<std::vector<float>> buffers_;  // per value
  std::vector<float> output_;
  size_t capacity_rows_ = 0;
};

}  // namespace runnel::model
