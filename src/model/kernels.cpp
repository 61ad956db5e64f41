#include "runnel/model/kernels.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

namespace runnel::model {
namespace {

float Sigmoid(float x) {
  return 1.0f / (1.0f + std::exp(-x));
}

}  // namespace

PackedDense PackDense(const Node& node) {
  return tensor::PackMatrix(node.weights.data(), node.in_width, node.out_width, node.out_width, false, node.bias);
}

void DenseForward(const float* x, size_t x_stride, size_t rows, const PackedDense& dense, Activation fused, float* y,
                  size_t y_stride) {
  tensor::MultiplyPacked(x, x_stride, rows, dense, fused == Activation::Relu, y, y_stride);
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
