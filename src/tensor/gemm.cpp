#include "runnel/tensor/gemm.hpp"

#include <algorithm>
#include <cassert>

#include "simd.hpp"

namespace runnel::tensor {
namespace {

// This file is built with -ffp-contract=fast so a*b+c becomes an FMA.
using simd::Broadcast;
using simd::Load;
using simd::Store;
using simd::V16;
static_assert(sizeof(V16) == kPackWidth * sizeof(float));

// Where row k of one panel of the right-hand matrix starts: `stride` floats apart (a
// packed panel's rows are contiguous; a row-major matrix's a whole row apart), or at
// offsets from a base (MultiplyGathered).
struct StridedRows {
  const float* base;
  size_t stride;
  const float* operator()(size_t k) const { return base + k * stride; }
  StridedRows From(size_t k) const { return {base + k * stride, stride}; }
};
struct OffsetRows {
  const float* base;
  const size_t* offsets;
  const float* operator()(size_t k) const { return base + offsets[k]; }
  OffsetRows From(size_t k) const { return {base, offsets + k}; }
};

// The right-hand matrices, each giving the rows of its panel of `width` columns from
// column n: packed panel by panel (PackMatrix), row-major, or gathered.
struct PackedSide {
  static constexpr bool kBlocksK = true;
  const float* weights;
  size_t k;
  StridedRows At(size_t n, size_t width) const { return {weights + k * n, width}; }
};
struct RowMajorSide {
  static constexpr bool kBlocksK = true;
  const float* b;
  size_t stride;
  StridedRows At(size_t n, size_t) const { return {b + n, stride}; }
};
struct GatheredSide {
  // A convolution's taps: measured no faster in blocks of k (bench/onednn_bench).
  static constexpr bool kBlocksK = false;
  const float* b;
  const size_t* offsets;
  OffsetRows At(size_t n, size_t) const { return {b + n, offsets}; }
};

// What is added to the products and how they are stored: a bias per column and one
// per row (each null: none; already offset to the block), then max(0, .) when `relu`.
// `accumulate`: the products add to what y holds (a later block of k) instead.
struct Epilogue {
  const float* column_bias;
  const float* row_bias;
  bool relu;
  bool accumulate = false;
};

// Loops over a tile's rows and registers, unrolled whole: only then are the
// accumulators registers from the first load to the last store (an array indexed in
// a loop the compiler leaves rolled goes through the stack before and after the k loop).
#define RUNNEL_UNROLL _Pragma("GCC unroll 16")

// MR rows x NV*16 columns of y, accumulated over all of k in registers, starting from
// the biases (or, accumulating, from y).
template <int MR, int NV, typename Rows>
inline void MicroKernel(const float* x, size_t x_stride, size_t k_count, Rows w, const Epilogue& e, float* y,
                        size_t y_stride) {
  // Read once: y may alias e as far as the compiler knows.
  const float* column_bias = e.column_bias;
  const float* row_bias = e.row_bias;
  const bool relu = e.relu;
  V16 acc[MR][NV];
  if (e.accumulate) {
    RUNNEL_UNROLL for (int r = 0; r < MR; ++r) {
      RUNNEL_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] = Load(y + r * y_stride + v * 16);
    }
  } else {
    RUNNEL_UNROLL for (int v = 0; v < NV; ++v) {
      const V16 b = column_bias != nullptr ? Load(column_bias + v * 16) : V16{};
      RUNNEL_UNROLL for (int r = 0; r < MR; ++r) acc[r][v] = row_bias != nullptr ? b + Broadcast(row_bias[r]) : b;
    }
  }
  for (size_t k = 0; k < k_count; ++k) {
    const float* row = w(k);
    V16 wv[NV];
    RUNNEL_UNROLL for (int v = 0; v < NV; ++v) wv[v] = Load(row + v * 16);
    RUNNEL_UNROLL for (int r = 0; r < MR; ++r) {
      const V16 xb = Broadcast(x[r * x_stride + k]);
      RUNNEL_UNROLL for (int v = 0; v < NV; ++v) acc[r][v] += xb * wv[v];
    }
  }
  RUNNEL_UNROLL for (int r = 0; r < MR; ++r) {
    RUNNEL_UNROLL for (int v = 0; v < NV; ++v) {
      V16 out = acc[r][v];
      if (relu) out = out > 0 ? out : 0;
      Store(y + r * y_stride + v * 16, out);
    }
  }
}

#undef RUNNEL_UNROLL

#ifdef __AVX512F__
constexpr int kRowBlock = 6;   // 24 accumulators of 32 zmm registers
constexpr size_t kPanel = 64;  // columns per panel: 4 registers
#else
constexpr int kRowBlock = 4;  // 16 ymm registers: a V16 takes two
constexpr size_t kPanel = 32;
#endif

// The width of the panel that starts `left` columns before the end (a multiple of
// 16): kPanel, but the last kPanel + 16 columns as two panels of at least 32 (a lone
// 16-column panel has too few accumulators to hide the FMA latency). PackMatrix lays
// its panels out by the same rule.
size_t PanelWidth(size_t left) {
  return left == kPanel + kPackWidth && kPanel > 2 * kPackWidth ? kPanel - kPackWidth : std::min(kPanel, left);
}

// The right-hand side of one product: k rows, columns [0, columns) (a multiple of 16),
// an optional bias per column.
template <typename Side>
struct RightHand {
  Side side;
  size_t k;
  size_t columns;
  const float* bias;  // null: none
};

// The rows [first, first + count) of k that one pass of the micro-kernel sums; the
// first pass adds the biases, later ones add to y, the last applies the Relu.
struct KBlock {
  size_t first;
  size_t count;
  bool last;
};

// Blocks of k of at most kKBlock rows, so that a panel's block of the right-hand side
// (kKBlock x kPanel floats: 32 KiB) stays in L1 while the row blocks pass over it; a
// k up to 1.5 kKBlock is one block (a short last pass costs a load and store of y).
constexpr size_t kKBlock = 128;
size_t KBlocks(size_t k) {
  return k <= kKBlock + kKBlock / 2 ? 1 : (k + kKBlock - 1) / kKBlock;
}

// MR rows of y over one panel of the right-hand side: `width` (a multiple of 16, at
// most kPanel) columns from column n, over the rows of k in `kb`; `row_bias` from the
// block's first row (or null).
template <int MR, typename Side>
void Panel(size_t width, const float* x, size_t x_stride, const RightHand<Side>& b, size_t n, const KBlock& kb,
           const float* row_bias, bool relu, float* y, size_t y_stride) {
  const auto w = b.side.At(n, width).From(kb.first);
  const bool first = kb.first == 0;
  const Epilogue e{first && b.bias != nullptr ? b.bias + n : nullptr, first ? row_bias : nullptr, relu && kb.last,
                   !first};
  x += kb.first;
  switch (width / kPackWidth) {
    case 4: return MicroKernel<MR, 4>(x, x_stride, kb.count, w, e, y + n, y_stride);
    case 3: return MicroKernel<MR, 3>(x, x_stride, kb.count, w, e, y + n, y_stride);
    case 2: return MicroKernel<MR, 2>(x, x_stride, kb.count, w, e, y + n, y_stride);
    default: return MicroKernel<MR, 1>(x, x_stride, kb.count, w, e, y + n, y_stride);
  }
}

// The last rows (fewer than kRowBlock) of one panel. With few rows, FMA latency is
// hidden by the panel's several columns.
template <int MR, typename Side>
void PanelTail(size_t rows, size_t width, const float* x, size_t x_stride, const RightHand<Side>& b, size_t n,
               const KBlock& kb, const float* row_bias, bool relu, float* y, size_t y_stride) {
  if constexpr (MR > 0) {
    if (rows == MR) {
      Panel<MR>(width, x, x_stride, b, n, kb, row_bias, relu, y, y_stride);
    } else {
      PanelTail<MR - 1>(rows, width, x, x_stride, b, n, kb, row_bias, relu, y, y_stride);
    }
  }
}

// Columns outer, then blocks of k, rows inner: one block of a panel of the right-hand
// side (contiguous when packed) stays in cache while every row block passes over it;
// x is read a broadcast at a time.
template <typename Side>
void Multiply(const float* x, size_t x_stride, size_t rows, const RightHand<Side>& b, const float* row_bias, bool relu,
              float* y, size_t y_stride) {
  const auto bias_at = [&](size_t row) { return row_bias != nullptr ? row_bias + row : nullptr; };
  const size_t blocks = Side::kBlocksK ? KBlocks(b.k) : 1;
  for (size_t n = 0, width = 0; n < b.columns; n += width) {
    width = PanelWidth(b.columns - n);
    for (size_t block = 0; block < blocks; ++block) {
      const size_t first = b.k * block / blocks;
      const KBlock kb{first, b.k * (block + 1) / blocks - first, block + 1 == blocks};
      size_t r = 0;
      for (; r + kRowBlock <= rows; r += kRowBlock) {
        Panel<kRowBlock>(width, x + r * x_stride, x_stride, b, n, kb, bias_at(r), relu, y + r * y_stride, y_stride);
      }
      if (r < rows)
        PanelTail<kRowBlock - 1>(rows - r, width, x + r * x_stride, x_stride, b, n, kb, bias_at(r), relu,
                                 y + r * y_stride, y_stride);
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
  // Panel by panel (PanelWidth), each k rows of its width one after the other: a panel
  // is read as one contiguous stream (rows a whole matrix row apart map to a few L1
  // sets and evict each other).
  for (size_t n = 0, width = 0; n < packed.out_padded; n += width) {
    width = PanelWidth(packed.out_padded - n);
    float* panel = packed.weights.data() + in * n;
    for (size_t k = 0; k < in; ++k) {
      for (size_t j = 0; j < width && n + j < out; ++j) {
        panel[k * width + j] = transposed ? w[(n + j) * w_stride + k] : w[k * w_stride + n + j];
      }
    }
  }
  std::copy(bias.begin(), bias.end(), packed.bias.begin());
  return packed;
}

void MultiplyPacked(const float* x, size_t x_stride, size_t rows, const PackedMatrix& w, bool relu, float* y,
                    size_t y_stride) {
  assert(y_stride >= w.out_padded && x_stride >= w.in);
  const RightHand<PackedSide> b{{w.weights.data(), w.in}, w.in, w.out_padded, w.bias.data()};
  Multiply(x, x_stride, rows, b, nullptr, relu, y, y_stride);
}

void MultiplyRowMajor(const float* x, size_t x_stride, size_t rows, const float* b, size_t k, size_t columns,
                      size_t b_stride, float* y, size_t y_stride) {
  assert(columns % kPackWidth == 0 && b_stride >= columns && y_stride >= columns && x_stride >= k);
  const RightHand<RowMajorSide> right{{b, b_stride}, k, columns, nullptr};
  Multiply(x, x_stride, rows, right, nullptr, false, y, y_stride);
}

void MultiplyGathered(const float* x, size_t x_stride, size_t rows, const float* b, std::span<const size_t> offsets,
                      size_t columns, float* y, size_t y_stride, const float* row_bias, bool relu) {
  assert(columns % kPackWidth == 0 && y_stride >= columns && x_stride >= offsets.size());
  const RightHand<GatheredSide> right{{b, offsets.data()}, offsets.size(), columns, nullptr};
  Multiply(x, x_stride, rows, right, row_bias, relu, y, y_stride);
}

}  // namespace runnel::tensor
