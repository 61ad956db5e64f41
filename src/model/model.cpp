#include "runnel/model/model.hpp"

#include <fmt/format.h>
#include <onnx/onnx-ml.pb.h>

#include <cstdlib>

#include <algorithm>
#include <optional>

#include "loaders.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/tensor/onnx_import.hpp"

namespace runnel::model {

const char* ModelFormatName(ModelFormat format) {
  switch (format) {
    case ModelFormat::KerasH5: return "Keras HDF5 (.h5)";
    case ModelFormat::KerasV3: return "Keras v3 (.keras)";
    case ModelFormat::Onnx: return "ONNX";
    case ModelFormat::Pmml: return "PMML";
    case ModelFormat::TfGraph: return "TensorFlow GraphDef (.pb)";
    case ModelFormat::XGBoostJson: return "XGBoost JSON";
  }
  return "?";
}

Model::Model(Graph graph, ModelInfo info) : graph_(std::move(graph)), info_(std::move(info)) {
  graph_.Validate(info_.source);
  packed_.resize(graph_.nodes.size());
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (graph_.nodes[i].kind == OpKind::Dense) packed_[i] = PackDense(graph_.nodes[i]);
  }
  input_width_ = graph_.InputWidth();
  output_width_ = graph_.OutputWidth();
  for (int id : graph_.inputs) input_ports_.push_back({graph_.value_names[id], graph_.value_widths[id]});
  for (int id : graph_.outputs) output_ports_.push_back({graph_.value_names[id], graph_.value_widths[id]});
}

Model::Model(std::shared_ptr<const pmml::PmmlModel> pmml, ModelInfo info)
    : info_(std::move(info)), pmml_(std::move(pmml)) {
  input_names_ = pmml_->input_names();
  output_names_ = pmml_->output_names();
  input_width_ = input_names_.size();
  output_width_ = output_names_.size();
}

Model::Model(std::shared_ptr<const TensorModel> tensor, ModelInfo info)
    : info_(std::move(info)), tensor_(std::move(tensor)) {
  input_width_ = tensor_->input_width();
  output_width_ = tensor_->output_width();
  input_ports_ = tensor_->ValuePorts();
  output_ports_ = tensor_->OutputPorts();
}

Model::Model(std::shared_ptr<const trees::TreeEnsemble> trees, ModelInfo info, std::vector<ModelPort> outputs)
    : info_(std::move(info)), trees_(std::move(trees)), output_ports_(std::move(outputs)) {
  input_width_ = trees_->input_width();
  output_width_ = trees_->output_width();
}

namespace {

const char* TransformName(trees::Transform transform) {
  switch (transform) {
    case trees::Transform::kIdentity: return "the sum of the trees' values";
    case trees::Transform::kSigmoid: return "a probability (sigmoid)";
    case trees::Transform::kExp: return "exp of the sum";
    case trees::Transform::kSoftmax: return "one probability per class (softmax)";
    case trees::Transform::kSoftmaxZero: return "one probability per class (softmax over non-zero margins)";
    case trees::Transform::kArgMax: return "the class index (argmax)";
  }
  return "?";
}

}  // namespace

std::vector<std::string> Model::Describe() const {
  if (pmml_) return pmml_->Describe();
  if (tensor_) return tensor_->Describe();
  if (trees_) {
    std::vector<std::string> lines{fmt::format("{} trees, {} nodes, max depth {}, {} output group(s)", trees_->trees(),
                                               trees_->nodes(), trees_->max_depth(), trees_->groups()),
                                   fmt::format("outputs: {}", TransformName(trees_->transform()))};
    for (const auto& port : output_ports_)
      lines.push_back(fmt::format("{:<28} Output     {} value(s) a row", port.name, port.width));
    return lines;
  }
  std::vector<std::string> lines;
  for (int id : graph_.inputs) {
    lines.push_back(fmt::format("{:<28} Input      width {}", graph_.value_names[static_cast<size_t>(id)],
                                graph_.value_widths[static_cast<size_t>(id)]));
  }
  for (const auto& node : graph_.nodes) {
    const size_t out = graph_.value_widths[static_cast<size_t>(node.output)];
    std::string what;
    switch (node.kind) {
      case OpKind::Dense:
        what = fmt::format("Dense      {} -> {} {}{}", node.in_width, node.out_width,
                           ActivationName(node.activation.kind), node.bias.empty() ? " (no bias)" : "");
        break;
      case OpKind::Binary: {
        static constexpr const char* kOps[] = {"add", "sub", "mul", "div"};
        what = fmt::format("Binary     {} width {}{}", kOps[static_cast<int>(node.binary)], out,
                           node.inputs.size() == 1 ? " (constant)" : "");
        break;
      }
      case OpKind::Affine: what = fmt::format("Affine     width {}", out); break;
      case OpKind::Activate:
        what = fmt::format("Activation {} width {}", ActivationName(node.activation.kind), out);
        break;
      case OpKind::Concat: what = fmt::format("Concat     {} inputs -> width {}", node.inputs.size(), out); break;
      case OpKind::Identity: what = fmt::format("Identity   width {}", out); break;
    }
    lines.push_back(fmt::format("{:<28} {}", node.name, what));
  }
  return lines;
}

namespace {

// ONNX is what is left once the other formats' signatures did not match: a file that
// does not start as ONNX files do (ir_version, field 1) and does not parse as one is
// named as no model at all rather than as a broken ONNX model.
LoadedGraph LoadOnnxOrUnknown(std::string_view bytes, const std::string& source) {
  if (bytes.starts_with('\x08')) return LoadOnnx(bytes, source);
  try {
    return LoadOnnx(bytes, source);
  } catch (const Error&) {
    throw Error(
        ErrorCode::Model,
        fmt::format(
            "{}: not a model file Runnel reads (Keras .h5 or .keras, ONNX, PMML, TensorFlow .pb, XGBoost .json), "
            "whatever its name says",
            source));
  }
}

LoadedGraph LoadModelGraph(std::string_view bytes, const std::string& source) {
  if (bytes.empty()) throw Error(ErrorCode::Model, fmt::format("{}: empty file", source));
  switch (DetectModelFormat(bytes)) {
    case ModelFormat::KerasH5: return LoadKerasH5(bytes, source);
    case ModelFormat::KerasV3: return LoadKerasV3(bytes, source);
    case ModelFormat::Onnx: return LoadOnnxOrUnknown(bytes, source);
    case ModelFormat::TfGraph: return LoadTfGraph(bytes, source);
    case ModelFormat::Pmml: break;  // not a graph: see MakeModel
    case ModelFormat::XGBoostJson: break;
  }
  throw Error(ErrorCode::Model, fmt::format("{}: unknown model format", source));
}

std::shared_ptr<const Model> MakeTensorModel(std::shared_ptr<const tensor::Graph> graph, const std::string& source,
                                             const std::string& version, const LoadOptions& options) {
  ModelInfo info;
  info.format = ModelFormat::Onnx;
  info.source = source;
  info.producer = graph->producer + " (general tensor runtime)";
  info.version = version;
  return std::make_shared<const Model>(TensorModel::Load(std::move(graph), source, options), std::move(info));
}

// An ONNX tree ensemble's outputs by the graph's names: a classifier's label, then its
// probabilities (ZipMap's too); a regressor's one output. Empty when the graph's
// outputs are not these two or this one.
std::vector<ModelPort> TreeOutputPorts(const tensor::Graph& graph, const trees::TreeEnsemble& ensemble) {
  const size_t width = ensemble.output_width();
  const auto& outputs = graph.output_info;
  if (outputs.size() == 2 && width >= 2) return {{outputs[0].name, 1}, {outputs[1].name, width - 1}};
  if (outputs.size() == 1) return {{outputs[0].name, width}};
  return {};
}

// The dense fast path's graph, or nullopt when its builder does not take the graph.
std::optional<LoadedGraph> TryBuildDense(const onnx::ModelProto& model, const std::string& source) {
  try {
    return BuildDenseOnnx(model, source);
  } catch (const Error&) {
    return std::nullopt;  // not a dense tabular graph
  }
}

// An ONNX graph: the dense fast path when its builder takes the graph, else a tree
// ensemble served from its compiled trees, else the general tensor runtime, whose
// error is the one reported when none can run it. Token inputs and logit labels only
// the general runtime serves. The file is parsed once and ONNX's shape inference (a
// child process) runs once: its refusal refuses the file on every path.
std::shared_ptr<const Model> LoadOnnxModel(std::string_view bytes, const std::string& source,
                                           const std::string& version, const std::filesystem::path& dir,
                                           const LoadOptions& options) {
  const bool general_only = options.NeedsGeneralRuntime();
  onnx::ModelProto model = tensor::ParseOnnxModel(bytes, source);
  if (auto dense = general_only ? std::nullopt : TryBuildDense(model, source)) {
    tensor::InferOnnxShapes(model, source);  // after the builder's checks of every size
    dense->info.version = version;
    return std::make_shared<const Model>(std::move(dense->graph), std::move(dense->info));
  }
  auto graph = tensor::LoadOnnxGraph(std::move(model), source, dir);
  if (auto trees = general_only ? std::nullopt : OnnxTrees(*graph, source)) {
    trees->info.version = version;
    auto ports = TreeOutputPorts(*graph, *trees->ensemble);
    return std::make_shared<const Model>(std::move(trees->ensemble), std::move(trees->info), std::move(ports));
  }
  return MakeTensorModel(std::move(graph), source, version, options);
}

// `dir`: the model file's directory, where ONNX external data may lie (empty for
// models that come as bytes, from the registry).
std::shared_ptr<const Model> MakeModel(std::string_view bytes, const std::string& source, const std::string& version,
                                       const std::filesystem::path& dir, const LoadOptions& options) {
  if (bytes.size() > MaxModelBytes()) {
    throw Error(ErrorCode::Model, fmt::format("{}: {} bytes is larger than the largest model Runnel loads ({} bytes; "
                                              "RUNNEL_MAX_MODEL_BYTES)",
                                              source, bytes.size(), MaxModelBytes()));
  }
  const bool onnx = !bytes.empty() && DetectModelFormat(bytes) == ModelFormat::Onnx && bytes.starts_with('\x08');
  if (options.NeedsGeneralRuntime() && !onnx) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: a tokenizer or logit labels are given, but only ONNX models take them", source));
  }
  if (!bytes.empty() && DetectModelFormat(bytes) == ModelFormat::Pmml) {
    auto pmml = pmml::PmmlModel::Load(bytes, source);
    ModelInfo info;
    info.format = ModelFormat::Pmml;
    info.source = source;
    info.producer = pmml->producer();
    info.version = version;
    return std::make_shared<const Model>(std::move(pmml), std::move(info));
  }
  std::optional<LoadedTrees> trees;
  if (!bytes.empty() && DetectModelFormat(bytes) == ModelFormat::XGBoostJson) trees = LoadXGBoostJson(bytes, source);
  if (trees) {
    trees->info.version = version;
    return std::make_shared<const Model>(std::move(trees->ensemble), std::move(trees->info));
  }
  if (onnx) {
    return LoadOnnxModel(bytes, source, version, dir, options);
  }
  auto loaded = LoadModelGraph(bytes, source);
  loaded.info.version = version;
  return std::make_shared<const Model>(std::move(loaded.graph), std::move(loaded.info));
}

}  // namespace

std::shared_ptr<const Model> LoadModel(const std::filesystem::path& path, const LoadOptions& options) {
  const std::string bytes = ReadFileBytes(path, "the model file");
  const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  return MakeModel(bytes, path.string(), fmt::format("{}@{:016x}", path.filename().string(), ContentHash(bytes)), dir,
                   options);
}

std::shared_ptr<const Model> LoadModelFromBytes(std::string_view bytes, const std::string& source,
                                                const std::string& version, const LoadOptions& options) {
  return MakeModel(bytes, source, version, {}, options);
}

size_t MaxModelBytes() {
  if (const char* env = std::getenv("RUNNEL_MAX_MODEL_BYTES"); env != nullptr) {
    char* end = nullptr;
    const unsigned long long value = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0' && value > 0) return static_cast<size_t>(value);
  }
  return size_t{1} << 30;
}

uint64_t ContentHash(std::string_view bytes) {
  // FNV-1a: identifies the exact bytes that produced a result.
  uint64_t hash = 1469598103934665603ULL;
  for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ULL;
  return hash;
}

ModelFormat DetectModelFormat(std::string_view bytes) {
  static constexpr std::string_view kHdf5Magic("\x89HDF\r\n\x1a\n", 8);
  if (bytes.starts_with(kHdf5Magic)) return ModelFormat::KerasH5;
  if (bytes.starts_with("PK\x03\x04")) return ModelFormat::KerasV3;
  // XML (after a byte-order mark and blanks): PMML.
  std::string_view rest = bytes;
  if (rest.starts_with("\xEF\xBB\xBF")) rest.remove_prefix(3);
  while (!rest.empty() && (rest[0] == ' ' || rest[0] == '\n' || rest[0] == '\r' || rest[0] == '\t'))
    rest.remove_prefix(1);
  if (rest.starts_with('<')) return ModelFormat::Pmml;
  if (rest.starts_with('{')) return ModelFormat::XGBoostJson;  // the JSON format Runnel reads
  // Protobuf: an ONNX ModelProto opens with ir_version (field 1, varint: 0x08); a
  // TensorFlow GraphDef with a node (field 1, length-delimited: 0x0A).
  if (bytes.starts_with('\x0A')) return ModelFormat::TfGraph;
  return ModelFormat::Onnx;
}

// ---- ModelSession ----

ModelSession::ModelSession(std::shared_ptr<const Model> model) : model_(std::move(model)) {
  if (const auto* t = model_->tensor()) tensor_session_ = std::make_unique<tensor::Session>(t->graph());
  if (!model_->is_graph()) return;
  const auto& graph = model_->graph();
  for (size_t width : graph.value_widths) strides_.push_back(PaddedWidth(width));
  buffers_.resize(graph.value_widths.size());
}

void ModelSession::Reserve(size_t rows) {
  if (rows <= capacity_rows_) return;
  for (size_t i = 0; i < buffers_.size(); ++i) buffers_[i].assign(rows * strides_[i], 0.0f);
  output_.assign(rows * model_->output_width(), 0.0f);
  capacity_rows_ = rows;
}

size_t Model::text_width() const {
  return tensor_ ? tensor_->text_width() : 0;
}

std::span<const std::string> Model::output_labels(size_t index) const {
  if (tensor_) return tensor_->LabelsAt(index);
  if (trees_ && trees_->head() && index == 0) return trees_->head()->label_names;
  return {};
}

std::span<const float> ModelSession::Predict(std::span<const float> input, size_t rows,
                                             std::span<const std::string> texts) {
  if (input.size() != rows * model_->input_width() || texts.size() != rows * model_->text_width()) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{}: expected {} x {} input values and {} x {} texts, got {} and {}", model_->info().source,
                            rows, model_->input_width(), rows, model_->text_width(), input.size(), texts.size()));
  }
  Reserve(rows);
  if (const auto* pmml = model_->pmml()) {
    pmml->Score(input, rows, std::span<float>(output_.data(), rows * model_->output_width()));
    return {output_.data(), rows * model_->output_width()};
  }
  if (const auto* trees = model_->trees()) {
    trees->Score(input, rows, std::span<float>(output_.data(), rows * model_->output_width()));
    return {output_.data(), rows * model_->output_width()};
  }
  if (const auto* t = model_->tensor()) {
    t->Score(*tensor_session_, input, texts, rows, std::span<float>(output_.data(), rows * model_->output_width()));
    return {output_.data(), rows * model_->output_width()};
  }
  ScatterInputs(input, rows);
  for (size_t n = 0; n < model_->graph().nodes.size(); ++n) RunNode(n, rows);
  GatherOutputs(rows);
  return {output_.data(), rows * model_->output_width()};
}

// Each input row split across the graph's inputs, into their buffers.
void ModelSession::ScatterInputs(std::span<const float> input, size_t rows) {
  const auto& graph = model_->graph();
  size_t offset = 0;
  for (int id : graph.inputs) {
    const size_t width = graph.value_widths[static_cast<size_t>(id)];
    float* dst = buffers_[static_cast<size_t>(id)].data();
    const size_t stride = strides_[static_cast<size_t>(id)];
    for (size_t r = 0; r < rows; ++r) {
      std::copy_n(input.data() + r * model_->input_width() + offset, width, dst + r * stride);
    }
    offset += width;
  }
}

namespace {

// y = a op b over rows x width, either side a scalar per row or (one input) a constant,
// which comes first when `swap`.
void BinaryForward(BinaryOp op, const float* a, size_t as, bool a_scalar, const float* b, size_t bs, bool b_scalar,
                   bool swap, size_t rows, size_t width, float* y, size_t ys) {
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < width; ++c) {
      float lhs = a[r * as + (a_scalar ? 0 : c)];
      float rhs = b[r * bs + (b_scalar ? 0 : c)];
      if (swap) std::swap(lhs, rhs);
      float v = 0;
      switch (op) {
        case BinaryOp::Add: v = lhs + rhs; break;
        case BinaryOp::Sub: v = lhs - rhs; break;
        case BinaryOp::Mul: v = lhs * rhs; break;
        case BinaryOp::Div: v = lhs / rhs; break;
      }
      y[r * ys + c] = v;
    }
  }
}

}  // namespace

void ModelSession::RunNode(size_t n, size_t rows) {
  const auto& graph = model_->graph();
  const Node& node = graph.nodes[n];
  const auto out_id = static_cast<size_t>(node.output);
  float* y = buffers_[out_id].data();
  const size_t ys = strides_[out_id];
  const size_t width = graph.value_widths[out_id];
  auto in = [&](size_t i) { return buffers_[static_cast<size_t>(node.inputs[i])].data(); };
  auto in_stride = [&](size_t i) { return strides_[static_cast<size_t>(node.inputs[i])]; };
  auto in_width = [&](size_t i) { return graph.value_widths[static_cast<size_t>(node.inputs[i])]; };
  switch (node.kind) {
    case OpKind::Dense: {
      const Activation kind = node.activation.kind;
      const bool fused = kind == Activation::Linear || kind == Activation::Relu;
      DenseForward(in(0), in_stride(0), rows, model_->packed(n), fused ? kind : Activation::Linear, y, ys);
      if (!fused) ApplyActivation(node.activation, y, ys, rows, width);
      break;
    }
    case OpKind::Binary: {
      const bool two = node.inputs.size() == 2;
      BinaryForward(node.binary, in(0), in_stride(0), in_width(0) == 1, two ? in(1) : node.constant.data(),
                    two ? in_stride(1) : 0, two ? in_width(1) == 1 : node.constant.size() == 1,
                    !two && node.constant_first, rows, width, y, ys);
      break;
    }
    case OpKind::Affine:
      for (size_t r = 0; r < rows; ++r) {
        const float* x = in(0) + r * in_stride(0);
        for (size_t c = 0; c < width; ++c) y[r * ys + c] = x[c] * node.scale[c] + node.shift[c];
      }
      break;
    case OpKind::Activate:
    case OpKind::Identity:
      for (size_t r = 0; r < rows; ++r) std::copy_n(in(0) + r * in_stride(0), width, y + r * ys);
      if (node.kind == OpKind::Activate) ApplyActivation(node.activation, y, ys, rows, width);
      break;
    case OpKind::Concat: {
      size_t col = 0;
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        for (size_t r = 0; r < rows; ++r) std::copy_n(in(i) + r * in_stride(i), in_width(i), y + r * ys + col);
        col += in_width(i);
      }
      break;
    }
  }
}

// The graph's outputs side by side in each output row.
void ModelSession::GatherOutputs(size_t rows) {
  const auto& graph = model_->graph();
  const size_t out_width = model_->output_width();
  size_t col = 0;
  for (int id : graph.outputs) {
    const size_t width = graph.value_widths[static_cast<size_t>(id)];
    const float* src = buffers_[static_cast<size_t>(id)].data();
    for (size_t r = 0; r < rows; ++r) {
      std::copy_n(src + r * strides_[static_cast<size_t>(id)], width, output_.data() + r * out_width + col);
    }
    col += width;
  }
}

}  // namespace runnel::model
