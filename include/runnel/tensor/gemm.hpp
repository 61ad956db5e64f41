// The packed matrix product both runtimes share: the dense fast path's Dense layers
// (model/kernels.hpp) and the tensor runtime's MatMul, Gemm and Conv. A register-
// blocked micro-kernel (GCC vector extensions, -march=native, FMA; 6 rows x 64 columns
// with AVX-512, 4 x 32 elsewhere) over a right-hand matrix packed once: [in,
// out_padded] row-major, out padded with zeros to a multiple of kPackWidth; or gathered
// from rows at offsets (a stride-1 convolution's taps over its padded image). Packed
// and row-major products with k > 192 run in blocks of k (cache blocking; the same sums
// in the same order). Tested
// against plain loops on random shapes (tests/model/kernels_test.cpp, and through
// MatMul, Gemm and Conv in tests/tensor/tensor_test.cpp).
//
// Thread safety: a PackedMatrix is immutable once packed; MultiplyPacked may run on
// many threads at once. Nothing here allocates except PackMatrix.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace runnel::tensor {

inline constexpr size_t kPackWidth = 16;
inline size_t PaddedWidth(size_t width) {
  return (width + kPackWidth - 1) / kPackWidth * kPackWidth;
}

struct PackedMatrix {
  size_t in = 0;
  size_t out = 0;
  size_t out_padded = 0;
  std::vector<float> weights;  // in * out_padded, in panels of columns (gemm.cpp); opaque
  std::vector<float> bias;     // out_padded (zeros when absent)
};

// Packs w ([in, out], row stride w_stride, or its transpose [out, in] when
// `transposed`) and an optional bias of `out` values.
PackedMatrix PackMatrix(const float* w, size_t in, size_t out, size_t w_stride, bool transposed,
                        std::span<const float> bias = {});

// y[r, 0..out_padded) = x[r, 0..in) · W + b, then max(0, .) when `relu`.
// Preconditions: x has `rows` rows of stride x_stride >= in; y has stride y_stride >=
// out_padded; x and y do not overlap.
void MultiplyPacked(const float* x, size_t x_stride, size_t rows, const PackedMatrix& w, bool relu, float* y,
                    size_t y_stride);

// The same product over a row-major right-hand matrix b ([k, columns], rows b_stride
// floats apart: an im2col matrix written per call), without bias.
// Preconditions: columns is a multiple of kPackWidth; b_stride, y_stride >= columns;
// x_stride >= k.
void MultiplyRowMajor(const float* x, size_t x_stride, size_t rows, const float* b, size_t k, size_t columns,
                      size_t b_stride, float* y, size_t y_stride);

// The same product over a right-hand matrix that is not packed but gathered: row k is
// the `columns` floats from b + offsets[k] (rows may overlap, as the taps of a
// convolution over one padded image do: an implicit im2col).
// y[r, 0..columns) = row_bias[r] + sum over k of x[r, k] * b[offsets[k] + 0..columns),
// then max(0, .) when `relu` (row_bias null: no bias).
// Preconditions: columns is a multiple of kPackWidth; every b + offsets[k] + columns
// is readable; x has stride x_stride >= offsets.size(); y has stride y_stride >= columns;
// row_bias, when given, has `rows` values.
void MultiplyGathered(const float* x, size_t x_stride, size_t rows, const float* b, std::span<const size_t> offsets,
                      size_t columns, float* y, size_t y_stride, const float* row_bias = nullptr, bool relu = false);

}  // namespace runnel::tensor
