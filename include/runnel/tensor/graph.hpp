// A general ONNX graph and its executor: nodes over named values, each run by a
// kernel from the operator table (ops.hpp), in the file's (topological) order.
//
// Thread safety: a Graph is immutable once loaded and shared read-only; a Session
// belongs to one thread.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/tensor/tensor.hpp"

namespace runnel::tensor {

struct Attribute {
  enum class Kind { kFloat, kInt, kString, kTensor, kFloats, kInts, kStrings, kGraph, kOther };
  Kind kind = Kind::kOther;
  float f = 0;
  int64_t i = 0;
  std::string s;
  std::shared_ptr<const Tensor> t;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
};

struct Node;

// What a kernel prepares once at load from a node's attributes (a compiled tree
// ensemble, a label map): kept on the node, shared read-only by every run.
struct NodeState {
  virtual ~NodeState() = default;
};
// Builds a node's state. Throws Error(Model) naming the attribute at fault,
// UnsupportedError for an attribute value the kernel lacks.
using Prepare = std::shared_ptr<const NodeState> (*)(const Node& node);

// Runs `node`: inputs[i] is null for an omitted optional input; `outputs` has one
// tensor per declared output, to be set. Throws Error(Model) naming what is wrong
// with the values (shapes, types), UnsupportedError for what is not implemented.
using Kernel = void (*)(const Node& node, std::span<const Tensor* const> inputs, std::span<Tensor> outputs);

struct Node {
  std::string name;  // for messages (may be empty: then "op #index")
  std::string op;    // op_type
  std::string domain;
  int opset = 0;            // of the node's domain in the model
  std::vector<int> inputs;  // value ids; -1 for an omitted optional input
  std::vector<int> outputs;
  std::map<std::string, Attribute, std::less<>> attributes;
  Kernel kernel = nullptr;
  std::shared_ptr<const NodeState> state;  // from the kernel's Prepare, when it has one

  // The node's state as the kernel's own type (which prepared it).
  template <typename T>
  const T& State() const {
    return static_cast<const T&>(*state);
  }
  const Attribute* Find(std::string_view key) const;
  float Float(std::string_view key, float fallback) const;
  int64_t Int(std::string_view key, int64_t fallback) const;
  std::string String(std::string_view key, std::string fallback) const;
  std::vector<int64_t> IntList(std::string_view key) const;  // empty when absent
  std::vector<float> FloatList(std::string_view key) const;
  std::vector<std::string> StringList(std::string_view key) const;  // empty when absent
  // "node 'name' (Op)" for messages.
  std::string Label() const;
};

struct ValueInfo {
  std::string name;
  std::optional<DataType> type;              // declared element type, when known
  std::vector<std::optional<int64_t>> dims;  // declared dimensions (nullopt: symbolic or unknown)
  std::vector<std::string> symbols;          // per dimension: its symbolic name ("batch"), else empty
  bool has_shape = false;

  // "float [batch, 16, 32, 32]" ("?" for a dimension nothing names), "" when nothing is known.
  std::string Text() const;
};

struct Graph {
  std::string producer;                                  // "pytorch 1.12", from the file
  std::map<std::string, std::string, std::less<>> metadata;  // the file's metadata_props
  std::vector<std::string> value_names;                  // per value id
  std::vector<std::shared_ptr<const Tensor>> constants;  // per value id: initializers, else null
  std::vector<int> inputs;                               // value ids fed by the caller
  std::vector<ValueInfo> input_info;
  std::vector<int> outputs;
  std::vector<ValueInfo> output_info;
  std::vector<Node> nodes;  // in execution order
  // Per value id: its type and shape as ONNX's shape inference found them at load
  // (type unset when it found nothing, as for opsets libonnx does not know).
  std::vector<ValueInfo> inferred;

  int ValueId(const std::string& name) const;  // -1 when absent
};

// Runs a graph, keeping its intermediate values between calls.
class Session {
 public:
  // `max_bytes`: the most the values of one run may hold together (a hostile graph
  // can grow tensors from data: Expand, Tile, ConstantOfShape).
  explicit Session(std::shared_ptr<const Graph> graph, size_t max_bytes = size_t{2} << 30);

  // Runs the graph on `inputs` (one per Graph::inputs, in order). Returns the outputs
  // in order. Throws Error(Model) naming the node at fault and what was wrong, or
  // when the values outgrow max_bytes; Error(InvalidInput) for inputs of the wrong
  // number or element type.
  std::vector<Tensor> Run(std::vector<Tensor> inputs);
  // Gives a run's outputs, once read, back to the memory plan.
  void Recycle(std::vector<Tensor> outputs);

  // The most the values of the last run held at once, in bytes.
  size_t peak_bytes() const { return peak_; }

  // The memory plan: a value's buffer goes back to this pool once the last node that
  // reads it has run (a graph output's, and an input's no node reads, when the next
  // run starts), and the tensors a run makes draw on it. Make a run's inputs under a
  // ScopedBufferPool of it to draw them from it too.
  BufferPool& buffers() { return pool_; }

 private:
  // Per node (in order): the values no later node reads and no output is, released
  // once it has run.
  static std::vector<std::vector<int>> LastReaders(const Graph& g);
  void Keep(int id, Tensor value, const Node& node);
  // Value `id` out of the session (no longer set, no longer counted).
  Tensor TakeValue(int id);
  // Its buffer back to the pool.
  void Release(int id);

  std::shared_ptr<const Graph> graph_;
  size_t max_bytes_;
  size_t bytes_ = 0;            // held by values_ now
  size_t peak_ = 0;             // the most bytes_ was during the last run
  std::vector<Tensor> values_;  // per value id
  std::vector<bool> set_;
  std::vector<std::vector<int>> released_after_;  // per node: LastReaders
  BufferPool pool_;
};

}  // namespace runnel::tensor
