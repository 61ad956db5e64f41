#include "runnel/tensor/gemm.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace runnel::tensor {
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
void RowBlock(const float* x, size_t x_stride, const PackedMatrix& d, bool relu, float* y, size_t y_stride) {
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
void RowTail(size_t rows, const float* x, size_t x_stride, const PackedMatrix& d, bool relu, float* y,
             size_t y_stride) {
  if constexpr (MR > 0) {
    if (rows == MR) {
      RowBlock<MR>(x, x_stride, d, relu, y, y_stride);
    } else {
      RowTail<MR - 1>(rows, x, x_stride, d, relu, y, y_stride);
    }
  }
}

}  // namespace

PackedMatrix PackMatrix(const float* w, size_t in, size_t out, size_t w_stride, bool transposed,
                        std::span<const float> bias) {
  PackedMatrix packed;
  packed.in = in;
  packed.out = out;
  packed.out_padded = PaddedWidth(out);
  packed.weights.assign(in * packed.out_padded, 0.0f);
  packed.bias.assign(packed.out_padded, 0.0f);
  for (size_t k = 0; k < in; ++k) {
    float* row = packed.weights.data() + k * packed.out_padded;
    if (transposed) {
      for (size_t n = 0; n < out; ++n) row[n] = w[n * w_stride + k];
    } else {
      std::copy_n(w + k * w_stride, out, row);
    }
  }
  std::copy(bias.begin(), bias.end(), packed.bias.begin());
  return packed;
}

void MultiplyPacked(const float* x, size_t x_stride, size_t rows, const PackedMatrix& w, bool relu, float* y,
                    size_t y_stride) {
  assert(y_stride >= w.out_padded && x_stride >= w.in);
  size_t r = 0;
  for (; r + kRowBlock <= rows; r += kRowBlock) {
    RowBlock<kRowBlock>(x + r * x_stride, x_stride, w, relu, y + r * y_stride, y_stride);
  }
  if (r < rows) RowTail<kRowBlock - 1>(rows - r, x + r * x_stride, x_stride, w, relu, y + r * y_stride, y_stride);
}

}  // namespace runnel::tensor
