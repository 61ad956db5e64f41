#include "runnel/model/tensor_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

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
                                                     const std::string& source) {
  std::shared_ptr<TensorModel> model(new TensorModel(std::move(graph), source));
  model->ReadInputs();
  model->ProbeOutputs();
  return model;
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
    inputs_.push_back(std::move(port));
  }
}

// Output widths from one run: declared shapes are often symbolic past the batch.
std::vector<Tensor> TensorModel::ZeroInputs(size_t rows) const {
  std::vector<Tensor> inputs;
  for (const auto& port : inputs_) {
    tensor::Shape shape{static_cast<int64_t>(rows)};
    shape.insert(shape.end(), port.dims.begin(), port.dims.end());
    inputs.emplace_back(port.type, std::move(shape));
  }
  return inputs;
}

void TensorModel::MeasureRowBytes(tensor::Session& session) {
  session.Run(ZeroInputs(1));
  const size_t one = session.held_bytes();
  session.Run(ZeroInputs(2));
  const size_t per_row = session.held_bytes() > one ? session.held_bytes() - one : 1;
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

void TensorModel::Run(tensor::Session& session, const float* input, const std::string* texts, size_t rows,
                      float* output) const {
  std::vector<Tensor> inputs;
  size_t offset = 0, text = 0;
  for (const auto& port : inputs_) {
    tensor::Shape shape{static_cast<int64_t>(rows)};
    shape.insert(shape.end(), port.dims.begin(), port.dims.end());
    Tensor t(port.type, std::move(shape));
    if (port.type == DataType::kString) {
      auto& dst = t.strings();
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
  const auto outputs = session.Run(std::move(inputs));
  size_t col = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& t = outputs[i];
    const Port& port = outputs_[i];
    if (t.rank() == 0 || static_cast<size_t>(t.dim(0)) != rows || t.size() != rows * port.width) {
      throw Error(ErrorCode::Model, fmt::format("{}: output '{}' came out {}, not [{}, {} values]", source_, port.name,
                                                tensor::ShapeText(t.shape()), rows, port.width));
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
  size_t start = 0;
  for (const auto& port : outputs_) {
    if (column < start + port.width) return port.labels;
    start += port.width;
  }
  return {};
}

std::vector<std::string> TensorModel::Describe() const {
  std::vector<std::string> lines;
  auto shape = [](const Port& p) {
    return fmt::format("[batch{}{}]", p.dims.empty() ? "" : ", ", fmt::join(p.dims, ", "));
  };
  for (const auto& p : inputs_) {
    lines.push_back(
        fmt::format("{:<28} Input      {} {}", p.name, tensor::DataTypeName(static_cast<int>(p.type)), shape(p)));
  }
  for (const auto& node : graph_->nodes) {
    lines.push_back(fmt::format("{:<28} {}", node.name.empty() ? "-" : node.name, node.op));
  }
  for (const auto& p : outputs_) {
    lines.push_back(
        fmt::format("{:<28} Output     {} {}{}", p.name, tensor::DataTypeName(static_cast<int>(p.type)), shape(p),
                    p.labels.empty() ? "" : fmt::format(" (served as the index of: {})", fmt::join(p.labels, ", "))));
  }
  return lines;
}

}  // namespace runnel::model
