// Optimized kernels against their plain references, and every activation against
// values computed by hand.
#include "runnel/model/kernels.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "../support/random.hpp"

namespace runnel::model {
namespace {

Node RandomDense(std::mt19937_64& rng, size_t in, size_t out, bool bias, Activation act) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  Node node;
  node.kind = OpKind::Dense;
  node.in_width = in;
  node.out_width = out;
  node.activation = {act};
  node.weights.resize(in * out);
  for (auto& w : node.weights) w = value(rng);
  if (bias) {
    node.bias.resize(out);
    for (auto& b : node.bias) b = value(rng);
  }
  return node;
}

TEST(DenseKernel, MatchesReferenceOnRandomShapes) {
  std::mt19937_64 rng(runnel::testing::TestSeed());
  // in up to 600: the product runs in blocks of k above 192 (gemm.cpp).
  std::uniform_int_distribution<size_t> rows_dist(1, 40), in_dist(1, 600), out_dist(1, 150);
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t rows = rows_dist(rng), in = in_dist(rng), out = out_dist(rng);
    const bool bias = trial % 3 != 0;
    const Activation act = trial % 2 == 0 ? Activation::Relu : Activation::Linear;
    Node node = RandomDense(rng, in, out, bias, act);
    const size_t x_stride = in + trial % 5;  // strides wider than the data are allowed
    std::vector<float> x(rows * x_stride);
    for (auto& v : x) v = value(rng);
    PackedDense packed = PackDense(node);
    std::vector<float> fast(rows * packed.out_padded, NAN), slow(rows * out, NAN);
    DenseForward(x.data(), x_stride, rows, packed, act, fast.data(), packed.out_padded);
    DenseReference(x.data(), x_stride, rows, node, slow.data(), out);
    for (size_t r = 0; r < rows; ++r) {
      for (size_t c = 0; c < out; ++c) {
        // FMA and blocking change rounding only: relative to the magnitude of the terms.
        const float tolerance = 1e-5f * static_cast<float>(in) + 1e-6f;
        ASSERT_NEAR(fast[r * packed.out_padded + c], slow[r * out + c], tolerance)
            << "rows=" << rows << " in=" << in << " out=" << out << " at " << r << "," << c;
      }
    }
  }
}

TEST(DenseKernel, PackingPadsWithZeros) {
  std::mt19937_64 rng(1);
  Node node = RandomDense(rng, 3, 5, true, Activation::Linear);
  PackedDense packed = PackDense(node);
  EXPECT_EQ(packed.out_padded, 16u);
  ASSERT_EQ(packed.weights.size(), 3u * 16u);
  for (size_t k = 0; k < 3; ++k) {
    for (size_t n = 0; n < 16; ++n) {
      EXPECT_EQ(packed.weights[k * 16 + n], n < 5 ? node.weights[k * 5 + n] : 0.0f);
    }
  }
  EXPECT_EQ(packed.bias[4], node.bias[4]);
  EXPECT_EQ(packed.bias[5], 0.0f);
}

struct ActivationCase {
  ActivationSpec spec;
  float x;
  double expected;
};

TEST(Activations, ReferenceValues) {
  const ActivationCase cases[] = {
      {{Activation::Linear}, -3.5f, -3.5},
      {{Activation::Relu}, -1.0f, 0.0},
      {{Activation::Relu}, 2.5f, 2.5},
      {{Activation::Sigmoid}, 0.0f, 0.5},
      {{Activation::Sigmoid}, 2.0f, 0.8807970779778823},
      {{Activation::Tanh}, 1.0f, 0.7615941559557649},
      {{Activation::Elu, 1.0f}, -1.0f, std::exp(-1.0) - 1.0},
      {{Activation::Elu, 0.5f}, 2.0f, 2.0},
      {{Activation::Selu}, -1.0f, 1.0507009873554805 * 1.6732632423543772 * (std::exp(-1.0) - 1.0)},
      {{Activation::Selu}, 1.0f, 1.0507009873554805},
      {{Activation::Gelu}, 1.0f, 0.8413447460685429},
      {{Activation::GeluTanh}, 1.0f, 0.8411919906082768},
      {{Activation::Swish}, 1.0f, 0.7310585786300049},
      {{Activation::Softplus}, 0.0f, std::log(2.0)},
      {{Activation::Softplus}, 30.0f, 30.0},
      {{Activation::LeakyRelu, 0.2f}, -2.0f, -0.4},
      {{Activation::LeakyRelu, 0.2f}, 3.0f, 3.0},
      {{Activation::HardSigmoid, 0.2f, 0.5f}, 1.0f, 0.7},
      {{Activation::HardSigmoid, 0.2f, 0.5f}, 10.0f, 1.0},
      {{Activation::HardSigmoid, 1.0f / 6.0f, 0.5f}, -4.0f, 0.0},
      {{Activation::Exponential}, 1.0f, 2.718281828459045},
      {{Activation::Clip, 0.0f, 6.0f}, 7.0f, 6.0},
      {{Activation::Clip, 0.0f, 6.0f}, -1.0f, 0.0},
  };
  for (const auto& c : cases) {
    EXPECT_NEAR(ActivationReference(c.spec, c.x), c.expected, 1e-6) << ActivationName(c.spec.kind) << "(" << c.x << ")";
    float in_place = c.x;
    ApplyActivation(c.spec, &in_place, 1, 1, 1);
    EXPECT_NEAR(in_place, c.expected, 1e-6) << ActivationName(c.spec.kind) << " in place";
  }
}

TEST(Activations, SoftmaxIsPerRowAndStable) {
  std::vector<float> rows = {1, 2, 3, 99, 1000, 1001, 1002, 99};  // 2 rows, width 3, stride 4
  ApplyActivation({Activation::Softmax}, rows.data(), 4, 2, 3);
  EXPECT_NEAR(rows[0], 0.09003057, 1e-6);
  EXPECT_NEAR(rows[1], 0.24472847, 1e-6);
  EXPECT_NEAR(rows[2], 0.66524096, 1e-6);
  EXPECT_EQ(rows[3], 99.0f) << "padding is left alone";
  EXPECT_NEAR(rows[4], 0.09003057, 1e-6) << "large inputs do not overflow";
  EXPECT_NEAR(rows[4] + rows[5] + rows[6], 1.0, 1e-6);
}

TEST(DenseKernel, FusedActivationsMatchReference) {
  std::mt19937_64 rng(7);
  for (Activation act : {Activation::Sigmoid, Activation::Tanh, Activation::Softmax, Activation::Gelu}) {
    Node node = RandomDense(rng, 6, 4, true, act);
    std::vector<float> x(3 * 6);
    for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
    std::vector<float> slow(3 * 4);
    DenseReference(x.data(), 6, 3, node, slow.data(), 4);
    // The executor path: linear kernel then the activation.
    PackedDense packed = PackDense(node);
    std::vector<float> fast(3 * packed.out_padded);
    DenseForward(x.data(), 6, 3, packed, Activation::Linear, fast.data(), packed.out_padded);
    ApplyActivation(node.activation, fast.data(), packed.out_padded, 3, 4);
    for (size_t r = 0; r < 3; ++r) {
      for (size_t c = 0; c < 4; ++c) EXPECT_NEAR(fast[r * packed.out_padded + c], slow[r * 4 + c], 1e-6);
    }
  }
}

}  // namespace
}  // namespace runnel::model
