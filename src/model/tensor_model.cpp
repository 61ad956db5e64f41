#include "runnel/model/tensor_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runnel/model/class_labels.hpp"

namespace runnel::model {

using tensor::DataType;
using tensor::Tensor;

namespace {

bool IsServableInput(DataType type) {
  return type == DataType::kFloat || type == DataType::kDouble || type == DataType::kInt64 ||
         type == DataType::kInt32 || type == DataType::kString;
}

// A row value as an input element: integers are rounded toward zero, and must fit.
template <typename T>
T FromFloat(float v, const std::string& input) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    if (!std::isfinite(v) || std::abs(v) >= 9.2e18f || (sizeof(T) == 4 && (v >= 2147483648.0f || v < -2147483648.0f))) {
      throw Error(ErrorCode::InvalidInput, fmt::format("input '{}' takes integers: {} is not one", input, v));
    }
    return static_cast<T>(v);
  }
}

// The class labels (classlabels_strings) of the classifier node that computes value
// `id`, or none.
std::vector<std::string> ClassLabels(const tensor::Graph& graph, int id) {
  for (const auto& node : graph.nodes) {
    if (std::find(node.outputs.begin(), node.outputs.end(), id) == node.outputs.end()) continue;
    return node.StringList("classlabels_strings");
  }
  return {};
}

// Element `i` of an output as a row value: a string label as its index among the
// labels (NaN, so the row fails, for any other string).
float OutputValue(const Tensor& t, size_t i, const std::vector<std::string>& labels) {
  if (t.type() != DataType::kString) return static_cast<float>(tensor::ValueAt(t, i));
  const auto it = std::find(labels.begin(), labels.end(), t.strings().at(i));
  return it == labels.end() ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(it - labels.begin());
}

}  // namespace

std::shared_ptr<const TensorModel> TensorModel::Load(std::shared_ptr<const tensor::Graph> graph,
                                                     const std::string& source, LoadOptions options) {
  std::shared_ptr<TensorModel> model(new TensorModel(std::move(graph), source));
  model->tokens_ = std::move(options.tokens);
  model->logit_labels_ = std::move(options.logit_labels);
  model->ReadInputs();
  model->ProbeOutputs();
  if (model->logit_labels_.empty()) model->logit_labels_ = model->MetadataLabels();
  model->CheckLogits();
  return model;
}

std::vector<std::string> TensorModel::MetadataLabels() const {
  const auto it = graph_->metadata.find(kId2LabelMetadata);
  if (it == graph_->metadata.end()) return {};
  std::vector<std::string> labels;
  try {
    labels = ParseId2Label(it->second, fmt::format("{}: metadata '{}'", source_, kId2LabelMetadata));
  } catch (const Error& e) {
    throw Error(ErrorCode::Model, e.what());
  }
  // Labels for outputs that are not one row of logits (a classifier's own label and
  // probabilities) describe them; they are served as they are.
  const bool logits =
      outputs_.size() == 1 && outputs_[0].type == DataType::kFloat && outputs_[0].width == labels.size();
  return logits ? labels : std::vector<std::string>{};
}

std::vector<ModelPort> TensorModel::ValuePorts() const {
  std::vector<ModelPort> ports;
  for (const auto& port : inputs_) {
    if (port.feed == Feed::kValues) ports.push_back({port.name, port.width});
  }
  return ports;
}

std::vector<ModelPort> TensorModel::OutputPorts() const {
  // Logits served as label + probabilities (CheckLogits): two ports.
  if (!logit_labels_.empty()) return {{"label", 1}, {outputs_[0].name, logit_labels_.size()}};
  std::vector<ModelPort> ports;
  for (const auto& port : outputs_) ports.push_back({port.name, port.width});
  return ports;
}

void TensorModel::ReadInputs() {
  if (graph_->inputs.empty()) throw Error(ErrorCode::Model, fmt::format("{}: the graph has no input", source_));
  for (const auto& info : graph_->input_info) {
    Port port;
    port.name = info.name;
    if (!info.type || !IsServableInput(*info.type)) {
      throw Error(
          ErrorCode::Model,
          fmt::format("{}: input '{}' has element type {}: a pipeline feeds float, double, integer or string inputs",
                      source_, info.name, info.type ? tensor::DataTypeName(static_cast<int>(*info.type)) : "?"));
    }
    port.type = *info.type;
    if (!info.has_shape || info.dims.empty()) {
      throw Error(ErrorCode::Model, fmt::format("{}: input '{}' declares no [batch, ...] shape", source_, info.name));
    }
    if (info.dims[0]) {
      const auto batch = static_cast<size_t>(*info.dims[0]);
      if (batch == 0 || (fixed_batch_ != 0 && batch != fixed_batch_)) {
        throw Error(ErrorCode::Model,
                    fmt::format("{}: input '{}' has a batch dimension of {}", source_, info.name, batch));
      }
      fixed_batch_ = batch;
    }
    port.feed = TokenFeed(info);
    if (port.feed != Feed::kValues) {
      if (token_text_ == SIZE_MAX) token_text_ = text_width_++;
      inputs_.push_back(std::move(port));
      continue;
    }
    for (size_t d = 1; d < info.dims.size(); ++d) {
      if (!info.dims[d] || *info.dims[d] <= 0) {
        throw Error(ErrorCode::Model, fmt::format("{}: input '{}' has a dimension {} that is not fixed: a row has a "
                                                  "fixed width",
                                                  source_, info.name, d));
      }
      port.dims.push_back(*info.dims[d]);
    }
    tensor::Shape row = port.dims;
    port.width = tensor::ElementCount(row);
    if (port.type == DataType::kString) {
      if (port.width != 1)
        throw Error(ErrorCode::Model, fmt::format("{}: string input '{}' has shape [batch, {}]: a row feeds one text "
                                                  "per string input ([batch] or [batch, 1])",
                                                  source_, info.name, fmt::join(port.dims, ", ")));
      ++text_width_;
    } else {
      input_width_ += port.width;
    }
    port.feed = port.type == DataType::kString ? Feed::kText : Feed::kValues;
    inputs_.push_back(std::move(port));
  }
  if (tokens_.tokenizer && token_text_ == SIZE_MAX) {
    throw Error(ErrorCode::Model, fmt::format("{}: a tokenizer is given, but the model has no token input (input_ids "
                                              "of shape [batch, seq])",
                                              source_));
  }
}

TensorModel::Feed TensorModel::TokenFeed(const tensor::ValueInfo& info) {
  static const std::pair<const char*, Feed> kNames[] = {{"input_ids", Feed::kTokenIds},
                                                        {"attention_mask", Feed::kTokenMask},
                                                        {"token_type_ids", Feed::kTokenTypes},
                                                        {"position_ids", Feed::kTokenPositions}};
  Feed feed = Feed::kValues;
  for (const auto& [name, f] : kNames) {
    if (info.name == name) feed = f;
  }
  const bool integer = info.type && (*info.type == DataType::kInt64 || *info.type == DataType::kInt32);
  if (feed == Feed::kValues || !integer || info.dims.size() != 2) return Feed::kValues;
  if (!tokens_.tokenizer) {
    throw Error(ErrorCode::Model, fmt::format("{}: input '{}' takes token ids: give the model its tokenizer "
                                              "([model] tokenizer = \"tokenizer.json\", or --tokenizer)",
                                              source_, info.name));
  }
  const size_t seq = info.dims[1] && *info.dims[1] > 0 ? static_cast<size_t>(*info.dims[1]) : 0;
  if (fixed_seq_ != 0 && seq != 0 && seq != fixed_seq_) {
    throw Error(ErrorCode::Model, fmt::format("{}: token input '{}' has a sequence of {}, another one {}", source_,
                                              info.name, seq, fixed_seq_));
  }
  if (seq != 0) fixed_seq_ = seq;
  return feed;
}

// Output widths from one run: declared shapes are often symbolic past the batch.
std::vector<Tensor> TensorModel::ZeroInputs(size_t rows) const {
  std::vector<Tensor> inputs;
  // Token inputs: rows of pad ids, all attended, at most 64 long (typical texts; a
  // longer run's chunk holds more bytes than measured, bounded by the rows it has).
  const size_t seq = std::min<size_t>(MaxTokens(), 64);
  std::vector<std::vector<int64_t>> pads;
  if (token_text_ != SIZE_MAX) pads.assign(rows, std::vector<int64_t>(seq, tokens_.tokenizer->pad_id()));
  for (const auto& port : inputs_) {
    if (port.feed != Feed::kValues && port.feed != Feed::kText) {
      inputs.push_back(TokenTensor(port, pads, seq));
      continue;
    }
    tensor::Shape shape{static_cast<int64_t>(rows)};
    shape.insert(shape.end(), port.dims.begin(), port.dims.end());
    inputs.emplace_back(port.type, std::move(shape));
  }
  return inputs;
}

void TensorModel::MeasureRowBytes(tensor::Session& session) {
  session.Run(ZeroInputs(1));
  const size_t one = session.peak_bytes();
  session.Run(ZeroInputs(2));
  const size_t per_row = session.peak_bytes() > one ? session.peak_bytes() - one : 1;
  chunk_rows_ = std::max<size_t>(8, kRunBytes / per_row);
}

void TensorModel::ProbeOutputs() {
  tensor::Session session(graph_);
  const size_t rows = fixed_batch_ != 0 ? fixed_batch_ : 1;
  std::vector<Tensor> outputs;
  try {
    if (fixed_batch_ == 0) MeasureRowBytes(session);
    outputs = session.Run(ZeroInputs(rows));
  } catch (const Error& e) {
    throw Error(ErrorCode::Model, fmt::format("{}: a run on a zero row fails: {}", source_, e.what()));
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& t = outputs[i];
    Port port;
    port.name = graph_->value_names[static_cast<size_t>(graph_->outputs[i])];
    port.type = t.type();
    if (t.type() == DataType::kString) {
      port.labels = ClassLabels(*graph_, graph_->outputs[i]);
      if (port.labels.empty())
        throw Error(ErrorCode::Model, fmt::format("{}: output '{}' holds strings that are not a classifier's labels, "
                                                  "not yet served",
                                                  source_, port.name));
    }
    if (t.rank() == 0 || static_cast<size_t>(t.dim(0)) != rows) {
      throw Error(ErrorCode::Model, fmt::format("{}: output '{}' has shape {}: expected [batch, ...]", source_,
                                                port.name, tensor::ShapeText(t.shape())));
    }
    port.dims.assign(t.shape().begin() + 1, t.shape().end());
    port.width = t.size() / rows;
    output_width_ += port.width;
    outputs_.push_back(std::move(port));
  }
}

// A batch whose run fails over its data (an index out of range, a value an integer
// input cannot take) is run again row by row (fixed batch by fixed batch when the
// file fixes it), so that only the rows at fault get no prediction (NaN: the worker
// records them failed).
void TensorModel::Score(tensor::Session& session, std::span<const float> input, std::span<const std::string> texts,
                        size_t rows, std::span<float> output) const {
  if (input.size() != rows * input_width_ || texts.size() != rows * text_width_)
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{}: expected {} rows of {} values and {} texts, got {} and {}", source_, rows,
                            input_width_, text_width_, input.size(), texts.size()));
  try {
    ScoreChunks(session, input, texts, rows, output);
  } catch (const Error&) {
    // Again in the smallest runs the file allows: one row, or one fixed batch.
    const size_t unit = fixed_batch_ != 0 ? fixed_batch_ : 1;
    for (size_t r = 0; r < rows; r += unit) {
      const size_t n = std::min(unit, rows - r);
      auto out = output.subspan(r * output_width_, n * output_width_);
      try {
        ScoreChunks(session, input.subspan(r * input_width_, n * input_width_),
                    texts.subspan(r * text_width_, n * text_width_), n, out);
      } catch (const Error&) {
        std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
      }
    }
  }
}

void TensorModel::ScoreChunks(tensor::Session& session, std::span<const float> input,
                              std::span<const std::string> texts, size_t rows, std::span<float> output) const {
  const size_t step = fixed_batch_ != 0 ? fixed_batch_ : std::clamp<size_t>(rows, 1, chunk_rows_);
  std::vector<float> padded_in, padded_out;
  std::vector<std::string> padded_texts;
  for (size_t r = 0; r < rows; r += step) {
    const size_t n = std::min(step, rows - r);
    if (fixed_batch_ != 0 && n < fixed_batch_) {  // the last, short chunk of a fixed batch: zero rows after it
      padded_in.assign(fixed_batch_ * input_width_, 0.0f);
      std::copy_n(input.data() + r * input_width_, n * input_width_, padded_in.data());
      padded_texts.assign(fixed_batch_ * text_width_, std::string());
      std::copy_n(texts.data() + r * text_width_, n * text_width_, padded_texts.data());
      padded_out.assign(fixed_batch_ * output_width_, 0.0f);
      Run(session, padded_in.data(), padded_texts.data(), fixed_batch_, padded_out.data());
      std::copy_n(padded_out.data(), n * output_width_, output.data() + r * output_width_);
    } else {
      Run(session, input.data() + r * input_width_, texts.data() + r * text_width_, n,
          output.data() + r * output_width_);
    }
  }
}

size_t TensorModel::MaxTokens() const {
  size_t n = tokens_.max_tokens;
  if (n == 0 && tokens_.tokenizer) n = tokens_.tokenizer->max_length();
  if (n == 0) n = TokenInputs::kDefaultMaxTokens;
  return fixed_seq_ != 0 ? std::min(n, fixed_seq_) : n;
}

std::vector<std::vector<int64_t>> TensorModel::Tokenize(const std::string* texts, size_t rows, size_t& seq) const {
  std::vector<std::vector<int64_t>> ids(rows);
  const size_t max_tokens = MaxTokens();
  seq = fixed_seq_;
  for (size_t r = 0; r < rows; ++r) {
    ids[r] = tokens_.tokenizer->Encode(texts[r * text_width_ + token_text_], max_tokens);
    if (fixed_seq_ == 0) seq = std::max(seq, ids[r].size());
  }
  seq = std::max<size_t>(seq, 1);
  return ids;
}

Tensor TensorModel::TokenTensor(const Port& port, const std::vector<std::vector<int64_t>>& ids, size_t seq) const {
  const size_t rows = ids.size();
  Tensor t(port.type, tensor::Shape{static_cast<int64_t>(rows), static_cast<int64_t>(seq)});
  const int64_t pad = tokens_.tokenizer->pad_id();
  tensor::VisitNumeric(port.type, [&](auto zero) {
    using T = decltype(zero);
    auto dst = t.data<T>();
    for (size_t r = 0; r < rows; ++r) {
      for (size_t i = 0; i < seq; ++i) {
        const bool token = i < ids[r].size();
        int64_t v = 0;
        switch (port.feed) {
          case Feed::kTokenIds: v = token ? ids[r][i] : pad; break;
          case Feed::kTokenMask: v = token ? 1 : 0; break;
          case Feed::kTokenPositions: v = static_cast<int64_t>(i); break;
          case Feed::kTokenTypes:
          case Feed::kValues:
          case Feed::kText: break;
        }
        dst[r * seq + i] = static_cast<T>(v);
      }
    }
  });
  return t;
}

void TensorModel::Run(tensor::Session& session, const float* input, const std::string* texts, size_t rows,
                      float* output) const {
  std::vector<Tensor> inputs;
  const tensor::ScopedBufferPool pool(&session.buffers());  // the inputs are the plan's too
  size_t offset = 0, text = 0;
  size_t seq = 0;
  const auto ids = token_text_ == SIZE_MAX ? std::vector<std::vector<int64_t>>() : Tokenize(texts, rows, seq);
  for (const auto& port : inputs_) {
    if (port.feed != Feed::kValues && port.feed != Feed::kText) {
      inputs.push_back(TokenTensor(port, ids, seq));
      continue;
    }
    tensor::Shape shape{static_cast<int64_t>(rows)};
    shape.insert(shape.end(), port.dims.begin(), port.dims.end());
    // Every element is written below.
    Tensor t = port.type == DataType::kString ? Tensor(port.type, std::move(shape))
                                              : Tensor::Uninitialized(port.type, std::move(shape));
    if (port.type == DataType::kString) {
      auto& dst = t.strings();
      if (text == token_text_) ++text;
      for (size_t r = 0; r < rows; ++r) dst[r] = texts[r * text_width_ + text];
      ++text;
      inputs.push_back(std::move(t));
      continue;
    }
    tensor::VisitNumeric(port.type, [&](auto zero) {
      using T = decltype(zero);
      auto dst = t.data<T>();
      for (size_t r = 0; r < rows; ++r) {
        for (size_t c = 0; c < port.width; ++c) {
          dst[r * port.width + c] = FromFloat<T>(input[r * input_width_ + offset + c], port.name);
        }
      }
    });
    offset += port.width;
    inputs.push_back(std::move(t));
  }
  auto outputs = session.Run(std::move(inputs));
  ReadOutputs(outputs, rows, output);
  session.Recycle(std::move(outputs));
}

void TensorModel::CheckLogits() {
  if (logit_labels_.empty()) return;
  if (outputs_.size() != 1 || outputs_[0].type != DataType::kFloat || outputs_[0].width != logit_labels_.size()) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: {} class labels are given, so the model must have one float output of [batch, {}] "
                            "logits; it has {}",
                            source_, logit_labels_.size(), logit_labels_.size(),
                            outputs_.size() == 1 ? fmt::format("[batch, {}]", outputs_[0].width)
                                                 : fmt::format("{} outputs", outputs_.size())));
  }
  output_width_ = logit_labels_.size() + 1;
}

namespace {

// [label, p_1..p_k] from logits: the largest's index (the first on ties), softmax.
void LabelAndSoftmax(const float* logits, size_t k, float* out) {
  size_t best = 0;
  for (size_t c = 1; c < k; ++c) {
    if (logits[c] > logits[best]) best = c;
  }
  const float top = logits[best];
  double sum = 0;
  for (size_t c = 0; c < k; ++c) sum += std::exp(static_cast<double>(logits[c] - top));
  out[0] = std::isfinite(top) ? static_cast<float>(best) : std::numeric_limits<float>::quiet_NaN();
  for (size_t c = 0; c < k; ++c) out[1 + c] = static_cast<float>(std::exp(static_cast<double>(logits[c] - top)) / sum);
}

}  // namespace

void TensorModel::ReadOutputs(const std::vector<Tensor>& outputs, size_t rows, float* output) const {
  size_t col = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& t = outputs[i];
    const Port& port = outputs_[i];
    if (t.rank() == 0 || static_cast<size_t>(t.dim(0)) != rows || t.size() != rows * port.width) {
      throw Error(ErrorCode::Model, fmt::format("{}: output '{}' came out {}, not [{}, {} values]", source_, port.name,
                                                tensor::ShapeText(t.shape()), rows, port.width));
    }
    if (!logit_labels_.empty()) {
      for (size_t r = 0; r < rows; ++r)
        LabelAndSoftmax(t.data<float>().data() + r * port.width, port.width, output + r * output_width_);
      return;
    }
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c = 0; c < port.width; ++c) {
        output[r * output_width_ + col + c] = OutputValue(t, r * port.width + c, port.labels);
      }
    }
    col += port.width;
  }
}

std::span<const std::string> TensorModel::LabelsAt(size_t column) const {
  if (!logit_labels_.empty())
    return column == 0 ? std::span<const std::string>(logit_labels_) : std::span<const std::string>();
  size_t start = 0;
  for (const auto& port : outputs_) {
    if (column < start + port.width) return port.labels;
    start += port.width;
  }
  return {};
}

namespace {

// "conv1   Conv   -> float [N, 16, 32, 32]": a node and the shapes ONNX's inference
// found for its outputs, where it found them.
std::string DescribeNode(const tensor::Graph& graph, const tensor::Node& node) {
  std::vector<std::string> shapes;
  for (int id : node.outputs) {
    const size_t i = static_cast<size_t>(id);
    if (id >= 0 && i < graph.inferred.size() && graph.inferred[i].type) shapes.push_back(graph.inferred[i].Text());
  }
  std::string line = fmt::format("{:<28} {}", node.name.empty() ? "-" : node.name, node.op);
  if (shapes.empty()) return line;
  return fmt::format("{:<39} -> {}", line, fmt::join(shapes, ", "));
}

}  // namespace

std::vector<std::string> TensorModel::Describe() const {
  std::vector<std::string> lines;
  auto shape = [](const Port& p) {
    return fmt::format("[batch{}{}]", p.dims.empty() ? "" : ", ", fmt::join(p.dims, ", "));
  };
  for (const auto& p : inputs_) {
    const bool token = p.feed != Feed::kValues && p.feed != Feed::kText;
    lines.push_back(fmt::format("{:<28} Input      {} {}", p.name, tensor::DataTypeName(static_cast<int>(p.type)),
                                token ? fmt::format("[batch, {}] from the tokenizer, at most {} tokens",
                                                    fixed_seq_ ? std::to_string(fixed_seq_) : "seq", MaxTokens())
                                      : shape(p)));
  }
  for (const auto& node : graph_->nodes) lines.push_back(DescribeNode(*graph_, node));
  for (const auto& p : outputs_) {
    lines.push_back(
        fmt::format("{:<28} Output     {} {}{}{}", p.name, tensor::DataTypeName(static_cast<int>(p.type)), shape(p),
                    p.labels.empty() ? "" : fmt::format(" (served as the index of: {})", fmt::join(p.labels, ", ")),
                    logit_labels_.empty() ? ""
                                          : fmt::format(" (logits: served as the label, then a probability each: {})",
                                                        fmt::join(logit_labels_, ", "))));
  }
  return lines;
}

}  // namespace runnel::model
