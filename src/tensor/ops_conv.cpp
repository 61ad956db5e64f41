// Convolutions, pooling and normalizations over [N, C, spatial...] tensors (any number
// of spatial dimensions): Conv, MaxPool, AveragePool, GlobalAveragePool,
// GlobalMaxPool, BatchNormalization (inference), InstanceNormalization,
// LayerNormalization, Pad. Reference loops accumulating in double; float Conv over one
// or two spatial axes runs on the packed micro-kernel (gemm.hpp), and float
// BatchNormalization and LayerNormalization in one vectorized pass per plane or run
// (oneDNN's were 8-12x faster than the reference: bench/onednn_bench.cpp); each tested
// against its reference.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels.hpp"
#include "runnel/tensor/gemm.hpp"
#include "simd.hpp"
#include "vector_math.hpp"

namespace runnel::tensor {
namespace {

// Where windows sit along each spatial axis.
struct Window {
  std::vector<int64_t> in;      // input spatial sizes
  std::vector<int64_t> kernel;  // window sizes
  std::vector<int64_t> stride, dilation, pad_begin, pad_end;
  std::vector<int64_t> out;  // output spatial sizes
};

std::vector<int64_t> ListOr(const Node& node, const char* name, size_t n, int64_t fallback) {
  auto v = node.IntList(name);
  if (v.empty()) v.assign(n, fallback);
  if (v.size() != n) throw Error(ErrorCode::Model, fmt::format("'{}' holds {} values, expected {}", name, v.size(), n));
  return v;
}

Window WindowOf(const Node& node, const Shape& x, std::vector<int64_t> kernel, bool ceil_mode) {
  if (x.size() < 3)
    throw Error(ErrorCode::Model, fmt::format("{} takes [N, C, spatial...], got {}", node.op, ShapeText(x)));
  const size_t n = x.size() - 2;
  Window w;
  w.in.assign(x.begin() + 2, x.end());
  if (kernel.size() != n) throw Error(ErrorCode::Model, "the kernel's rank does not match the input's");
  w.kernel = std::move(kernel);
  w.stride = ListOr(node, "strides", n, 1);
  w.dilation = ListOr(node, "dilations", n, 1);
  auto pads = ListOr(node, "pads", 2 * n, 0);
  w.pad_begin.assign(pads.begin(), pads.begin() + static_cast<int64_t>(n));
  w.pad_end.assign(pads.begin() + static_cast<int64_t>(n), pads.end());
  const std::string auto_pad = node.String("auto_pad", "NOTSET");
  for (size_t i = 0; i < n; ++i) {
    if (w.kernel[i] <= 0 || w.stride[i] <= 0 || w.dilation[i] <= 0 || w.pad_begin[i] < 0 || w.pad_end[i] < 0 ||
        w.kernel[i] > (int64_t{1} << 20) || w.stride[i] > (int64_t{1} << 20) || w.dilation[i] > (int64_t{1} << 20) ||
        w.pad_begin[i] > (int64_t{1} << 20) || w.pad_end[i] > (int64_t{1} << 20)) {
      throw Error(ErrorCode::Model, "kernel, strides, dilations and pads must be positive and reasonable");
    }
    const int64_t span = w.dilation[i] * (w.kernel[i] - 1) + 1;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t out = (w.in[i] + w.stride[i] - 1) / w.stride[i];
      const int64_t total = std::max<int64_t>(0, (out - 1) * w.stride[i] + span - w.in[i]);
      w.pad_begin[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      w.pad_end[i] = total - w.pad_begin[i];
    } else if (auto_pad == "VALID") {
      w.pad_begin[i] = w.pad_end[i] = 0;
    } else if (auto_pad != "NOTSET") {
      throw Error(ErrorCode::Model, fmt::format("auto_pad '{}'", auto_pad));
    }
    const int64_t room = w.in[i] + w.pad_begin[i] + w.pad_end[i] - span;
    if (room < 0)
      throw Error(ErrorCode::Model, fmt::format("the window is larger than the padded input {}", ShapeText(x)));
    int64_t out = (ceil_mode ? (room + w.stride[i] - 1) / w.stride[i] : room / w.stride[i]) + 1;
    // A last window that would start in the end padding only is dropped (as PyTorch and ONNX do).
    if (ceil_mode && (out - 1) * w.stride[i] >= w.in[i] + w.pad_begin[i]) --out;
    w.out.push_back(out);
  }
  return w;
}

// Calls f(flat output index within a channel, the window's first input position per axis).
template <typename F>
void ForEachWindow(const Window& w, F&& f) {
  const size_t n = w.out.size();
  std::vector<int64_t> at(n, 0), start(n);
  const size_t count = ElementCount(w.out);
  for (size_t o = 0; o < count; ++o) {
    for (size_t i = 0; i < n; ++i) start[i] = at[i] * w.stride[i] - w.pad_begin[i];
    f(o, start);
    NextIndex(at, w.out);
  }
}

// Calls f(input offset within a channel) for each window element inside the input;
// returns how many elements of the window lie inside the padded input.
template <typename F>
size_t ForEachTap(const Window& w, const std::vector<int64_t>& start, const std::vector<size_t>& strides, F&& f) {
  const size_t n = w.kernel.size();
  std::vector<int64_t> k(n, 0);
  const size_t taps = ElementCount(w.kernel);
  size_t padded = 0;
  for (size_t t = 0; t < taps; ++t) {
    bool inside = true, in_padding = true;
    size_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t p = start[i] + k[i] * w.dilation[i];
      if (p < 0 || p >= w.in[i]) inside = false;
      if (p < -w.pad_begin[i] || p >= w.in[i] + w.pad_end[i]) in_padding = false;
      if (inside) offset += static_cast<size_t>(p) * strides[i];
    }
    if (in_padding) ++padded;
    if (inside) f(t, offset);
    NextIndex(k, w.kernel);
  }
  return padded;
}

template <typename T>
void CheckFloat(const Node& node, const Tensor& t) {
  if constexpr (!std::is_floating_point_v<T>) {
    throw Error(ErrorCode::Model,
                fmt::format("{} takes float elements, not {}", node.op, DataTypeName(static_cast<int>(t.type()))));
  }
}

}  // namespace

void ConvReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& wt = Required(node, in, 1);
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  if (x.rank() < 3 || wt.rank() != x.rank() || wt.type() != x.type())
    throw Error(ErrorCode::Model, "Conv takes [N, C, spatial...] and a weight of its rank and type");
  const int64_t group = node.Int("group", 1);
  const int64_t channels = x.dim(1), filters = wt.dim(0);
  if (group <= 0 || channels % group != 0 || filters % group != 0 || wt.dim(1) != channels / group) {
    throw Error(ErrorCode::Model, fmt::format("Conv of {} with weight {} in {} group(s)", ShapeText(x.shape()),
                                              ShapeText(wt.shape()), group));
  }
  if (bias != nullptr && (bias->size() != static_cast<size_t>(filters) || bias->type() != x.type())) {
    throw Error(ErrorCode::Model, "Conv's bias does not match its filters");
  }
  const Window w = WindowOf(node, x.shape(), Shape(wt.shape().begin() + 2, wt.shape().end()), false);
  Shape shape{x.dim(0), filters};
  shape.insert(shape.end(), w.out.begin(), w.out.end());
  out[0] = Tensor(x.type(), shape);
  const auto strides = Strides(w.in);
  const size_t plane = ElementCount(w.in), out_plane = ElementCount(w.out), taps = ElementCount(w.kernel);
  const int64_t per_group = channels / group, filters_per_group = filters / group;
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    CheckFloat<T>(node, x);
    if constexpr (std::is_floating_point_v<T>) {
      auto px = x.data<T>();
      auto pw = wt.data<T>();
      auto dst = out[0].data<T>();
      for (int64_t b = 0; b < x.dim(0); ++b) {
        for (int64_t m = 0; m < filters; ++m) {
          const int64_t g = m / filters_per_group;
          T* y = dst.data() + static_cast<size_t>(b * filters + m) * out_plane;
          ForEachWindow(w, [&](size_t o, const std::vector<int64_t>& start) {
            double s = bias != nullptr ? static_cast<double>(bias->data<T>()[static_cast<size_t>(m)]) : 0.0;
            for (int64_t c = 0; c < per_group; ++c) {
              const T* xc = px.data() + static_cast<size_t>(b * channels + g * per_group + c) * plane;
              const T* wc = pw.data() + static_cast<size_t>(m * per_group + c) * taps;
              ForEachTap(w, start, strides, [&](size_t t, size_t offset) {
                s += static_cast<double>(xc[offset]) * static_cast<double>(wc[t]);
              });
            }
            y[o] = static_cast<T>(s);
          });
        }
      }
    }
  });
}

namespace {

// A 1-D or 2-D convolution's geometry as 2-D (a 1-D one has height 1).
struct Plane2d {
  int64_t ih, iw, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow;
};

Plane2d PlaneOf(const Window& w) {
  const bool one = w.in.size() == 1;
  auto at = [&](const std::vector<int64_t>& v, int64_t one_d) { return one ? one_d : v[0]; };
  auto last = [&](const std::vector<int64_t>& v) { return v.back(); };
  return {at(w.in, 1),       last(w.in),       at(w.kernel, 1),    last(w.kernel),    at(w.stride, 1), last(w.stride),
          at(w.dilation, 1), last(w.dilation), at(w.pad_begin, 0), last(w.pad_begin), at(w.out, 1),    last(w.out)};
}

// One row of the im2col matrix: tap (ky, kx) of one channel's plane at output
// positions [first, first + count), zeros where the tap lies in the padding. Walks
// the positions output row by output row, each split into the runs before, inside and
// after the input.
void Im2ColRow(const float* plane, const Plane2d& p, int64_t ky, int64_t kx, size_t first, size_t count, float* dst) {
  int64_t oy = static_cast<int64_t>(first) / p.ow, ox = static_cast<int64_t>(first) % p.ow;
  const int64_t off = kx * p.dw - p.pw;  // input column of output column o: o * sw + off
  const int64_t lo = off >= 0 ? 0 : (-off + p.sw - 1) / p.sw;
  const int64_t hi = p.iw - 1 - off < 0 ? 0 : (p.iw - 1 - off) / p.sw + 1;
  for (size_t j = 0; j < count; ++oy, ox = 0) {
    const int64_t len = std::min<int64_t>(p.ow - ox, static_cast<int64_t>(count - j));
    const int64_t iy = oy * p.sh - p.ph + ky * p.dh;
    float* d = dst + j;  // d[o - ox]: output column o
    if (iy < 0 || iy >= p.ih) {
      std::fill(d, d + len, 0.0f);
    } else {
      const float* row = plane + iy * p.iw;
      const int64_t begin = std::clamp(lo, ox, ox + len), end = std::clamp(hi, begin, ox + len);
      std::fill(d, d + (begin - ox), 0.0f);
      if (p.sw == 1) {
        std::copy(row + begin + off, row + end + off, d + (begin - ox));
      } else {
        for (int64_t o = begin; o < end; ++o) d[o - ox] = row[o * p.sw + off];
      }
      std::fill(d + (end - ox), d + len, 0.0f);
    }
    j += static_cast<size_t>(len);
  }
}

// Columns [first, first + count) of the im2col matrix of one image's channels [0,
// channels), written packed: row (channel, ky, kx) as the weights hold them, column
// = output position, rows `stride` floats apart.
void Im2Col(const float* x, const Plane2d& p, int64_t channels, size_t first, size_t count, float* col, size_t stride) {
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      for (int64_t kx = 0; kx < p.kw; ++kx, col += stride) Im2ColRow(x + c * p.ih * p.iw, p, ky, kx, first, count, col);
    }
  }
}

// Negative (and NaN) elements to 0, as Relu does.
void ReluInPlace(Tensor& t) {
  VisitNumeric(t.type(), [&](auto zero) {
    using T = decltype(zero);
    for (T& v : t.data<T>()) v = v > 0 ? v : T(0);
  });
}

// One Conv's sizes per group: its plane, channels and filters per group, taps per
// filter (k) and output positions per plane.
struct ConvShape {
  Plane2d p;
  int64_t group, cpg;
  size_t fpg, k, positions;
};

// How products become output planes: plus each filter's bias (none when null), then
// Relu when fused.
struct OutputPlanes {
  const float* bias;
  bool relu;

  // dst[j] = f(row[j] + bias[filter]) for j in [0, count).
  void Write(const float* row, size_t filter, size_t count, float* dst) const {
    const float b = bias != nullptr ? bias[filter] : 0.0f;
    if (relu) {
      for (size_t j = 0; j < count; ++j) dst[j] = row[j] + b > 0 ? row[j] + b : 0.0f;
    } else {
      for (size_t j = 0; j < count; ++j) dst[j] = row[j] + b;
    }
  }
};

// Calls f(image, filter, result, group) for each image of the batch and each group:
// the group's input planes, its filters [fpg, k] and its output planes.
template <typename F>
void ForEachGroup(const Tensor& x, const Tensor& wt, const ConvShape& c, Tensor& out, F&& f) {
  auto px = x.data<float>();
  auto pw = wt.data<float>();
  auto dst = out.data<float>();
  const int64_t channels = x.dim(1);
  const auto filters = static_cast<size_t>(wt.dim(0));
  for (int64_t n = 0; n < x.dim(0); ++n) {
    for (int64_t g = 0; g < c.group; ++g) {
      f(px.data() + static_cast<size_t>((n * channels + g * c.cpg) * c.p.ih * c.p.iw),
        pw.data() + static_cast<size_t>(g) * c.fpg * c.k,
        dst.data() + (static_cast<size_t>(n) * filters + static_cast<size_t>(g) * c.fpg) * c.positions,
        static_cast<size_t>(g));
    }
  }
}

// Im2col in chunks of positions whose matrix stays within 128 KiB (a cache level, not
// a page apart per row): the filters [fpg, k] times the chunk's [k, positions].
void ConvIm2Col(const Tensor& x, const Tensor& wt, const ConvShape& c, const OutputPlanes& planes, Tensor& out) {
  const size_t chunk = std::min(PaddedWidth(c.positions),
                                std::max<size_t>(kPackWidth, (size_t{1} << 15) / c.k / kPackWidth * kPackWidth));
  ScratchFloats col(c.k * chunk);
  ScratchFloats y(c.fpg * chunk);
  ForEachGroup(x, wt, c, out, [&](const float* image, const float* filter, float* result, size_t group) {
    for (size_t first = 0; first < c.positions; first += chunk) {
      const size_t count = std::min(chunk, c.positions - first), padded = PaddedWidth(count);
      Im2Col(image, c.p, c.cpg, first, count, col.data(), padded);
      // Columns past `count` are zeros (a pooled buffer holds anything, even values
      // that are slow to multiply): their products land in y's padding.
      for (size_t r = 0; count < padded && r < c.k; ++r)
        std::fill_n(col.data() + r * padded + count, padded - count, 0.0f);
      MultiplyRowMajor(filter, c.k, c.fpg, col.data(), c.k, padded, padded, y.data(), padded);
      for (size_t m = 0; m < c.fpg; ++m) {
        planes.Write(y.data() + m * padded, group * c.fpg + m, count, result + m * c.positions + first);
      }
    }
  });
}

// A stride-1 Conv reads its taps straight from the image padded once: over a padded
// plane of [hp, wp], tap (ky, kx) of output (oy, ox) is element (oy + ky·dh) · wp + ox +
// kx·dw, so row (c, ky, kx) of the im2col matrix is the padded planes from one offset
// on, if the output is computed on the padded width (wp columns per output row, the
// last wp − ow of them discarded). No im2col matrix is written.
struct GatheredPlane {
  int64_t hp, wp;       // padded plane
  size_t columns;       // oh · wp rounded up to 16
  size_t image_floats;  // channels · hp · wp, plus slack for the last panel's reads
};

// Whether a Conv runs gathered: stride 1, at most a quarter of the computed columns
// discarded, and a padded image of at most four times the input (hostile pads and
// dilations stay with im2col, whose memory is bounded by its chunks).
bool GatheredFits(const Plane2d& p) {
  const int64_t hp = p.oh + (p.kh - 1) * p.dh, wp = p.ow + (p.kw - 1) * p.dw;
  return p.sh == 1 && p.sw == 1 && p.ow * 4 >= wp * 3 && hp * wp <= 4 * p.ih * p.iw + (1 << 16);
}

GatheredPlane GatheredPlaneOf(const Plane2d& p, int64_t channels) {
  GatheredPlane g;
  g.hp = p.oh + (p.kh - 1) * p.dh;
  g.wp = p.ow + (p.kw - 1) * p.dw;
  g.columns = PaddedWidth(static_cast<size_t>(p.oh * g.wp));
  // The last tap's offset is below channels·hp·wp − (oh − 1)·wp, and a panel reads
  // `columns` < oh·wp + 16 floats from it.
  g.image_floats = static_cast<size_t>(channels * g.hp * g.wp + g.wp) + kPackWidth;
  return g;
}

// Row (c, ky, kx) of the implicit im2col matrix: where it starts in the padded image.
std::vector<size_t> TapOffsets(const Plane2d& p, const GatheredPlane& g, int64_t channels) {
  std::vector<size_t> offsets;
  offsets.reserve(static_cast<size_t>(channels * p.kh * p.kw));
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      for (int64_t kx = 0; kx < p.kw; ++kx) {
        offsets.push_back(static_cast<size_t>((c * g.hp + ky * p.dh) * g.wp + kx * p.dw));
      }
    }
  }
  return offsets;
}

// One image's channels into planes of [hp, wp]: input (iy, ix) at (iy + ph, ix + pw),
// zeros around (and in the slack after the last plane, written once by the caller).
void PadImage(const float* image, const Plane2d& p, const GatheredPlane& g, int64_t channels, float* padded) {
  const int64_t x_begin = std::max<int64_t>(0, -p.pw), x_end = std::min(p.iw, g.wp - p.pw);
  for (int64_t c = 0; c < channels; ++c) {
    const float* plane = image + c * p.ih * p.iw;
    for (int64_t y = 0; y < g.hp; ++y) {
      float* row = padded + (c * g.hp + y) * g.wp;
      const int64_t iy = y - p.ph;
      if (iy < 0 || iy >= p.ih || x_begin >= x_end) {
        std::fill(row, row + g.wp, 0.0f);
        continue;
      }
      std::fill(row, row + x_begin + p.pw, 0.0f);
      std::copy(plane + iy * p.iw + x_begin, plane + iy * p.iw + x_end, row + x_begin + p.pw);
      std::fill(row + x_end + p.pw, row + g.wp, 0.0f);
    }
  }
}

void ConvGathered(const Tensor& x, const Tensor& wt, const ConvShape& c, const OutputPlanes& planes, Tensor& out) {
  const Plane2d& p = c.p;
  const GatheredPlane g = GatheredPlaneOf(p, c.cpg);
  const std::vector<size_t> offsets = TapOffsets(p, g, c.cpg);
  // Neither is zero-filled: PadImage writes every plane (the slack after them is
  // zeroed here), the product every column of y.
  ScratchFloats padded(g.image_floats), y(c.fpg * g.columns);
  const size_t planes_floats = static_cast<size_t>(c.cpg * g.hp * g.wp);
  std::fill(padded.data() + planes_floats, padded.data() + g.image_floats, 0.0f);
  ForEachGroup(x, wt, c, out, [&](const float* image, const float* filter, float* result, size_t group) {
    PadImage(image, p, g, c.cpg, padded.data());
    // The bias and Relu are applied as the product is stored; the planes are copied.
    MultiplyGathered(filter, c.k, c.fpg, padded.data(), offsets, g.columns, y.data(), g.columns,
                     planes.bias != nullptr ? planes.bias + group * c.fpg : nullptr, planes.relu);
    for (size_t m = 0; m < c.fpg; ++m) {
      for (int64_t oy = 0; oy < p.oh; ++oy) {
        std::copy_n(y.data() + m * g.columns + static_cast<size_t>(oy * g.wp), p.ow,
                    result + m * c.positions + static_cast<size_t>(oy * p.ow));
      }
    }
  });
}

}  // namespace

// Conv, then with `relu` its Relu (FuseConvRelu). Float Conv over one or two spatial
// axes is a packed product per group, the filters [filters, k] times the im2col matrix
// [k, positions]: gathered from the padded image when the stride is 1, else written.
void ConvFloat(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out, bool relu) {
  const auto reference = [&] {
    ConvReference(node, in, out);
    if (relu) ReluInPlace(out[0]);
  };
  const Tensor& x = Required(node, in, 0);
  const Tensor& wt = Required(node, in, 1);
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  if (x.type() != DataType::kFloat || (x.rank() != 3 && x.rank() != 4) || wt.rank() != x.rank() ||
      wt.type() != x.type() || (bias != nullptr && bias->type() != x.type()))
    return reference();
  const int64_t group = node.Int("group", 1);
  const int64_t channels = x.dim(1), filters = wt.dim(0);
  if (group <= 0 || channels % group != 0 || filters % group != 0 || wt.dim(1) != channels / group ||
      (bias != nullptr && bias->size() != static_cast<size_t>(filters)))
    return reference();  // which names what is wrong
  const Window w = WindowOf(node, x.shape(), Shape(wt.shape().begin() + 2, wt.shape().end()), false);
  const Plane2d p = PlaneOf(w);
  Shape shape{x.dim(0), filters};
  shape.insert(shape.end(), w.out.begin(), w.out.end());
  out[0] = Tensor::Uninitialized(x.type(), shape);  // each output plane is written below
  const ConvShape c{p,
                    group,
                    channels / group,
                    static_cast<size_t>(filters / group),
                    static_cast<size_t>(channels / group * p.kh * p.kw),
                    static_cast<size_t>(p.oh * p.ow)};
  // The im2col matrix holds k rows of at least 16 columns: a hostile filter of
  // millions of taps stays with the reference, which allocates nothing for it.
  if (out[0].size() == 0 || c.k == 0 || c.k * kPackWidth > (size_t{1} << 22)) return reference();
  const OutputPlanes planes{bias != nullptr ? bias->data<float>().data() : nullptr, relu};
  if (GatheredFits(p)) {
    ConvGathered(x, wt, c, planes, out[0]);
  } else {
    ConvIm2Col(x, wt, c, planes, out[0]);
  }
}

namespace {

void Conv(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  ConvFloat(node, in, out, false);
}

void ConvRelu(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  ConvFloat(node, in, out, true);
}

// Where ConvTranspose's output lies: its spatial size and the pads cut from it (an
// `output_shape` or SAME auto_pad sets the pads; a negative end pad grows the output).
struct TransposeGeometry {
  std::vector<int64_t> stride, dil, pads;  // pads: begins then ends
  Shape out;                               // spatial
};

TransposeGeometry TransposeGeometryOf(const Node& node, const Shape& in_sp, const Shape& kernel) {
  const size_t n = in_sp.size();
  TransposeGeometry g;
  g.stride = ListOr(node, "strides", n, 1);
  g.dil = ListOr(node, "dilations", n, 1);
  const auto extra = ListOr(node, "output_padding", n, 0);
  g.pads = ListOr(node, "pads", 2 * n, 0);
  const auto out_shape = node.IntList("output_shape");
  if (!out_shape.empty() && out_shape.size() < n) {
    throw Error(ErrorCode::Model, "ConvTranspose's output_shape has fewer values than spatial axes");
  }
  const std::string auto_pad = node.String("auto_pad", "NOTSET");
  auto& stride = g.stride;
  auto& dil = g.dil;
  auto& pads = g.pads;
  g.out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (stride[i] <= 0 || dil[i] <= 0 || stride[i] > (1 << 20) || dil[i] > (1 << 20) || kernel[i] > (1 << 20) ||
        extra[i] < 0 || extra[i] > (1 << 20) || pads[i] < 0 || pads[i + n] < 0 || pads[i] > (1 << 20) ||
        pads[i + n] > (1 << 20)) {
      throw Error(ErrorCode::Model, "ConvTranspose's strides, dilations, pads must be positive and reasonable");
    }
    const int64_t full = stride[i] * (in_sp[i] - 1) + extra[i] + (kernel[i] - 1) * dil[i] + 1;
    int64_t want = -1;
    if (!out_shape.empty()) {
      want = out_shape[out_shape.size() - n + i];
    } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      want = in_sp[i] * stride[i];
    }
    if (want >= 0) {
      // A negative total grows the output at its end (zeros plus the bias there).
      const int64_t total = full - want;
      const bool upper = auto_pad != "SAME_LOWER";
      pads[i] = total <= 0 ? 0 : (upper ? total / 2 : total - total / 2);
      pads[i + n] = total - pads[i];
    }
    g.out[i] = full - pads[i] - pads[i + n];
    if (g.out[i] < 0) throw Error(ErrorCode::Model, "ConvTranspose's output would be empty");
  }
  return g;
}

// The transpose of Conv: each input element spreads x * w over the output window.
void ConvTranspose(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& wt = Required(node, in, 1);
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  if (x.rank() < 3 || wt.rank() != x.rank() || wt.type() != x.type()) {
    throw Error(ErrorCode::Model, "ConvTranspose's weight does not match its input");
  }
  const size_t n = x.rank() - 2;
  const int64_t group = node.Int("group", 1), channels = x.dim(1);
  if (group <= 0 || channels % group != 0 || wt.dim(0) != channels)
    throw Error(ErrorCode::Model, "ConvTranspose's groups");
  const int64_t per_group_out = wt.dim(1), filters = per_group_out * group, per_group_in = channels / group;
  if (bias != nullptr && bias->size() != static_cast<size_t>(filters))
    throw Error(ErrorCode::Model, "ConvTranspose's bias");
  const Shape in_sp(x.shape().begin() + 2, x.shape().end()), kernel(wt.shape().begin() + 2, wt.shape().end());
  const TransposeGeometry geometry = TransposeGeometryOf(node, in_sp, kernel);
  const auto& stride = geometry.stride;
  const auto& dil = geometry.dil;
  const auto& pads = geometry.pads;
  const Shape& out_sp = geometry.out;
  Shape shape{x.dim(0), filters};
  shape.insert(shape.end(), out_sp.begin(), out_sp.end());
  out[0] = Tensor(x.type(), shape);
  const size_t plane = ElementCount(in_sp), out_plane = ElementCount(out_sp), taps = ElementCount(kernel);
  const auto ostr = Strides(out_sp);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    CheckFloat<T>(node, x);
    if constexpr (std::is_floating_point_v<T>) {
      auto px = x.data<T>();
      auto pw = wt.data<T>();
      std::vector<double> acc(out[0].size(), 0.0);
      std::vector<int64_t> pos(n, 0), k(n);  // pos: input element p's position, row-major
      for (int64_t b = 0; b < x.dim(0); ++b) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t g = c / per_group_in;
          for (size_t p = 0; p < plane; ++p, NextIndex(pos, in_sp)) {
            const double v = static_cast<double>(px[static_cast<size_t>(b * channels + c) * plane + p]);
            std::fill(k.begin(), k.end(), 0);
            for (size_t t = 0; t < taps; ++t) {
              size_t at = 0;
              bool inside = true;
              for (size_t i = 0; i < n; ++i) {
                const int64_t o = pos[i] * stride[i] + k[i] * dil[i] - pads[i];
                if (o < 0 || o >= out_sp[i])
                  inside = false;
                else
                  at += static_cast<size_t>(o) * ostr[i];
              }
              if (inside) {
                for (int64_t m = 0; m < per_group_out; ++m) {
                  const int64_t f = g * per_group_out + m;
                  acc[static_cast<size_t>(b * filters + f) * out_plane + at] +=
                      v * static_cast<double>(pw[static_cast<size_t>(c * per_group_out + m) * taps + t]);
                }
              }
              NextIndex(k, kernel);
            }
          }
        }
      }
      auto dst = out[0].data<T>();
      for (size_t i = 0; i < dst.size(); ++i) {
        const double b = bias != nullptr ? ValueAt(*bias, (i / out_plane) % static_cast<size_t>(filters)) : 0.0;
        dst[i] = static_cast<T>(acc[i] + b);
      }
    }
  });
}

// One window of Pool2d at output (oy, ox), bounds checked.
template <bool kMax>
float PoolWindow(const float* xc, const Plane2d& p, int64_t oy, int64_t ox) {
  float acc = kMax ? -std::numeric_limits<float>::infinity() : 0.0f;
  size_t count = 0;
  for (int64_t ky = 0; ky < p.kh; ++ky) {
    const int64_t iy = oy * p.sh - p.ph + ky * p.dh;
    if (iy < 0 || iy >= p.ih) continue;
    for (int64_t kx = 0; kx < p.kw; ++kx) {
      const int64_t ix = ox * p.sw - p.pw + kx * p.dw;
      if (ix < 0 || ix >= p.iw) continue;
      const float v = xc[iy * p.iw + ix];
      if (kMax) {
        if (count == 0 || v > acc) acc = v;
      } else {
        acc += v;
      }
      ++count;
    }
  }
  return kMax ? acc : acc / static_cast<float>(std::max<size_t>(count, 1));
}

// Windows [lo, hi) of output row oy, all inside the plane: no bounds to check, the same
// arithmetic in the same order (KH, KW: the window when known at compile time, else 0).
template <bool kMax, int KH, int KW>
void PoolInterior(const float* xc, const Plane2d& p, int64_t oy, int64_t lo, int64_t hi, float* y) {
  const int64_t kh = KH > 0 ? KH : p.kh, kw = KW > 0 ? KW : p.kw;
  const float* top = xc + (oy * p.sh - p.ph) * p.iw - p.pw;
  for (int64_t ox = lo; ox < hi; ++ox) {
    const float* w = top + ox * p.sw;
    float acc = kMax ? w[0] : 0.0f;
    for (int64_t ky = 0; ky < kh; ++ky) {
      for (int64_t kx = 0; kx < kw; ++kx) {
        const float v = w[ky * p.dh * p.iw + kx * p.dw];
        if (kMax) {
          acc = v > acc ? v : acc;  // the first value too: v > v is false
        } else {
          acc += v;
        }
      }
    }
    y[ox] = kMax ? acc : acc / static_cast<float>(kh * kw);
  }
}

// The most common pooling, 2x2 windows two columns apart without dilation: the same
// arithmetic in the same order as PoolInterior, with constant offsets so that it
// vectorizes.
template <bool kMax>
void HalvingInterior(const float* xc, const Plane2d& p, int64_t oy, int64_t lo, int64_t hi, float* y) {
  const float* top = xc + (oy * p.sh - p.ph) * p.iw - p.pw;
  const float* bottom = top + p.iw;
  for (int64_t ox = lo; ox < hi; ++ox) {
    const float a = top[2 * ox], b = top[2 * ox + 1], c = bottom[2 * ox], d = bottom[2 * ox + 1];
    if constexpr (kMax) {
      float acc = a;
      acc = b > acc ? b : acc;
      acc = c > acc ? c : acc;
      y[ox] = d > acc ? d : acc;
    } else {
      y[ox] = (((0.0f + a) + b) + c + d) / 4.0f;
    }
  }
}

// Float pooling over one or two spatial axes: the reference's arithmetic (the first
// value inside the window, then every greater one; or the mean of the values inside),
// without its per-window index vectors; windows wholly inside the plane unchecked.
template <bool kMax>
void Pool2d(const Tensor& x, const Plane2d& p, Tensor& out) {
  auto px = x.data<float>();
  auto dst = out.data<float>();
  const auto plane = static_cast<size_t>(p.ih * p.iw), out_plane = static_cast<size_t>(p.oh * p.ow);
  // Output columns [lo, hi) and rows [top, bottom) whose windows lie inside the plane.
  const int64_t lo = std::min(p.ow, (p.pw + p.sw - 1) / p.sw);
  const int64_t span_x = p.iw - 1 - (p.kw - 1) * p.dw + p.pw;
  const int64_t hi = span_x < 0 ? lo : std::clamp(span_x / p.sw + 1, lo, p.ow);
  const int64_t top = std::min(p.oh, (p.ph + p.sh - 1) / p.sh);
  const int64_t span_y = p.ih - 1 - (p.kh - 1) * p.dh + p.ph;
  const int64_t bottom = span_y < 0 ? top : std::clamp(span_y / p.sh + 1, top, p.oh);
  const bool halving = p.kh == 2 && p.kw == 2 && p.sw == 2 && p.dh == 1 && p.dw == 1;
  const auto interior = halving                  ? HalvingInterior<kMax>
                        : p.kh == 2 && p.kw == 2 ? PoolInterior<kMax, 2, 2>
                        : p.kh == 3 && p.kw == 3 ? PoolInterior<kMax, 3, 3>
                                                 : PoolInterior<kMax, 0, 0>;
  for (size_t nc = 0; nc < static_cast<size_t>(x.dim(0) * x.dim(1)); ++nc) {
    const float* xc = px.data() + nc * plane;
    float* y = dst.data() + nc * out_plane;
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      float* row = y + oy * p.ow;
      if (oy < top || oy >= bottom) {
        for (int64_t ox = 0; ox < p.ow; ++ox) row[ox] = PoolWindow<kMax>(xc, p, oy, ox);
        continue;
      }
      for (int64_t ox = 0; ox < lo; ++ox) row[ox] = PoolWindow<kMax>(xc, p, oy, ox);
      interior(xc, p, oy, lo, hi, row);
      for (int64_t ox = hi; ox < p.ow; ++ox) row[ox] = PoolWindow<kMax>(xc, p, oy, ox);
    }
  }
}

template <bool kMax>
void PoolReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto kernel = node.IntList("kernel_shape");
  if (kernel.empty()) throw Error(ErrorCode::Model, fmt::format("{} needs kernel_shape", node.op));
  const Window w = WindowOf(node, x.shape(), kernel, node.Int("ceil_mode", 0) != 0);
  const bool include_pad = node.Int("count_include_pad", 0) != 0;
  Shape shape{x.dim(0), x.dim(1)};
  shape.insert(shape.end(), w.out.begin(), w.out.end());
  out[0] = Tensor(x.type(), shape);
  const bool indices = out.size() > 1 && node.outputs[1] >= 0;
  if (indices && node.Int("storage_order", 0) != 0) throw UnsupportedError("MaxPool indices in column-major order");
  if (indices) out[1] = Tensor(DataType::kInt64, shape);
  const auto strides = Strides(w.in);
  const size_t plane = ElementCount(w.in), out_plane = ElementCount(w.out);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_same_v<T, bool>) {
      throw Error(ErrorCode::Model, fmt::format("{} of bool elements", node.op));
    } else {
      auto px = x.data<T>();
      auto dst = out[0].data<T>();
      for (int64_t nc = 0; nc < x.dim(0) * x.dim(1); ++nc) {
        const T* xc = px.data() + static_cast<size_t>(nc) * plane;
        ForEachWindow(w, [&](size_t o, const std::vector<int64_t>& start) {
          double acc = kMax ? -std::numeric_limits<double>::infinity() : 0.0;
          size_t count = 0, arg = 0;
          const size_t padded = ForEachTap(w, start, strides, [&](size_t, size_t offset) {
            const double v = static_cast<double>(xc[offset]);
            if (kMax) {
              if (count == 0 || v > acc) {
                acc = v;
                arg = offset;
              }
            } else {
              acc += v;
            }
            ++count;
          });
          if (!kMax) acc /= static_cast<double>(include_pad ? padded : std::max<size_t>(count, 1));
          dst[static_cast<size_t>(nc) * out_plane + o] = FromDouble<T>(acc);
          if (indices)
            out[1].data<int64_t>()[static_cast<size_t>(nc) * out_plane + o] =
                static_cast<int64_t>(static_cast<size_t>(nc) * plane + arg);
        });
      }
    }
  });
}

// Float pooling over one or two spatial axes without indices (nor padding counted
// into a mean) runs Pool2d; everything else the reference.
template <bool kMax>
void Pool(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto kernel = node.IntList("kernel_shape");
  const bool indices = out.size() > 1 && node.outputs.size() > 1 && node.outputs[1] >= 0;
  if (x.type() != DataType::kFloat || (x.rank() != 3 && x.rank() != 4) || indices || kernel.empty() ||
      (!kMax && node.Int("count_include_pad", 0) != 0))
    return PoolReference<kMax>(node, in, out);
  const Window w = WindowOf(node, x.shape(), kernel, node.Int("ceil_mode", 0) != 0);
  Shape shape{x.dim(0), x.dim(1)};
  shape.insert(shape.end(), w.out.begin(), w.out.end());
  out[0] = Tensor::Uninitialized(x.type(), shape);  // Pool2d writes each element
  Pool2d<kMax>(x, PlaneOf(w), out[0]);
}

}  // namespace

void FuseConvRelu(Graph& g) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& conv = g.nodes[i];
    if (!conv.domain.empty() || conv.op != "Conv" || conv.outputs.size() != 1) continue;
    const int r = SoleReader(g, conv.outputs[0]);
    if (r < 0) continue;
    const Node& relu = g.nodes[static_cast<size_t>(r)];
    if (!relu.domain.empty() || relu.op != "Relu" || relu.outputs.size() != 1) continue;
    Node fused = conv;
    fused.op = "Conv+Relu";
    fused.kernel = ConvRelu;
    fused.outputs = relu.outputs;
    g.nodes.erase(g.nodes.begin() + r);  // readers come after writers: r > i
    g.nodes[i] = std::move(fused);
  }
}

void MaxPoolReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  PoolReference<true>(node, in, out);
}

void AveragePoolReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  PoolReference<false>(node, in, out);
}

namespace {

template <bool kMax>
void GlobalPool(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.rank() < 3) throw Error(ErrorCode::Model, fmt::format("{} takes [N, C, spatial...]", node.op));
  Shape shape{x.dim(0), x.dim(1)};
  shape.resize(x.rank(), 1);
  out[0] = Tensor(x.type(), shape);
  const size_t plane = x.size() / std::max<size_t>(out[0].size(), 1);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    auto px = x.data<T>();
    auto dst = out[0].data<T>();
    for (size_t nc = 0; nc < out[0].size(); ++nc) {
      if constexpr (kMax) {
        double acc = -std::numeric_limits<double>::infinity();
        for (size_t i = 0; i < plane; ++i) acc = std::max(acc, static_cast<double>(px[nc * plane + i]));
        dst[nc] = FromDouble<T>(acc);
      } else {
        // In double, in vector lanes (one chain of dependent adds was most of its time).
        const double sum = plane == 0 ? 0.0 : SumLanes<double>(px.data() + nc * plane, plane);
        dst[nc] = FromDouble<T>(sum / static_cast<double>(std::max<size_t>(plane, 1)));
      }
    }
  });
}

// BatchNormalization's checks (inference only; scale, B, mean and var of C values
// each); returns C.
size_t BatchNormChannels(const Node& node, std::span<const Tensor* const> in, size_t outputs) {
  const Tensor& x = Required(node, in, 0);
  if (node.Int("training_mode", 0) != 0 || (node.opset < 7 && node.Int("is_test", 0) == 0) || outputs > 1) {
    throw UnsupportedError("BatchNormalization in training mode");
  }
  if (node.opset < 9 && node.Int("spatial", 1) == 0) throw UnsupportedError("BatchNormalization with spatial = 0");
  if (x.rank() < 2) throw Error(ErrorCode::Model, "BatchNormalization takes [N, C, ...]");
  const size_t channels = static_cast<size_t>(x.dim(1));
  for (size_t i = 1; i <= 4; ++i) {
    if (Required(node, in, i).size() != channels)
      throw Error(ErrorCode::Model, "BatchNormalization's parameters do not match C");
  }
  return channels;
}

// Elements per (image, channel) plane of x [N, C, ...].
size_t PlaneSize(const Tensor& x, size_t channels) {
  return x.size() / std::max<size_t>(static_cast<size_t>(x.dim(0)) * channels, 1);
}

}  // namespace

// Per channel c: y = (x - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + bias[c].
void BatchNormalizationReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const size_t channels = BatchNormChannels(node, in, out.size());
  const Tensor &scale = *in[1], &bias = *in[2], &mean = *in[3], &var = *in[4];
  const double epsilon = node.Float("epsilon", 1e-5f);
  out[0] = Tensor(x.type(), x.shape());
  const size_t plane = PlaneSize(x, channels);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    CheckFloat<T>(node, x);
    auto px = x.data<T>();
    auto dst = out[0].data<T>();
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t c = (i / plane) % channels;
      const double v = (static_cast<double>(px[i]) - ValueAt(mean, c)) / std::sqrt(ValueAt(var, c) + epsilon);
      dst[i] = FromDouble<T>(v * ValueAt(scale, c) + ValueAt(bias, c));
    }
  });
}

namespace {

// Float: per channel, scale / sqrt(var + epsilon) once (in double), then each plane in
// one pass of float operations the compiler vectorizes: y = (x - mean) * that + bias.
void BatchNormalization(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.type() != DataType::kFloat) return BatchNormalizationReference(node, in, out);
  const size_t channels = BatchNormChannels(node, in, out.size());
  const double epsilon = node.Float("epsilon", 1e-5f);
  std::vector<float> factor(channels), mean(channels), bias(channels);
  for (size_t c = 0; c < channels; ++c) {
    factor[c] = static_cast<float>(ValueAt(*in[1], c) / std::sqrt(ValueAt(*in[4], c) + epsilon));
    mean[c] = static_cast<float>(ValueAt(*in[3], c));
    bias[c] = static_cast<float>(ValueAt(*in[2], c));
  }
  out[0] = Tensor::Uninitialized(DataType::kFloat, x.shape());  // every element written below
  const size_t plane = PlaneSize(x, channels);
  const float* src = x.data<float>().data();
  float* dst = out[0].data<float>().data();
  for (size_t p = 0; p < x.size() / std::max<size_t>(plane, 1); ++p) {
    const size_t c = p % channels;
    const float f = factor[c], m = mean[c], b = bias[c];
    const float* xs = src + p * plane;
    float* ys = dst + p * plane;
    for (size_t i = 0; i < plane; ++i) ys[i] = (xs[i] - m) * f + b;
  }
}

// Normalizes each of `groups` runs of `len` elements; scale and bias by `param(i, k)`.
template <typename T, typename Param>
void NormalizeRuns(std::span<const T> x, std::span<T> y, size_t groups, size_t len, double epsilon, Param&& param,
                   double* means, double* inv_std) {
  for (size_t g = 0; g < groups; ++g) {
    const T* run = x.data() + g * len;
    const double mean = SumLanes<double>(run, len) / static_cast<double>(std::max<size_t>(len, 1));
    const double var = SquaredDeviationLanes<double>(run, len, mean) / static_cast<double>(std::max<size_t>(len, 1));
    const double inv = 1.0 / std::sqrt(var + epsilon);
    for (size_t k = 0; k < len; ++k) {
      const auto [scale, bias] = param(g, k);
      y[g * len + k] = static_cast<T>((static_cast<double>(x[g * len + k]) - mean) * inv * scale + bias);
    }
    if (means != nullptr) means[g] = mean;
    if (inv_std != nullptr) inv_std[g] = inv;
  }
}

void InstanceNormalization(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& scale = Required(node, in, 1);
  const Tensor& bias = Required(node, in, 2);
  if (x.rank() < 3) throw Error(ErrorCode::Model, "InstanceNormalization takes [N, C, spatial...]");
  const size_t channels = static_cast<size_t>(x.dim(1));
  if (scale.size() != channels || bias.size() != channels)
    throw Error(ErrorCode::Model, "scale and B must hold C values");
  out[0] = Tensor(x.type(), x.shape());
  const size_t groups = static_cast<size_t>(x.dim(0)) * channels, len = x.size() / std::max<size_t>(groups, 1);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    CheckFloat<T>(node, x);
    if constexpr (std::is_floating_point_v<T>) {
      NormalizeRuns<T>(
          x.data<T>(), out[0].data<T>(), groups, len, node.Float("epsilon", 1e-5f),
          [&](size_t g, size_t) { return std::pair(ValueAt(scale, g % channels), ValueAt(bias, g % channels)); },
          nullptr, nullptr);
    }
  });
}

// LayerNormalization's view of x: `groups` runs of `len` elements (the axes from `axis`
// on), and each run element's scale and bias, broadcast to the normalized axes.
struct LayerNormRuns {
  size_t axis = 0, groups = 1, len = 0;
  std::vector<double> scale, bias;
};

LayerNormRuns LayerNormParams(const Node& node, std::span<const Tensor* const> in) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& scale = Required(node, in, 1);
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  LayerNormRuns runs;
  runs.axis = NormalizeAxis(node.Int("axis", -1), x.rank());
  for (size_t i = 0; i < runs.axis; ++i) runs.groups *= static_cast<size_t>(x.dim(i));
  runs.len = runs.groups == 0 ? 0 : x.size() / runs.groups;
  const Shape trailing(x.shape().begin() + static_cast<int64_t>(runs.axis), x.shape().end());
  const auto sstr = BroadcastStrides(scale.shape(), trailing);
  const auto bstr = bias != nullptr ? BroadcastStrides(bias->shape(), trailing) : std::vector<size_t>{};
  if (BroadcastShapes(scale.shape(), trailing) != trailing ||
      (bias != nullptr && BroadcastShapes(bias->shape(), trailing) != trailing)) {
    throw Error(ErrorCode::Model, "LayerNormalization's scale or bias does not broadcast to the normalized axes");
  }
  runs.scale.resize(runs.len);
  runs.bias.assign(runs.len, 0.0);
  if (scale.size() == runs.len && (bias == nullptr || bias->size() == runs.len)) {
    // The whole normalized shape (leading 1s aside), as exporters write them: in order.
    for (size_t k = 0; k < runs.len; ++k) {
      runs.scale[k] = ValueAt(scale, k);
      if (bias != nullptr) runs.bias[k] = ValueAt(*bias, k);
    }
    return runs;
  }
  ForEachBroadcast(trailing, {sstr, bstr.empty() ? sstr : bstr}, [&](size_t k, const std::vector<size_t>& at) {
    runs.scale[k] = ValueAt(scale, at[0]);
    if (bias != nullptr) runs.bias[k] = ValueAt(*bias, at[1]);
  });
  return runs;
}

// The sum of f(v) over x[0..len): f of 16-float registers, two at a time (their adds
// independent), and of the floats past the last whole register. f takes a V16 or a
// float alike.
template <typename F>
float SumOfRuns(const float* x, size_t len, F f) {
  const size_t whole = len / 16 * 16;
  simd::V16 s0{}, s1{};
  size_t i = 0;
  for (; i + 32 <= whole; i += 32) {
    s0 += f(simd::Load(x + i));
    s1 += f(simd::Load(x + i + 16));
  }
  if (i < whole) s0 += f(simd::Load(x + i));
  float sum = simd::HorizontalSum(s0 + s1);
  for (i = whole; i < len; ++i) sum += f(x[i]);
  return sum;
}

// One run of LayerNormalization in float: the mean, then the variance (two passes: no
// cancellation), as ONNX's stash type float says; then y = (x - mean) * inv_std *
// scale + bias a register at a time.
void NormalizeRunFloat(const float* x, float* y, size_t len, const float* scale, const float* bias, double epsilon) {
  const float n = static_cast<float>(std::max<size_t>(len, 1));
  const float mean = SumOfRuns(x, len, [](auto v) { return v; }) / n;
  const float squares = SumOfRuns(x, len, [mean](auto v) {
    const auto d = v - mean;
    return d * d;
  });
  const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(squares / n) + epsilon));
  const simd::V16 m = simd::Broadcast(mean), vinv = simd::Broadcast(inv);
  const size_t whole = len / 16 * 16;
  for (size_t i = 0; i < whole; i += 16)
    simd::Store(y + i, (simd::Load(x + i) - m) * vinv * simd::Load(scale + i) + simd::Load(bias + i));
  for (size_t i = whole; i < len; ++i) y[i] = (x[i] - mean) * inv * scale[i] + bias[i];
}

// Float x, Y only: each run by NormalizeRunFloat.
void LayerNormalizationFloat(const Node& node, const Tensor& x, const LayerNormRuns& runs, Tensor& y) {
  const double epsilon = node.Float("epsilon", 1e-5f);
  std::vector<float> scale(runs.scale.begin(), runs.scale.end()), bias(runs.bias.begin(), runs.bias.end());
  y = Tensor::Uninitialized(DataType::kFloat, x.shape());  // every element written below
  const float* src = x.data<float>().data();
  float* dst = y.data<float>().data();
  for (size_t g = 0; g < runs.groups; ++g) {
    NormalizeRunFloat(src + g * runs.len, dst + g * runs.len, runs.len, scale.data(), bias.data(), epsilon);
  }
}

void LayerNormalization(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.type() != DataType::kFloat || out.size() > 1) return LayerNormalizationReference(node, in, out);
  LayerNormalizationFloat(node, x, LayerNormParams(node, in), out[0]);
}

}  // namespace

// Each run normalized in double; Mean and InvStdDev too when asked for, in the stash
// type (float unless told).
void LayerNormalizationReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const LayerNormRuns runs = LayerNormParams(node, in);
  out[0] = Tensor::Uninitialized(x.type(), x.shape());  // NormalizeRuns writes each element
  Shape stat = x.shape();
  for (size_t i = runs.axis; i < stat.size(); ++i) stat[i] = 1;
  std::vector<double> means(runs.groups), inv(runs.groups);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    CheckFloat<T>(node, x);
    if constexpr (std::is_floating_point_v<T>) {
      NormalizeRuns<T>(
          x.data<T>(), out[0].data<T>(), runs.groups, runs.len, node.Float("epsilon", 1e-5f),
          [&](size_t, size_t k) { return std::pair(runs.scale[k], runs.bias[k]); }, means.data(), inv.data());
    }
  });
  const auto stash = static_cast<DataType>(node.Int("stash_type", 1));
  for (size_t k = 1; k < out.size() && k < 3; ++k) {
    if (!IsSupportedType(static_cast<int>(stash)) || (stash != DataType::kFloat && stash != DataType::kDouble)) {
      throw UnsupportedError("LayerNormalization's stash_type");
    }
    out[k] = Tensor(stash, stat);
    for (size_t g = 0; g < runs.groups; ++g) {
      const double v = k == 1 ? means[g] : inv[g];
      if (stash == DataType::kFloat)
        out[k].data<float>()[g] = static_cast<float>(v);
      else
        out[k].data<double>()[g] = v;
    }
  }
}

namespace {

void Pad(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  std::vector<int64_t> pads;
  double value = 0;
  if (node.opset < 11) {
    pads = node.IntList("pads");
    value = node.Float("value", 0);
  } else {
    pads = Ints(Required(node, in, 1));
    if (in.size() > 2 && in[2] != nullptr && in[2]->size() > 0) value = ValueAt(*in[2], 0);
  }
  if (in.size() > 3 && in[3] != nullptr) throw UnsupportedError("Pad with axes");
  const size_t rank = x.rank();
  if (pads.size() != 2 * rank) throw Error(ErrorCode::Model, "Pad's pads must hold two values per axis");
  const std::string mode = node.String("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge")
    throw Error(ErrorCode::Model, fmt::format("Pad mode '{}'", mode));
  Shape shape(rank);
  for (size_t i = 0; i < rank; ++i) {
    if (std::abs(pads[i]) > (int64_t{1} << 30) || std::abs(pads[i + rank]) > (int64_t{1} << 30)) {
      throw Error(ErrorCode::Model, "Pad by too much");
    }
    shape[i] = x.dim(i) + pads[i] + pads[i + rank];
    if (shape[i] < 0) throw Error(ErrorCode::Model, "Pad crops more than the input holds");
    if (mode != "constant" && x.dim(i) == 0 && shape[i] > 0) throw Error(ErrorCode::Model, "Pad of an empty axis");
    if (mode == "reflect" && (pads[i] >= x.dim(i) || pads[i + rank] >= x.dim(i)) &&
        (pads[i] > 0 || pads[i + rank] > 0)) {
      if (x.dim(i) < 2) throw Error(ErrorCode::Model, "reflect Pad of an axis shorter than 2");
    }
  }
  out[0] = Tensor(x.type(), shape);
  const auto src = Strides(x.shape());
  Tensor fill(x.type(), {});
  if (x.type() != DataType::kString) {
    VisitNumeric(x.type(), [&](auto zero) { fill.data<decltype(zero)>()[0] = FromDouble<decltype(zero)>(value); });
  }
  std::vector<int64_t> index(rank, 0);
  for (size_t n = 0; n < out[0].size(); ++n) {
    size_t from = 0;
    bool outside = false;
    for (size_t i = 0; i < rank; ++i) {
      int64_t p = index[i] - pads[i];
      const int64_t d = x.dim(i);
      if (p < 0 || p >= d) {
        if (mode == "constant") {
          outside = true;
          break;
        }
        if (mode == "edge") {
          p = std::clamp<int64_t>(p, 0, d - 1);
        } else {  // reflect, possibly several times over
          const int64_t period = 2 * (d - 1);
          p = ((p % period) + period) % period;
          if (p >= d) p = period - p;
        }
      }
      from += static_cast<size_t>(p) * src[i];
    }
    if (outside) {
      CopyElement(fill, 0, out[0], n);
    } else {
      CopyElement(x, from, out[0], n);
    }
    NextIndex(index, shape);
  }
}

}  // namespace

void AddConvKernels(std::vector<KernelEntry>& t) {
  t.push_back({"Conv", 1, Conv});
  t.push_back({"ConvTranspose", 1, ConvTranspose});
  t.push_back({"MaxPool", 1, Pool<true>});
  t.push_back({"AveragePool", 1, Pool<false>});
  t.push_back({"GlobalAveragePool", 1, GlobalPool<false>});
  t.push_back({"GlobalMaxPool", 1, GlobalPool<true>});
  t.push_back({"BatchNormalization", 1, BatchNormalization});
  t.push_back({"InstanceNormalization", 6, InstanceNormalization});
  t.push_back({"LayerNormalization", 17, LayerNormalization});
  t.push_back({"Pad", 2, Pad});
}

}  // namespace runnel::tensor
