// Numeric kernels of the model executor. Each optimized kernel has a plain reference
// implementation beside it; tests compare them on random shapes, benchmarks time them.
//
// Matrices are row-major with an explicit row stride (in floats), so buffers can be
// padded to the vector width. No kernel allocates.
#pragma once

#include <cstddef>

#include "runnel/model/graph.hpp"
#include "runnel/tensor/gemm.hpp"

namespace runnel::model {

// Weights of a Dense layer, packed for DenseForward (tensor/gemm.hpp): [in,
// out_padded], out padded with zeros to a multiple of kPackWidth; bias padded likewise
// (zeros when absent).
using tensor::kPackWidth;
using tensor::PaddedWidth;
using PackedDense = tensor::PackedMatrix;

PackedDense PackDense(const Node& node);

// y[r, 0..out_padded) = x[r, 0..in) · W + b, then the activation when it is Linear or
// Relu (others: apply ApplyActivation afterwards). Preconditions: x has `rows` rows of
// stride x_stride >= in; y has stride y_stride >= out_padded; x and y do not overlap.
void DenseForward(const float* x, size_t x_stride, size_t rows, const PackedDense& dense, Activation fused, float* y,
                  size_t y_stride);

// The reference: plain loops, unpacked weights, same contract on the first `out` columns.
void DenseReference(const float* x, size_t x_stride, size_t rows, const Node& node, float* y, size_t y_stride);

// Applies an activation in place to the first `width` columns of each row.
void ApplyActivation(const ActivationSpec& spec, float* data, size_t stride, size_t rows, size_t width);

// One value of an elementwise activation (not Softmax): the reference for tests.
float ActivationReference(const ActivationSpec& spec, float x);

}  // namespace runnel::model
