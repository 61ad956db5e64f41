// What the operator families share: the table they fill, axes, broadcasting.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "runnel/tensor/graph.hpp"

namespace runnel::tensor {

struct KernelEntry {
  std::string_view op;
  int since = 1;  // the first opset whose semantics the kernel implements
  Kernel kernel;
  std::string_view domain = "";
  Prepare prepare = nullptr;  // run once at load, when the kernel needs a state
};

// One function per family file, each adding its operators.
void AddElementwiseKernels(std::vector<KernelEntry>& table);  // ops_elementwise.cpp
void AddShapeKernels(std::vector<KernelEntry>& table);        // ops_shape.cpp
void AddReduceKernels(std::vector<KernelEntry>& table);       // ops_reduce.cpp
void AddMatrixKernels(std::vector<KernelEntry>& table);       // ops_matrix.cpp
void AddConvKernels(std::vector<KernelEntry>& table);         // ops_conv.cpp
void AddIndexKernels(std::vector<KernelEntry>& table);        // ops_index.cpp
void AddMlKernels(std::vector<KernelEntry>& table);           // ops_ml.cpp (ai.onnx.ml)
void AddTextKernels(std::vector<KernelEntry>& table);         // ops_text.cpp
void AddTreeKernels(std::vector<KernelEntry>& table);         // ops_trees.cpp (ai.onnx.ml)

// Replaces each TfIdfVectorizer -> Normalizer -> LinearClassifier chain whose inner
// values nothing else reads (nor the caller) by one node that touches a row's n-grams
// only, answering bit for bit as the three do (ops_text.cpp). Run once at load.
void FuseSparseText(Graph& graph);

// Replaces each float MatMul whose right operand is a constant matrix by one that multiplies by it packed once, here,
// for the micro-kernel; when the product's one reader is an Add of a constant [n] vector (a linear layer's bias), the
// bias goes into the packed matrix and the Add away. Constants nothing reads any more are released. Run once at load
// (ops_matrix.cpp).
void PackConstantMatMuls(Graph& graph);

// Replaces each erf GELU written out as five nodes (Div by √2, Erf, Add 1, Mul by x,
// Mul by ½, as PyTorch and Hugging Face export it) whose inner values nothing else
// reads by one node computing the same float operations in one pass
// (ops_elementwise.cpp). Run once at load.
void FuseErfGelu(Graph& graph);

// Replaces each Conv whose one reader is a Relu by one node applying the Relu as it
// writes the output (ops_conv.cpp). Run once at load.
void FuseConvRelu(Graph& graph);

// Gives each float 3x3 Conv (or Conv+Relu) with stride 1, pads 1, one group, at least
// 16 input channels and constant weights to oneDNN, where it is faster than ours with
// the layout conversions counted (onednn_conv.cpp; docs/performance.md). Its op becomes
// "Conv/oneDNN". Run once at load, after FuseConvRelu.
void UseOneDnnConvs(Graph& graph);

// Float Conv over one or two spatial axes on our kernels, then with `relu` its Relu
// (FuseConvRelu); other types and shapes go to ConvReference (ops_conv.cpp).
void ConvFloat(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out, bool relu);

// The node that reads value `id`, when exactly one node does (once) and it is not a
// graph output; -1 otherwise.
int SoleReader(const Graph& g, int id);
// Whether no node reads value `id` and it is not a graph output.
bool Unread(const Graph& g, int id);

// The plain reference kernels that optimized ones are tested against
// (tests/tensor/tensor_test.cpp) and fall back to for types they do not take.
void MatMulReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out);
void GemmReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out);
void ConvReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out);
void MaxPoolReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out);
void AveragePoolReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out);
void BatchNormalizationReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out);
void LayerNormalizationReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out);

struct PackedMatrix;
// z[rows, w.out] = x[rows, w.in] · W on the packed micro-kernel; `scratch` holds the
// padded product when w.out is not a multiple of the pack width.
void MultiplyInto(const float* x, size_t rows, const PackedMatrix& w, float* z, std::vector<float>& scratch);

// `axis` in [-rank, rank) as [0, rank). Throws Error(Model).
size_t NormalizeAxis(int64_t axis, size_t rank);

// The NumPy broadcast of two shapes. Throws Error(Model) naming both.
Shape BroadcastShapes(const Shape& a, const Shape& b);

// Strides of `shape` read as if broadcast to `out` (0 along broadcast axes), one per
// axis of `out`.
std::vector<size_t> BroadcastStrides(const Shape& shape, const Shape& out);

// Calls f(out_index, in_index...) for every element of `out`, in order, with the flat
// index into each input of `strides` (BroadcastStrides of each input).
template <typename F>
void ForEachBroadcast(const Shape& out, const std::vector<std::vector<size_t>>& strides, F&& f) {
  const size_t rank = out.size();
  const size_t count = ElementCount(out);
  std::vector<int64_t> index(rank, 0);
  std::vector<size_t> at(strides.size(), 0);
  for (size_t n = 0; n < count; ++n) {
    f(n, at);
    for (size_t axis = rank; axis-- > 0;) {
      if (++index[axis] < out[axis]) {
        for (size_t k = 0; k < strides.size(); ++k) at[k] += strides[k][axis];
        break;
      }
      for (size_t k = 0; k < strides.size(); ++k) at[k] -= strides[k][axis] * static_cast<size_t>(out[axis] - 1);
      index[axis] = 0;
    }
  }
}

// A broadcast split into an outer index walk and inner runs: along the last `inner`
// output elements each input advances by one element (step) or stays (a broadcast).
struct InnerRuns {
  Shape outer;                                     // the output's leading axes
  std::vector<std::vector<size_t>> outer_strides;  // per input, over `outer`
  size_t inner = 1;
  std::vector<bool> step;  // per input
};

// The longest inner runs of a broadcast of inputs with `strides` (BroadcastStrides of
// each) to `out`.
InnerRuns SplitInnerRuns(const Shape& out, const std::vector<std::vector<size_t>>& strides);

// A double as element type T, as a C cast would convert it but without undefined
// behaviour: NaN and values out of T's range become 0 for integers (ONNX leaves them
// undefined); bool is v != 0.
template <typename T>
T FromDouble(double v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v != 0;
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    if (!std::isfinite(v) || v < static_cast<double>(std::numeric_limits<T>::min()) ||
        v >= static_cast<double>(std::numeric_limits<T>::max())) {
      return T(0);
    }
    return static_cast<T>(v);
  }
}

// Advances a row-major multi-index over `shape` (the last axis fastest), wrapping to
// all zeros after the last position.
template <typename Index, typename Dims>
void NextIndex(std::vector<Index>& index, const Dims& shape) {
  for (size_t i = index.size(); i-- > 0;) {
    if (++index[i] < static_cast<Index>(shape[i])) return;
    index[i] = 0;
  }
}

// Row-major strides of `shape`.
std::vector<size_t> Strides(const Shape& shape);

// Copies element `from` of `src` to element `to` of `dst` (same type; any type).
void CopyElement(const Tensor& src, size_t from, Tensor& dst, size_t to);

// Input `i`, which must be present. Throws Error(Model).
const Tensor& Required(const Node& node, std::span<const Tensor* const> inputs, size_t i);

// ---- ai.onnx.ml parts (ops_ml.cpp) the fused sparse TF-IDF kernel (ops_text.cpp) shares ----

// A linear model's weights, read once at load: coefficients feature-major
// (by_feature[c * targets + t]) so that a row's zero features — most of a TF-IDF or
// one-hot row — cost nothing.
struct LinearState : NodeState {
  size_t targets = 0, cols = 0;
  std::vector<float> by_feature;
  std::vector<float> intercepts;  // per target, or empty

  // acc[t] += v * coefficient(t, c) for every target: one feature's share of the scores.
  void Accumulate(size_t c, float v, float* acc) const {
    const float* w = by_feature.data() + c * targets;
    for (size_t t = 0; t < targets; ++t) acc[t] += v * w[t];
  }
};
// LinearRegressor's and LinearClassifier's Prepare. Throws Error(Model).
std::shared_ptr<const NodeState> PrepareLinear(const Node& node);

// LinearClassifier's outputs from its raw scores ([rows, classes]: x·W + b): out[0] the
// label per row, out[1] (when asked) the post-transformed scores. `node` supplies the
// labels and post_transform attributes.
void ClassifierOutputs(const Node& node, size_t classes, std::span<float> scores, size_t rows, std::span<Tensor> out);

enum class Norm { kMax, kL1, kL2 };
// Normalizer's `norm` (MAX by default). Throws UnsupportedError for another.
Norm NormOf(const Node& node);
// What Normalizer divides a `cols`-wide row by, when the row is zero but for `values` at
// the ascending coordinates `coords`: bit for bit what the dense row gives.
float SparseDivisor(Norm norm, std::span<const float> values, std::span<const uint32_t> coords, size_t cols);

}  // namespace runnel::tensor
