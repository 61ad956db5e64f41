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
// Every lane f. Not `V16{} + f`: adding zero is not the identity for -0.0, so GCC
// keeps a scalar add before each broadcast, and then broadcasts from a register (an
// extra shuffle-port µop per broadcast on Intel, on the port of the second FMA unit)
// instead of from memory.
inline V16 Broadcast(float f) {
  return V16{f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f};
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
constexpr int kRowBlock = 6;   // 24 accumulators of 32 zmm registers
constexpr size_t kPanel = 64;  // columns per panel: 4 registers
#else
constexpr int kRowBlock = 4;  // 16 ymm registers: a V16 takes two
constexpr size_t kPanel = 32;
#endif

// MR rows of one panel of W: `width` (a multiple of 16, at most kPanel) columns from
// column n.
template <int MR>
void Panel(size_t width, const float* x, size_t x_stride, const PackedMatrix& d, size_t n, bool relu, float* y,
           size_t y_stride) {
  const float* w = d.weights.data() + n;
  const float* bias = d.bias.data() + n;
  switch (width / kPackWidth) {
    case 4: return MicroKernel<MR, 4>(x, x_stride, d.in, w, d.out_padded, bias, relu, y + n, y_stride);
    case 3: return MicroKernel<MR, 3>(x, x_stride, d.in, w, d.out_padded, bias, relu, y + n, y_stride);
    case 2: return MicroKernel<MR, 2>(x, x_stride, d.in, w, d.out_padded, bias, relu, y + n, y_stride);
    default: return MicroKernel<MR, 1>(x, x_stride, d.in, w, d.out_padded, bias, relu, y + n, y_stride);
  }
}

// The last rows (fewer than kRowBlock) of one panel. With few rows, FMA latency is
// hidden by the panel's several columns.
template <int MR>
void PanelTail(size_t rows, size_t width, const float* x, size_t x_stride, const PackedMatrix& d, size_t n, bool relu,
               float* y, size_t y_stride) {
  if constexpr (MR > 0) {
    if (rows == MR) {
      Panel<MR>(width, x, x_stride, d, n, relu, y, y_stride);
    } else {
      PanelTail<MR - 1>(rows, width, x, x_stride, d, n, relu, y, y_stride);
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
  // Columns outer, rows inner: one panel of W (k rows of kPanel columns) stays in L1
  // while every row block passes over it; x is read a broadcast at a time.
  for (size_t n = 0; n < w.out_padded; n += kPanel) {
    const size_t width = std::min(kPanel, w.out_padded - n);
    size_t r = 0;
    for (; r + kRowBlock <= rows; r += kRowBlock) {
      Panel<kRowBlock>(width, x + r * x_stride, x_stride, w, n, relu, y + r * y_stride, y_stride);
    }
    if (r < rows)
      PanelTail<kRowBlock - 1>(rows - r, width, x + r * x_stride, x_stride, w, n, relu, y + r * y_stride, y_stride);
  }
}

}  // namespace runnel::tensor
