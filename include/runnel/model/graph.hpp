// Runnel's model IR: what every loader (Keras HDF5, Keras v3, ONNX) produces and the
// executor runs. Tabular models only: every value is a 2-D [batch, width] float32
// matrix; higher-rank inputs are flattened row-major (Keras Flatten, ONNX Reshape to
// [-1, n] are then identities).
//
// Thread safety: a Graph is immutable once Validate() passed; share it read-only.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace runnel::model {

enum class Activation {
  Linear,
  Relu,
  Sigmoid,
  Tanh,
  Softmax,  // over the row
  Elu,      // alpha
  Selu,
  Gelu,  // exact (erf)
  GeluTanh,
  Swish,  // x * sigmoid(x), also called silu
  Softplus,
  LeakyRelu,    // alpha: slope for x < 0
  HardSigmoid,  // clip(alpha * x + beta, 0, 1)
  Exponential,
  Clip,  // clip(x, alpha, beta)
};

struct ActivationSpec {
  Activation kind = Activation::Linear;
  float alpha = 0.0f;
  float beta = 0.0f;
};

const char* ActivationName(Activation kind);

enum class OpKind {
  Dense,     // y = act(x · W + b); W is [in, out]
  Binary,    // y = a (op) b; b a value or a constant row (width or 1 wide)
  Affine,    // y = x * scale + shift, per column (BatchNorm, Normalization)
  Activate,  // y = act(x)
  Concat,    // y = [x0 x1 ...] along the columns
  Identity,  // y = x
};

enum class BinaryOp { Add, Sub, Mul, Div };

struct Node {
  OpKind kind = OpKind::Identity;
  std::string name;         // the layer or node name from the file, for messages
  std::vector<int> inputs;  // value ids
  int output = -1;          // value id
  ActivationSpec activation;

  // Dense
  size_t in_width = 0;
  size_t out_width = 0;
  std::vector<float> weights;  // [in_width, out_width] row-major
  std::vector<float> bias;     // out_width, or empty

  // Binary
  BinaryOp binary = BinaryOp::Add;
  std::vector<float> constant;  // when inputs has one entry: width or 1 values
  bool constant_first = false;  // constant (op) x instead of x (op) constant

  // Affine
  std::vector<float> scale;
  std::vector<float> shift;
};

struct Graph {
  std::vector<int> inputs;           // value ids of the model inputs, in order
  std::vector<int> outputs;          // value ids of the model outputs, in order
  std::vector<size_t> value_widths;  // per value id
  std::vector<std::string> value_names;
  std::vector<Node> nodes;  // in execution (topological) order

  int AddValue(std::string name, size_t width);
  size_t InputWidth() const;   // sum over inputs
  size_t OutputWidth() const;  // sum over outputs
  size_t ParameterCount() const;
  size_t MultiplyAdds() const;  // per row

  // Checks ids, widths and parameter sizes, and that nodes come in dependency order.
  // Throws Error(Model) prefixed with `context` (usually the file name).
  void Validate(const std::string& context) const;

  // Folds ONNX-style MatMul → Add(bias) → activation chains into one Dense node.
  void FuseDenseChains();
};

}  // namespace runnel::model
