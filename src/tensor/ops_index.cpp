// Operators that select or place elements by index or position: Trilu, CumSum, TopK,
// OneHot, DepthToSpace, SpaceToDepth, Compress, NonZero, GatherND, ScatterElements,
// ScatterND, EyeLike, CastLike.
#include <algorithm>
#include <numeric>

#include "kernels.hpp"

namespace runnel::tensor {
namespace {

// The last two axes keep the upper (or lower) triangle from diagonal k on.
void Trilu(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.rank() < 2) throw Error(ErrorCode::Model, "Trilu takes at least 2 axes");
  const int64_t k = in.size() > 1 && in[1] != nullptr ? IntAt(*in[1], 0) : 0;
  const bool upper = node.Int("upper", 1) != 0;
  out[0] = Tensor(x.type(), x.shape());
  const int64_t rows = x.dim(x.rank() - 2), cols = x.dim(x.rank() - 1);
  for (size_t i = 0; i < x.size(); ++i) {
    const auto r = static_cast<int64_t>((i / static_cast<size_t>(cols)) % static_cast<size_t>(rows));
    const auto c = static_cast<int64_t>(i % static_cast<size_t>(cols));
    const bool keep = upper ? c - r >= k : c - r <= k;
    if (keep) CopyElement(x, i, out[0], i);
  }
}

void CumSum(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const size_t axis = NormalizeAxis(IntAt(Required(node, in, 1), 0), x.rank());
  const bool exclusive = node.Int("exclusive", 0) != 0, reverse = node.Int("reverse", 0) != 0;
  out[0] = Tensor(x.type(), x.shape());
  const auto strides = Strides(x.shape());
  const size_t len = static_cast<size_t>(x.dim(axis)), step = strides[axis];
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    auto src = x.data<T>();
    auto dst = out[0].data<T>();
    for (size_t i = 0; i < x.size(); ++i) {
      if ((i / step) % len != 0) continue;  // i starts a run along the axis
      double acc = 0;
      for (size_t j = 0; j < len; ++j) {
        const size_t at = i + (reverse ? len - 1 - j : j) * step;
        if (exclusive) {
          dst[at] = FromDouble<T>(acc);
          acc += static_cast<double>(src[at]);
        } else {
          acc += static_cast<double>(src[at]);
          dst[at] = FromDouble<T>(acc);
        }
      }
    }
  });
}

void TopK(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const int64_t k = node.opset < 10 ? node.Int("k", 1) : IntAt(Required(node, in, 1), 0);
  const size_t axis = NormalizeAxis(node.Int("axis", -1), x.rank());
  const bool largest = node.Int("largest", 1) != 0;
  if (k < 0 || k > x.dim(axis)) throw Error(ErrorCode::Model, fmt::format("TopK of {} from {}", k, x.dim(axis)));
  Shape shape = x.shape();
  shape[axis] = k;
  out[0] = Tensor(x.type(), shape);
  Tensor indices(DataType::kInt64, shape);
  const auto strides = Strides(x.shape()), ostrides = Strides(shape);
  const size_t len = static_cast<size_t>(x.dim(axis)), step = strides[axis];
  std::vector<size_t> order(len);
  for (size_t i = 0; i < x.size(); ++i) {
    if ((i / step) % len != 0) continue;
    std::iota(order.begin(), order.end(), size_t{0});
    // Ties keep the lower index first, as ONNX specifies.
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const double va = ValueAt(x, i + a * step), vb = ValueAt(x, i + b * step);
      return largest ? va > vb : va < vb;
    });
    // The run's first output element: same outer and inner position, axis index 0.
    const size_t outer = i / (step * len), inner = i % step;
    const size_t base = outer * ostrides[axis] * static_cast<size_t>(k) + inner;
    for (size_t j = 0; j < static_cast<size_t>(k); ++j) {
      CopyElement(x, i + order[j] * step, out[0], base + j * ostrides[axis]);
      indices.data<int64_t>()[base + j * ostrides[axis]] = static_cast<int64_t>(order[j]);
    }
  }
  if (out.size() > 1) out[1] = std::move(indices);
}

void OneHot(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& indices = Required(node, in, 0);
  const int64_t depth = static_cast<int64_t>(ValueAt(Required(node, in, 1), 0));
  const Tensor& values = Required(node, in, 2);
  if (depth <= 0 || depth > static_cast<int64_t>(kMaxElements)) throw Error(ErrorCode::Model, "OneHot's depth");
  if (values.size() != 2) throw Error(ErrorCode::Model, "OneHot's values must hold [off, on]");
  const size_t rank = indices.rank() + 1;
  const size_t axis = NormalizeAxis(node.Int("axis", -1), rank);
  Shape shape = indices.shape();
  shape.insert(shape.begin() + static_cast<int64_t>(axis), depth);
  out[0] = Tensor(values.type(), shape);
  const auto strides = Strides(shape);
  size_t inner = 1;
  for (size_t i = axis + 1; i < rank; ++i) inner *= static_cast<size_t>(shape[i]);
  for (size_t i = 0; i < out[0].size(); ++i) CopyElement(values, 0, out[0], i);
  for (size_t i = 0; i < indices.size(); ++i) {
    double v = ValueAt(indices, i);
    if (v < 0) v += static_cast<double>(depth);
    if (v < 0 || v >= static_cast<double>(depth)) continue;  // out of range: all off
    const size_t outer = i / inner, rest = i % inner;
    const size_t at =
        outer * strides[axis] * static_cast<size_t>(depth) + static_cast<size_t>(v) * strides[axis] + rest;
    CopyElement(values, 1, out[0], at);
  }
}

// [N, C, H, W] <-> [N, C*b*b, H/b, W/b]: blocks of the spatial plane to channels.
template <bool kToDepth>
void SpaceDepth(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const int64_t b = node.Int("blocksize", 0);
  if (x.rank() != 4 || b <= 0 || b > (1 << 15))
    throw Error(ErrorCode::Model, fmt::format("{} of {}", node.op, ShapeText(x.shape())));
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const bool crd = node.String("mode", "DCR") == "CRD";
  Shape shape;
  if (kToDepth) {
    if (h % b != 0 || w % b != 0) throw Error(ErrorCode::Model, "SpaceToDepth of a plane not divisible by the block");
    shape = {n, c * b * b, h / b, w / b};
  } else {
    if (c % (b * b) != 0) throw Error(ErrorCode::Model, "DepthToSpace of channels not divisible by block^2");
    shape = {n, c / (b * b), h * b, w * b};
  }
  out[0] = Tensor(x.type(), shape);
  // Walk the large (spatial) side; map each of its elements to the depth side.
  const Shape& sp = kToDepth ? x.shape() : shape;  // [N, C', H', W'] with C' small
  const int64_t cs = sp[1], hs = sp[2], ws = sp[3];
  for (int64_t in_n = 0; in_n < n; ++in_n) {
    for (int64_t ch = 0; ch < cs; ++ch) {
      for (int64_t y = 0; y < hs; ++y) {
        for (int64_t xx = 0; xx < ws; ++xx) {
          const int64_t by = y % b, bx = xx % b;
          const int64_t depth_c = kToDepth || !crd ? (by * b + bx) * cs + ch : ch * b * b + by * b + bx;
          const auto spatial = static_cast<size_t>(((in_n * cs + ch) * hs + y) * ws + xx);
          const auto depth =
              static_cast<size_t>(((in_n * cs * b * b + depth_c) * (hs / b) + y / b) * (ws / b) + xx / b);
          if (kToDepth) {
            CopyElement(x, spatial, out[0], depth);
          } else {
            CopyElement(x, depth, out[0], spatial);
          }
        }
      }
    }
  }
}

void Compress(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& cond = Required(node, in, 1);
  const auto* axis_attr = node.Find("axis");
  Tensor flat = x;
  if (axis_attr == nullptr) flat.Reshape({static_cast<int64_t>(x.size())});
  const size_t axis = axis_attr == nullptr ? 0 : NormalizeAxis(axis_attr->i, x.rank());
  std::vector<int64_t> keep;
  for (size_t i = 0; i < cond.size() && i < static_cast<size_t>(flat.dim(axis)); ++i) {
    if (ValueAt(cond, i) != 0) keep.push_back(static_cast<int64_t>(i));
  }
  Shape shape = flat.shape();
  shape[axis] = static_cast<int64_t>(keep.size());
  out[0] = Tensor(x.type(), shape);
  size_t outer = 1, inner = 1;
  for (size_t i = 0; i < axis; ++i) outer *= static_cast<size_t>(flat.dim(i));
  for (size_t i = axis + 1; i < flat.rank(); ++i) inner *= static_cast<size_t>(flat.dim(i));
  size_t at = 0;
  for (size_t o = 0; o < outer; ++o) {
    for (int64_t k : keep) {
      const size_t base = (o * static_cast<size_t>(flat.dim(axis)) + static_cast<size_t>(k)) * inner;
      for (size_t j = 0; j < inner; ++j) CopyElement(flat, base + j, out[0], at++);
    }
  }
}

void NonZero(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  std::vector<size_t> hits;
  for (size_t i = 0; i < x.size(); ++i) {
    if (ValueAt(x, i) != 0) hits.push_back(i);
  }
  const size_t rank = std::max<size_t>(x.rank(), 1);
  out[0] = Tensor(DataType::kInt64, {static_cast<int64_t>(x.rank()), static_cast<int64_t>(hits.size())});
  const auto strides = Strides(x.shape());
  auto dst = out[0].data<int64_t>();
  for (size_t h = 0; h < hits.size(); ++h) {
    for (size_t a = 0; a < x.rank() && a < rank; ++a) {
      dst[a * hits.size() + h] = static_cast<int64_t>((hits[h] / strides[a]) % static_cast<size_t>(x.dim(a)));
    }
  }
}

// The flat offset in `x` of index tuple `t` (`last` indices per tuple, negative ones
// counted from the end). Throws Error(Model) naming `op` for one out of range.
size_t TupleOffset(const std::vector<int64_t>& indices, size_t t, size_t last, const Tensor& x,
                   const std::vector<size_t>& strides, const char* op) {
  size_t base = 0;
  for (size_t a = 0; a < last; ++a) {
    int64_t v = indices[t * last + a];
    if (v < 0) v += x.dim(a);
    if (v < 0 || v >= x.dim(a)) throw Error(ErrorCode::Model, fmt::format("{} index out of range", op));
    base += static_cast<size_t>(v) * strides[a];
  }
  return base;
}

void GatherND(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& idx = Required(node, in, 1);
  const auto indices = Ints(idx);
  const int64_t batch_dims = node.Int("batch_dims", 0);
  if (batch_dims != 0) throw UnsupportedError("GatherND with batch_dims");
  if (idx.rank() == 0) throw Error(ErrorCode::Model, "GatherND's indices need a last axis");
  const auto last = static_cast<size_t>(idx.dim(idx.rank() - 1));
  if (last > x.rank()) throw Error(ErrorCode::Model, "GatherND's index tuples are longer than the data's rank");
  Shape shape(idx.shape().begin(), idx.shape().end() - 1);
  shape.insert(shape.end(), x.shape().begin() + static_cast<int64_t>(last), x.shape().end());
  out[0] = Tensor(x.type(), shape);
  const auto strides = Strides(x.shape());
  size_t slice = 1;
  for (size_t i = last; i < x.rank(); ++i) slice *= static_cast<size_t>(x.dim(i));
  const size_t tuples = last == 0 ? idx.size() : idx.size() / last;
  for (size_t t = 0; t < tuples; ++t) {
    const size_t base = TupleOffset(indices, t, last, x, strides, "GatherND");
    for (size_t j = 0; j < slice; ++j) CopyElement(x, base + j, out[0], t * slice + j);
  }
}

void ScatterElements(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& idx = Required(node, in, 1);
  const Tensor& updates = Required(node, in, 2);
  if (node.String("reduction", "none") != "none") throw UnsupportedError("ScatterElements with a reduction");
  if (idx.shape() != updates.shape() || idx.rank() != x.rank() || updates.type() != x.type()) {
    throw Error(ErrorCode::Model, "ScatterElements' indices, updates and data do not match");
  }
  const size_t axis = NormalizeAxis(node.Int("axis", 0), x.rank());
  const auto indices = Ints(idx);
  out[0] = x;
  const auto strides = Strides(x.shape());
  std::vector<int64_t> pos(idx.rank(), 0);
  for (size_t n = 0; n < indices.size(); ++n) {
    size_t at = 0;
    for (size_t a = 0; a < x.rank(); ++a) {
      int64_t v = a == axis ? indices[n] : pos[a];
      if (v < 0 && a == axis) v += x.dim(a);
      if (v < 0 || v >= x.dim(a)) throw Error(ErrorCode::Model, "ScatterElements index out of range");
      at += static_cast<size_t>(v) * strides[a];
    }
    CopyElement(updates, n, out[0], at);
    NextIndex(pos, idx.shape());
  }
}

void ScatterND(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& idx = Required(node, in, 1);
  const Tensor& updates = Required(node, in, 2);
  if (node.String("reduction", "none") != "none") throw UnsupportedError("ScatterND with a reduction");
  if (idx.rank() == 0 || updates.type() != x.type()) throw Error(ErrorCode::Model, "ScatterND's inputs do not match");
  const auto indices = Ints(idx);
  const auto last = static_cast<size_t>(idx.dim(idx.rank() - 1));
  if (last > x.rank() || last == 0) throw Error(ErrorCode::Model, "ScatterND's index tuples do not fit the data");
  const auto strides = Strides(x.shape());
  size_t slice = 1;
  for (size_t i = last; i < x.rank(); ++i) slice *= static_cast<size_t>(x.dim(i));
  const size_t tuples = idx.size() / last;
  if (updates.size() != tuples * slice) throw Error(ErrorCode::Model, "ScatterND's updates do not match its indices");
  out[0] = x;
  for (size_t t = 0; t < tuples; ++t) {
    const size_t base = TupleOffset(indices, t, last, x, strides, "ScatterND");
    for (size_t j = 0; j < slice; ++j) CopyElement(updates, t * slice + j, out[0], base + j);
  }
}

void EyeLike(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.rank() != 2) throw Error(ErrorCode::Model, "EyeLike takes a matrix");
  const int64_t dtype = node.Int("dtype", static_cast<int64_t>(x.type()));
  if (!IsSupportedType(static_cast<int>(dtype)) || dtype == static_cast<int64_t>(DataType::kString)) {
    throw UnsupportedError(fmt::format("EyeLike of {}", DataTypeName(static_cast<int>(dtype))));
  }
  const int64_t k = node.Int("k", 0);
  out[0] = Tensor(static_cast<DataType>(dtype), x.shape());
  VisitNumeric(out[0].type(), [&](auto zero) {
    using T = decltype(zero);
    auto dst = out[0].data<T>();
    for (int64_t r = 0; r < x.dim(0); ++r) {
      const int64_t c = r + k;
      if (c >= 0 && c < x.dim(1)) dst[static_cast<size_t>(r * x.dim(1) + c)] = T(1);
    }
  });
}

void CastLike(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& like = Required(node, in, 1);
  if (like.type() == DataType::kString || x.type() == DataType::kString) {
    if (like.type() != x.type()) throw UnsupportedError("CastLike between strings and numbers");
    out[0] = x;
    return;
  }
  out[0] = Tensor(like.type(), x.shape());
  VisitNumeric(like.type(), [&](auto zero) {
    using T = decltype(zero);
    auto dst = out[0].data<T>();
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = FromDouble<T>(ValueAt(x, i));
  });
}

}  // namespace

void AddIndexKernels(std::vector<KernelEntry>& t) {
  t.push_back({"Trilu", 14, Trilu});
  t.push_back({"CumSum", 11, CumSum});
  t.push_back({"TopK", 1, TopK});
  t.push_back({"OneHot", 9, OneHot});
  t.push_back({"DepthToSpace", 1, SpaceDepth<false>});
  t.push_back({"SpaceToDepth", 1, SpaceDepth<true>});
  t.push_back({"Compress", 9, Compress});
  t.push_back({"NonZero", 9, NonZero});
  t.push_back({"GatherND", 11, GatherND});
  t.push_back({"ScatterElements", 11, ScatterElements});
  t.push_back({"ScatterND", 11, ScatterND});
  t.push_back({"EyeLike", 9, EyeLike});
  t.push_back({"CastLike", 15, CastLike});
}

}  // namespace runnel::tensor
