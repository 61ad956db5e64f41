#include "runnel/model/kernels.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace runnel::model {
namespace {

// 16 floats: one zmm register with AVX-512, two ymm with AVX2; GCC lowers it to what
// the target has. This file is built with -ffp-contract=fast so a*b+c becomes an FMA.
typedef float V16 __attribute__((vector_size(64)));
static_assert(sizeof(V16) == kPackWidth * sizeof(float));

inline V16 Load(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, V16 v) {
  std::memcpy(p, &v, sizeof(v));
}
inline V16 Broadcast(float f) {
  return V16{} + f;
}

// MR rows x NV*16 columns of y, accumulated over all of k in registers.
template <int MR, int NV>
inline void MicroKernel(const float* x, size_t x_stride, size_t k_count, const float* w, size_t w_stride,
                        const float* bias, bool relu, float* y, size_t y_stride) {
  V16 acc[MR][NV];
  for (int v = 0; v < NV; ++v) {
    const V16 b = Load(bias + v * 16);
    for (int r = 0; r < MR; ++r) acc[r][v] = b;
  }
  for (size_t k = 0; k < k_count; ++k) {
    V16 wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = Load(w + k * w_stride + v * 16);
    for (int r = 0; r < MR; ++r) {
      const V16 xb = Broadcast(x[r * x_stride + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] += xb * wv[v];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) {
      V16 out = acc[r][v];
      if (relu) out = out > 0 ? out : 0;
      Store(y + r * y_stride + v * 16, out);
    }
  }
}

#ifdef __AVX512F__
constexpr int kRowBlock = 6;  // 12 accumulators of 32 zmm registers
#else
constexpr int kRowBlock = 4;
#endif

template <int MR>
void RowBlock(const float* x, size_t x_stride, const PackedDense& d, bool relu, float* y, size_t y_stride) {
  size_t n = 0;
  // Few rows leave FMA latency exposed: use more columns per pass to keep chains busy.
  if constexpr (MR <= 2) {
    for (; n + 64 <= d.out_padded; n += 64) {
      MicroKernel<MR, 4>(x, x_stride, d.in, d.weights.data() + n, d.out_padded, d.bias.data() + n, relu, y + n,
                         y_stride);
    }
  }
  for (; n + 32 <= d.out_padded; n += 32) {
    MicroKernel<MR, 2>(x, x_stride, d.in, d.weights.data() + n, d.out_padded, d.bias.data() + n, relu, y + n, y_stride);
  }
  for (; n < d.out_padded; n += 16) {
    MicroKernel<MR, 1>(x, x_stride, d.in, d.weights.data() + n, d.out_padded, d.bias.data() + n, relu, y + n, y_stride);
  }
}

template <int MR>
void RowTail(size_t rows, const float* x, size_t x_stride, const PackedDense& d, bool relu, float* y, size_t y_stride) {
  if constexpr (MR > 0) {
    if (rows == MR) {
      RowBlock<MR>(x, x_stride, d, relu, y, y_stride);
    } else {
      RowTail<MR - 1>(rows, x, x_stride, d, relu, y, y_stride);
    }
  }
}

float Sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}

}  // namespace

PackedDense PackDense(const Node& node) {
  PackedDense packed;
  packed.in = node.in_width;
  packed.out = node.out_width;
  packed.out_padded = PaddedWidth(node.out_width);
  packed.weights.assign(packed.in * packed.out_padded, 0.0f);
  packed.bias.assign(packed.out_padded, 0.0f);
  for (size_t k = 0; k < packed.in; ++k) {
    std::copy_n(node.weights.data() + k * packed.out, packed.out, packed.weights.data() + k * packed.out_padded);
  }
  if (!node.bias.empty()) std::copy(node.bias.begin(), node.bias.end(), packed.bias.begin());
  return packed;
}

void DenseForward(const float* x, size_t x_stride, size_t rows, const PackedDense& dense, Activation fused, float* y,
                  size_t y_stride) {
  assert(y_stride >= dense.out_padded && x_stride >= dense.in);
  const bool relu = fused == Activation::Relu;
  size_t r = 0;
  for (; r + kRowBlock <= rows; r += kRowBlock) {
    RowBlock<kRowBlock>(x + r * x_stride, x_stride, dense, relu, y + r * y_stride, y_stride);
  }
  if (r < rows) RowTail<kRowBlock - 1>(rows - r, x + r * x_stride, x_stride, dense, relu, y + r * y_stride, y_stride);
}

void DenseReference(const float* x, size_t x_stride, size_t rows, const Node& node, float* y, size_t y_stride) {
  for (size_t r = 0; r < rows; ++r) {
    for (size_t n = 0; n < node.out_width; ++n) {
      float sum = node.bias.empty() ? 0.0f : node.bias[n];
      for (size_t k = 0; k < node.in_width; ++k) sum += x[r * x_stride + k] * node.weights[k * node.out_width + n];
      y[r * y_stride + n] = sum;
    }
  }
  for (size_t r = 0; r < rows; ++r) {
    if (node.activation.kind == Activation::Softmax) {
      ApplyActivation(node.activation, y + r * y_stride, y_stride, 1, node.out_width);
    } else {
      for (size_t n = 0; n < node.out_width; ++n) {
        y[r * y_stride + n] = ActivationReference(node.activation, y[r * y_stride + n]);
      }
    }
  }
}

float ActivationReference(const ActivationSpec& spec, float x) {
  switch (spec.kind) {
    case Activation::Linear: return x;
    case Activation::Relu: return x > 0 ? x : 0.0f;
    case Activation::Sigmoid: return Sigmoid(x);
    case Activation::Tanh: return std::tanh(x);
    case Activation::Softmax: return x;  // row-wise, see ApplyActivation
    case Activation::Elu: return x > 0 ? x : spec.alpha * (std::exp(x) - 1.0f);
    case Activation::Selu: {
      constexpr float kAlpha = 1.6732632423543772848170429916717f;
      constexpr float kScale = 1.0507009873554804934193349852946f;
      return kScale * (x > 0 ? x : kAlpha * (std::exp(x) - 1.0f));
    }
    case Activation::Gelu: return 0.5f * x * (1.0f + std::erf(x / std::sqrt(2.0f)));
    case Activation::GeluTanh: {
      constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
      return 0.5f * x * (1.0f + std::tanh(kC * (x + 0.044715f * x * x * x)));
    }
    case Activation::Swish: return x * Sigmoid(x);
    case Activation::Softplus: return x > 20.0f ? x : std::log1p(std::exp(x));
    case Activation::LeakyRelu: return x >= 0 ? x : spec.alpha * x;
    case Activation::HardSigmoid: return std::clamp(spec.alpha * x + spec.beta, 0.0f, 1.0f);
    case Activation::Exponential: return std::exp(x);
    case Activation::Clip: return std::min(std::max(x, spec.alpha), spec.beta);
  }
  return x;
}

void ApplyActivation(const ActivationSpec& spec, float* data, size_t stride, size_t rows, size_t width) {
  switch (spec.kind) {
    case Activation::Linear: return;
    case Activation::Relu:
      for (size_t r = 0; r < rows; ++r) {
        float* row = data + r * stride;
        for (size_t c = 0; c < width; ++c) row[c] = row[c] > 0 ? row[c] : 0.0f;
      }
      return;
    case Activation::Softmax:
      for (size_t r = 0; r < rows; ++r) {
        float* row = data + r * stride;
        const float top = *std::max_element(row, row + width);
        float sum = 0.0f;
        for (size_t c = 0; c < width; ++c) {
          row[c] = std::exp(row[c] - top);
          sum += row[c];
        }
        for (size_t c = 0; c < width; ++c) row[c] /= sum;
      }
      return;
    default:
      for (size_t r = 0; r < rows; ++r) {
        float* row = data + r * stride;
        for (size_t c = 0; c < width; ++c) row[c] = ActivationReference(spec, row[c]);
      }
      return;
  }
}

}  // namespace runnel::model
