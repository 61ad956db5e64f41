// An ONNX graph past the dense fast path (convolutions, any rank, integer inputs),
// served by the general tensor runtime (include/runnel/tensor) behind the same row
// interface as every model: each input of shape [batch, d1, ...] (static d's, float,
// double or integer elements) takes the next d1*... values of a row, each string
// input of shape [batch] or [batch, 1] the next of the row's texts; each output is
// flattened, in order, into the output row (converted to float; a classifier's string
// label as its index among the classifier's labels, as for tree ensembles).
//
// A transformer's token inputs — integer [batch, seq] inputs named input_ids,
// attention_mask, token_type_ids, position_ids — take one text per row together when
// the model is loaded with a tokenizer: the text's ids (TokenInputs), padded with the
// tokenizer's pad id to the chunk's longest (or to a fixed seq), the mask 1 over the
// tokens, types 0, positions 0, 1, ...
//
// Thread safety: immutable, shared read-only; Score runs on the caller's Session.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runnel/tensor/graph.hpp"
#include "runnel/text/tokenizer.hpp"

namespace runnel::model {

// The tokenizer a transformer's token inputs take their ids from, and the most tokens
// a text keeps (0: the tokenizer file's truncation, else kDefaultMaxTokens; a fixed
// sequence dimension caps it too).
struct TokenInputs {
  std::shared_ptr<const text::Tokenizer> tokenizer;
  size_t max_tokens = 0;
  static constexpr size_t kDefaultMaxTokens = 512;
};

// A model input or output by name: how many values of a row it takes or gives.
struct ModelPort {
  std::string name;
  size_t width = 0;
};

// What a model needs besides its file.
struct LoadOptions {
  TokenInputs tokens;
  // A classifier whose one output is logits [batch, classes]: its classes' names. The
  // row is then served as the label (the index of the largest logit) followed by each
  // class's softmax probability. When empty, an ONNX model's own `id2label` metadata
  // (JSON, as onnx.helper.set_model_props writes it) names them, if it fits the output.
  std::vector<std::string> logit_labels;

  // Whether only the general runtime can serve the model so loaded.
  bool NeedsGeneralRuntime() const { return tokens.tokenizer != nullptr || !logit_labels.empty(); }
};

class TensorModel {
 public:
  // Checks the inputs' declared shapes and finds the outputs' widths with one run of
  // a zero row. Throws Error(Model) naming `source` and what cannot be served (token
  // inputs without a tokenizer, a tokenizer without token inputs).
  static std::shared_ptr<const TensorModel> Load(std::shared_ptr<const tensor::Graph> graph, const std::string& source,
                                                 LoadOptions options = {});

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

  // The inputs that take values (not texts, not token ids), in the order input_width
  // concatenates them; the outputs, in the order output_width does.
  std::vector<ModelPort> ValuePorts() const;
  std::vector<ModelPort> OutputPorts() const;

  // The class labels a string output at output column `column` is served as the
  // index of; empty for other columns.
  std::span<const std::string> LabelsAt(size_t column) const;

  // One line per input, node and output, for `runnel model inspect`.
  std::vector<std::string> Describe() const;

 private:
  // What a port takes from a row.
  enum class Feed { kValues, kText, kTokenIds, kTokenMask, kTokenTypes, kTokenPositions };
  struct Port {
    std::string name;
    Feed feed = Feed::kValues;
    tensor::DataType type = tensor::DataType::kFloat;
    tensor::Shape dims;  // after the batch dimension
    size_t width = 1;    // product of dims
    std::vector<std::string> labels;  // a string output's class labels: served as the label's index
  };

  TensorModel(std::shared_ptr<const tensor::Graph> graph, std::string source)
      : graph_(std::move(graph)), source_(std::move(source)) {}
  void ReadInputs();
  // A token input ([batch, seq] integers named as a transformer's) when the model has
  // a tokenizer: its feed, else kValues.
  Feed TokenFeed(const tensor::ValueInfo& info);
  // The rows' token ids, each cut to the model's length; sets the run's sequence length.
  std::vector<std::vector<int64_t>> Tokenize(const std::string* texts, size_t rows, size_t& seq) const;
  size_t MaxTokens() const;
  tensor::Tensor TokenTensor(const Port& port, const std::vector<std::vector<int64_t>>& ids, size_t seq) const;
  void ScoreChunks(tensor::Session& session, std::span<const float> input, std::span<const std::string> texts,
                   size_t rows, std::span<float> output) const;
  void ProbeOutputs();
  // With logit_labels_: the one output's port becomes label + probabilities.
  void CheckLogits();
  // The labels of the graph's id2label metadata when its one output is a row of as
  // many float logits; none otherwise. Throws Error(Model) for a malformed entry.
  std::vector<std::string> MetadataLabels() const;
  void ReadOutputs(const std::vector<tensor::Tensor>& outputs, size_t rows, float* output) const;
  // The values' peak bytes per row, from runs of 1 and 2 zero rows: sets chunk_rows_.
  void MeasureRowBytes(tensor::Session& session);
  std::vector<tensor::Tensor> ZeroInputs(size_t rows) const;
  // Runs `rows` rows (at most fixed_batch_ when the batch is fixed) into `output`.
  void Run(tensor::Session& session, const float* input, const std::string* texts, size_t rows, float* output) const;

  std::shared_ptr<const tensor::Graph> graph_;
  std::string source_;
  std::vector<Port> inputs_, outputs_;
  size_t input_width_ = 0, text_width_ = 0, output_width_ = 0;
  size_t fixed_batch_ = 0;  // the inputs' batch dimension when the file fixes it, else 0
  TokenInputs tokens_;
  std::vector<std::string> logit_labels_;  // served as label + softmax when not empty
  size_t token_text_ = SIZE_MAX;           // the row text the token inputs take (SIZE_MAX: none)
  size_t fixed_seq_ = 0;                   // the token inputs' sequence dimension when fixed, else 0
  // Rows per run when the batch is free: as many as keep one run's values near
  // kRunBytes (a TF-IDF row is 20 KB wide three times over: a batch of 1,024 would
  // stream 60 MB through memory; runs of a few dozen rows stay in cache).
  size_t chunk_rows_ = SIZE_MAX;
  static constexpr size_t kRunBytes = size_t{2} << 20;
};

}  // namespace runnel::model
