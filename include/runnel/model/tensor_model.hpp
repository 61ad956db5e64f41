// An ONNX graph past the dense fast path (convolutions, any rank, integer inputs),
// served by the general tensor runtime (include/runnel/tensor) behind the same row
// interface as every model: each input of shape [batch, d1, ...] (static d's, float,
// double or integer elements) takes the next d1*... values of a row, each string
// input of shape [batch] or [batch, 1] the next of the row's texts; each output is
// flattened, in order, into the output row (converted to float; a classifier's string
// label as its index among the classifier's labels, as for tree ensembles).
//
// Thread safety: immutable, shared read-only; Score runs on the caller's Session.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runnel/tensor/graph.hpp"

namespace runnel::model {

class TensorModel {
 public:
  // Checks the inputs' declared shapes and finds the outputs' widths with one run of
  // a zero row. Throws Error(Model) naming `source` and what cannot be served.
  static std::shared_ptr<const TensorModel> Load(std::shared_ptr<const tensor::Graph> graph, const std::string& source);

  size_t input_width() const { return input_width_; }
  size_t text_width() const { return text_width_; }  // string inputs: one text each per row
  size_t output_width() const { return output_width_; }
  const std::shared_ptr<const tensor::Graph>& graph() const { return graph_; }

  // input: rows x input_width; texts: rows x text_width; output: rows x output_width.
  // A row the graph cannot run (an index out of range, a value an integer input
  // cannot take, text that is not UTF-8) gets NaN outputs, the others their
  // predictions; never throws for the data.
  void Score(tensor::Session& session, std::span<const float> input, std::span<const std::string> texts, size_t rows,
             std::span<float> output) const;

  // The class labels a string output at output column `column` is served as the
  // index of; empty for other columns.
  std::span<const std::string> LabelsAt(size_t column) const;

  // One line per input, node and output, for `runnel model inspect`.
  std::vector<std::string> Describe() const;

 private:
  struct Port {
    std::string name;
    tensor::DataType type = tensor::DataType::kFloat;
    tensor::Shape dims;  // after the batch dimension
    size_t width = 1;    // product of dims
    std::vector<std::string> labels;  // a string output's class labels: served as the label's index
  };

  TensorModel(std::shared_ptr<const tensor::Graph> graph, std::string source)
      : graph_(std::move(graph)), source_(std::move(source)) {}
  void ReadInputs();
  void ScoreChunks(tensor::Session& session, std::span<const float> input, std::span<const std::string> texts,
                   size_t rows, std::span<float> output) const;
  void ProbeOutputs();
  // The values' bytes per row, from runs of 1 and 2 zero rows: sets chunk_rows_.
  void MeasureRowBytes(tensor::Session& session);
  std::vector<tensor::Tensor> ZeroInputs(size_t rows) const;
  // Runs `rows` rows (at most fixed_batch_ when the batch is fixed) into `output`.
  void Run(tensor::Session& session, const float* input, const std::string* texts, size_t rows, float* output) const;

  std::shared_ptr<const tensor::Graph> graph_;
  std::string source_;
  std::vector<Port> inputs_, outputs_;
  size_t input_width_ = 0, text_width_ = 0, output_width_ = 0;
  size_t fixed_batch_ = 0;  // the inputs' batch dimension when the file fixes it, else 0
  // Rows per run when the batch is free: as many as keep one run's values near
  // kRunBytes (a TF-IDF row is 20 KB wide three times over: a batch of 1,024 would
  // stream 60 MB through memory; runs of a few dozen rows stay in cache).
  size_t chunk_rows_ = SIZE_MAX;
  static constexpr size_t kRunBytes = size_t{2} << 20;
};

}  // namespace runnel::model
