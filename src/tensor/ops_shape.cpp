// Operators that move elements without computing on them: Reshape, Flatten, Squeeze,
// Unsqueeze, Transpose, Concat, Split, Slice, Gather, GatherElements, Expand, Tile,
// Shape, Size, Constant, ConstantOfShape, Range. Any element type, strings included.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels.hpp"

namespace runnel::tensor {
namespace {

Tensor Int64Tensor(const std::vector<int64_t>& values, Shape shape) {
  Tensor t(DataType::kInt64, std::move(shape));
  std::copy(values.begin(), values.end(), t.data<int64_t>().begin());
  return t;
}

// The axes of an input (opset 13 on) or of the `axes` attribute (before).
std::vector<int64_t> AxesOf(const Node& node, std::span<const Tensor* const> in, size_t input) {
  if (in.size() > input && in[input] != nullptr) return Ints(*in[input]);
  return node.IntList("axes");
}

void Reshape(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto want = Ints(Required(node, in, 1));
  const bool allow_zero = node.Int("allowzero", 0) != 0;
  Shape shape(want.size());
  int infer = -1;
  size_t known = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == -1) {
      if (infer >= 0) throw Error(ErrorCode::Model, "Reshape with two -1 dimensions");
      infer = static_cast<int>(i);
      continue;
    }
    if (want[i] < -1) throw Error(ErrorCode::Model, fmt::format("Reshape to a dimension of {}", want[i]));
    if (want[i] == 0 && !allow_zero) {
      if (i >= x.rank()) throw Error(ErrorCode::Model, "Reshape copies a dimension the input lacks");
      shape[i] = x.dim(i);
    } else {
      shape[i] = want[i];
    }
    if (shape[i] != 0 && known > kMaxElements / static_cast<size_t>(shape[i])) {
      throw Error(ErrorCode::Model, "Reshape to too many elements");
    }
    known *= static_cast<size_t>(shape[i]);
  }
  if (infer >= 0) {
    if (known == 0 || x.size() % known != 0) {
      throw Error(ErrorCode::Model,
                  fmt::format("cannot reshape {} to [{}]", ShapeText(x.shape()), fmt::join(want, ", ")));
    }
    shape[static_cast<size_t>(infer)] = static_cast<int64_t>(x.size() / known);
  }
  out[0] = x;
  out[0].Reshape(std::move(shape));
}

void Flatten(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  int64_t axis = node.Int("axis", 1);
  if (axis < 0) axis += static_cast<int64_t>(x.rank());
  if (axis < 0 || axis > static_cast<int64_t>(x.rank()))
    throw Error(ErrorCode::Model, "Flatten's axis is out of range");
  int64_t outer = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= x.dim(static_cast<size_t>(i));
  out[0] = x;
  out[0].Reshape({outer, outer == 0 ? 0 : static_cast<int64_t>(x.size()) / outer});
}

void Squeeze(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto axes = AxesOf(node, in, 1);
  std::vector<bool> drop(x.rank(), false);
  if (axes.empty()) {
    for (size_t i = 0; i < x.rank(); ++i) drop[i] = x.dim(i) == 1;
  }
  for (int64_t a : axes) {
    const size_t axis = NormalizeAxis(a, x.rank());
    if (x.dim(axis) != 1) throw Error(ErrorCode::Model, fmt::format("Squeeze of axis {} of size {}", a, x.dim(axis)));
    drop[axis] = true;
  }
  Shape shape;
  for (size_t i = 0; i < x.rank(); ++i) {
    if (!drop[i]) shape.push_back(x.dim(i));
  }
  out[0] = x;
  out[0].Reshape(std::move(shape));
}

void Unsqueeze(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto axes = AxesOf(node, in, 1);
  const size_t rank = x.rank() + axes.size();
  std::vector<bool> inserted(rank, false);
  for (int64_t a : axes) {
    const size_t axis = NormalizeAxis(a, rank);
    if (inserted[axis]) throw Error(ErrorCode::Model, "Unsqueeze names an axis twice");
    inserted[axis] = true;
  }
  Shape shape;
  size_t from = 0;
  for (size_t i = 0; i < rank; ++i) shape.push_back(inserted[i] ? 1 : x.dim(from++));
  out[0] = x;
  out[0].Reshape(std::move(shape));
}

// out[i] = x[source(i)] for a permutation or selection of elements given per output.
void Transpose(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  auto perm = node.IntList("perm");
  if (perm.empty()) {
    perm.resize(x.rank());
    for (size_t i = 0; i < x.rank(); ++i) perm[i] = static_cast<int64_t>(x.rank() - 1 - i);
  }
  if (perm.size() != x.rank()) throw Error(ErrorCode::Model, "Transpose's perm does not match the rank");
  Shape shape(x.rank());
  std::vector<bool> seen(x.rank(), false);
  for (size_t i = 0; i < perm.size(); ++i) {
    const size_t p = NormalizeAxis(perm[i], x.rank());
    if (seen[p]) throw Error(ErrorCode::Model, "Transpose's perm repeats an axis");
    seen[p] = true;
    shape[i] = x.dim(p);
  }
  const auto src_strides = Strides(x.shape());
  std::vector<size_t> strides(x.rank());
  for (size_t i = 0; i < perm.size(); ++i) strides[i] = src_strides[NormalizeAxis(perm[i], x.rank())];
  out[0] = Tensor(x.type(), shape);
  if (x.type() == DataType::kString || x.rank() == 0 || out[0].size() == 0) {
    ForEachBroadcast(shape, {strides},
                     [&](size_t n, const std::vector<size_t>& at) { CopyElement(x, at[0], out[0], n); });
    return;
  }
  // Numbers: the output's last axis in a tight loop, the outer axes walked by index.
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    auto src = x.data<T>();
    auto dst = out[0].data<T>();
    const size_t rank = shape.size(), inner = static_cast<size_t>(shape.back()), step = strides.back();
    const Shape outer_shape(shape.begin(), shape.end() - 1);
    std::vector<int64_t> index(rank - 1, 0);
    for (size_t n = 0; n < dst.size(); n += inner) {
      size_t base = 0;
      for (size_t i = 0; i + 1 < rank; ++i) base += static_cast<size_t>(index[i]) * strides[i];
      for (size_t j = 0; j < inner; ++j) dst[n + j] = src[base + j * step];
      NextIndex(index, outer_shape);
    }
  });
}

void Concat(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& first = Required(node, in, 0);
  const size_t axis = NormalizeAxis(node.Int("axis", 0), first.rank());
  Shape shape = first.shape();
  shape[axis] = 0;
  for (size_t k = 0; k < in.size(); ++k) {
    const Tensor& t = Required(node, in, k);
    if (t.type() != first.type() || t.rank() != first.rank()) throw Error(ErrorCode::Model, "Concat of unlike tensors");
    for (size_t i = 0; i < t.rank(); ++i) {
      if (i != axis && t.dim(i) != first.dim(i)) {
        throw Error(ErrorCode::Model,
                    fmt::format("Concat of {} and {}", ShapeText(first.shape()), ShapeText(t.shape())));
      }
    }
    shape[axis] += t.dim(axis);
  }
  out[0] = Tensor(first.type(), shape);
  size_t outer = 1;
  for (size_t i = 0; i < axis; ++i) outer *= static_cast<size_t>(shape[i]);
  size_t at = 0;
  for (size_t o = 0; o < outer; ++o) {
    for (size_t k = 0; k < in.size(); ++k) {
      const Tensor& t = *in[k];
      const size_t block = outer == 0 ? 0 : t.size() / outer;
      for (size_t j = 0; j < block; ++j) CopyElement(t, o * block + j, out[0], at++);
    }
  }
}

void Split(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const size_t axis = NormalizeAxis(node.Int("axis", 0), x.rank());
  std::vector<int64_t> sizes = in.size() > 1 && in[1] != nullptr ? Ints(*in[1]) : node.IntList("split");
  if (sizes.empty()) {
    const int64_t n = static_cast<int64_t>(out.size());
    const int64_t each = (x.dim(axis) + n - 1) / n;  // the last may be smaller (opset 18)
    for (int64_t i = 0, left = x.dim(axis); i < n; ++i, left -= each) sizes.push_back(std::min(each, left));
  }
  if (sizes.size() != out.size() || std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != x.dim(axis)) {
    throw Error(ErrorCode::Model, "Split's sizes do not add up to the axis");
  }
  size_t outer = 1, inner = 1;
  for (size_t i = 0; i < axis; ++i) outer *= static_cast<size_t>(x.dim(i));
  for (size_t i = axis + 1; i < x.rank(); ++i) inner *= static_cast<size_t>(x.dim(i));
  int64_t offset = 0;
  for (size_t k = 0; k < out.size(); ++k) {
    if (sizes[k] < 0) throw Error(ErrorCode::Model, "Split into a negative size");
    Shape shape = x.shape();
    shape[axis] = sizes[k];
    out[k] = Tensor(x.type(), shape);
    size_t at = 0;
    for (size_t o = 0; o < outer; ++o) {
      for (int64_t a = 0; a < sizes[k]; ++a) {
        const size_t base = (o * static_cast<size_t>(x.dim(axis)) + static_cast<size_t>(offset + a)) * inner;
        for (size_t j = 0; j < inner; ++j) CopyElement(x, base + j, out[k], at++);
      }
    }
    offset += sizes[k];
  }
}

void Slice(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (node.opset < 10) {
    starts = node.IntList("starts");
    ends = node.IntList("ends");
    axes = node.IntList("axes");
  } else {
    starts = Ints(Required(node, in, 1));
    ends = Ints(Required(node, in, 2));
    if (in.size() > 3 && in[3] != nullptr) axes = Ints(*in[3]);
    if (in.size() > 4 && in[4] != nullptr) steps = Ints(*in[4]);
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size()) {
    throw Error(ErrorCode::Model, "Slice's starts, ends, axes and steps differ in length");
  }
  const size_t rank = x.rank();
  std::vector<int64_t> first(rank, 0), step(rank, 1);
  Shape shape = x.shape();
  for (size_t k = 0; k < starts.size(); ++k) {
    const size_t a = NormalizeAxis(axes[k], rank);
    const int64_t dim = x.dim(a);
    if (steps[k] == 0) throw Error(ErrorCode::Model, "Slice with a step of 0");
    auto clamp = [&](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v = v < -dim ? -1 - dim : v;  // keep within int64 before adding dim
      if (v < 0) v += dim;
      return std::clamp(v, lo, hi);
    };
    int64_t s, e;
    if (steps[k] > 0) {
      s = clamp(starts[k], 0, dim);
      e = clamp(ends[k], 0, dim);
    } else {
      s = clamp(starts[k], -1, dim - 1);
      e = clamp(ends[k], -1, dim - 1);
    }
    const int64_t n = steps[k] > 0 ? (e > s ? (e - s + steps[k] - 1) / steps[k] : 0)
                                   : (s > e ? (s - e + (-steps[k]) - 1) / (-steps[k]) : 0);
    first[a] = s;
    step[a] = steps[k];
    shape[a] = n;
  }
  const auto src = Strides(x.shape());
  out[0] = Tensor(x.type(), shape);
  const size_t count = out[0].size();
  std::vector<int64_t> index(rank, 0);
  for (size_t n = 0; n < count; ++n) {
    size_t from = 0;
    for (size_t i = 0; i < rank; ++i) from += static_cast<size_t>(first[i] + index[i] * step[i]) * src[i];
    CopyElement(x, from, out[0], n);
    NextIndex(index, shape);
  }
}

int64_t CheckedIndex(int64_t i, int64_t dim) {
  if (i < -dim || i >= dim)
    throw Error(ErrorCode::Model, fmt::format("index {} is out of range for a dimension of {}", i, dim));
  return i < 0 ? i + dim : i;
}

void Gather(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto indices = Ints(Required(node, in, 1));
  const Shape& ishape = in[1]->shape();
  const size_t axis = NormalizeAxis(node.Int("axis", 0), x.rank());
  Shape shape(x.shape().begin(), x.shape().begin() + static_cast<int64_t>(axis));
  shape.insert(shape.end(), ishape.begin(), ishape.end());
  shape.insert(shape.end(), x.shape().begin() + static_cast<int64_t>(axis) + 1, x.shape().end());
  out[0] = Tensor(x.type(), shape);
  size_t outer = 1, inner = 1;
  for (size_t i = 0; i < axis; ++i) outer *= static_cast<size_t>(x.dim(i));
  for (size_t i = axis + 1; i < x.rank(); ++i) inner *= static_cast<size_t>(x.dim(i));
  size_t at = 0;
  for (size_t o = 0; o < outer; ++o) {
    for (int64_t raw : indices) {
      const auto idx = static_cast<size_t>(CheckedIndex(raw, x.dim(axis)));
      const size_t base = (o * static_cast<size_t>(x.dim(axis)) + idx) * inner;
      for (size_t j = 0; j < inner; ++j) CopyElement(x, base + j, out[0], at++);
    }
  }
}

void GatherElements(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Tensor& idx = Required(node, in, 1);
  const auto indices = Ints(idx);
  if (idx.rank() != x.rank()) throw Error(ErrorCode::Model, "GatherElements' indices differ in rank");
  const size_t axis = NormalizeAxis(node.Int("axis", 0), x.rank());
  const auto src = Strides(x.shape());
  out[0] = Tensor(x.type(), idx.shape());
  std::vector<int64_t> index(x.rank(), 0);
  for (size_t n = 0; n < indices.size(); ++n) {
    size_t from = 0;
    for (size_t i = 0; i < x.rank(); ++i) {
      const int64_t v = i == axis ? CheckedIndex(indices[n], x.dim(i)) : index[i];
      if (v >= x.dim(i)) throw Error(ErrorCode::Model, "GatherElements' indices exceed the data");
      from += static_cast<size_t>(v) * src[i];
    }
    CopyElement(x, from, out[0], n);
    NextIndex(index, idx.shape());
  }
}

void Expand(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Shape shape = BroadcastShapes(x.shape(), Ints(Required(node, in, 1)));
  out[0] = Tensor(x.type(), shape);
  ForEachBroadcast(shape, {BroadcastStrides(x.shape(), shape)},
                   [&](size_t n, const std::vector<size_t>& at) { CopyElement(x, at[0], out[0], n); });
}

void Tile(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto repeats = Ints(Required(node, in, 1));
  if (repeats.size() != x.rank()) throw Error(ErrorCode::Model, "Tile's repeats do not match the rank");
  Shape shape(x.rank());
  for (size_t i = 0; i < x.rank(); ++i) {
    if (repeats[i] < 0 || repeats[i] > static_cast<int64_t>(kMaxElements)) {
      throw Error(ErrorCode::Model, fmt::format("Tile with a repeat of {}", repeats[i]));
    }
    shape[i] = x.dim(i) * repeats[i];  // both at most kMaxElements: no overflow
  }
  out[0] = Tensor(x.type(), shape);
  const auto src = Strides(x.shape());
  std::vector<int64_t> index(x.rank(), 0);
  for (size_t n = 0; n < out[0].size(); ++n) {
    size_t from = 0;
    for (size_t i = 0; i < x.rank(); ++i) from += static_cast<size_t>(index[i] % x.dim(i)) * src[i];
    CopyElement(x, from, out[0], n);
    NextIndex(index, shape);
  }
}

void ShapeOp(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto rank = static_cast<int64_t>(x.rank());
  auto bound = [&](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  const int64_t start = bound(node.Int("start", 0)), end = bound(node.Int("end", rank));
  std::vector<int64_t> dims;
  for (int64_t i = start; i < end; ++i) dims.push_back(x.dim(static_cast<size_t>(i)));
  out[0] = Int64Tensor(dims, {static_cast<int64_t>(dims.size())});
}

void Size(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  out[0] = Int64Tensor({static_cast<int64_t>(Required(node, in, 0).size())}, {});
}

void Constant(const Node& node, std::span<const Tensor* const>, std::span<Tensor> out) {
  if (const auto* a = node.Find("value"); a != nullptr && a->t) {
    out[0] = *a->t;
  } else if (const auto* f = node.Find("value_float")) {
    out[0] = Tensor::Of<float>(DataType::kFloat, {}, std::span<const float>(&f->f, 1));
  } else if (const auto* fs = node.Find("value_floats")) {
    out[0] = Tensor::Of<float>(DataType::kFloat, {static_cast<int64_t>(fs->floats.size())}, fs->floats);
  } else if (const auto* i = node.Find("value_int")) {
    out[0] = Int64Tensor({i->i}, {});
  } else if (const auto* is = node.Find("value_ints")) {
    out[0] = Int64Tensor(is->ints, {static_cast<int64_t>(is->ints.size())});
  } else if (const auto* s = node.Find("value_string")) {
    out[0] = Tensor(DataType::kString, {});
    out[0].strings()[0] = s->s;
  } else if (const auto* ss = node.Find("value_strings")) {
    out[0] = Tensor(DataType::kString, {static_cast<int64_t>(ss->strings.size())});
    out[0].strings() = ss->strings;
  } else {
    throw UnsupportedError("a Constant without a value this runtime reads (sparse_value)");
  }
}

void ConstantOfShape(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const auto dims = Ints(Required(node, in, 0));
  const auto* value = node.Find("value");
  const DataType type = value != nullptr && value->t ? value->t->type() : DataType::kFloat;
  out[0] = Tensor(type, Shape(dims.begin(), dims.end()));
  if (value != nullptr && value->t && value->t->size() == 1) {
    for (size_t i = 0; i < out[0].size(); ++i) CopyElement(*value->t, 0, out[0], i);
  }
}

void Range(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& start = Required(node, in, 0);
  const double s = ValueAt(start, 0), limit = ValueAt(Required(node, in, 1), 0),
               delta = ValueAt(Required(node, in, 2), 0);
  if (delta == 0) throw Error(ErrorCode::Model, "Range with a delta of 0");
  if (in[1]->type() != start.type() || in[2]->type() != start.type()) {
    throw Error(ErrorCode::Model, "Range's start, limit and delta differ in element type");
  }
  const double n = std::max(0.0, std::ceil((limit - s) / delta));
  if (!(n <= static_cast<double>(kMaxElements))) throw Error(ErrorCode::Model, "Range of too many elements");
  out[0] = Tensor(start.type(), {static_cast<int64_t>(n)});
  VisitNumeric(start.type(), [&](auto zero) {
    using T = decltype(zero);
    auto dst = out[0].data<T>();
    if constexpr (std::is_same_v<T, bool>) {
      throw Error(ErrorCode::Model, "Range of bool elements");
    } else if constexpr (std::is_floating_point_v<T>) {
      const T first = start.data<T>()[0];
      const T step = in[2]->data<T>()[0];
      for (size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<T>(first + static_cast<T>(i) * step);
    } else {
      // Exact in int64; n elements stay within [start, limit], so no step overflows.
      const auto first = static_cast<int64_t>(start.data<T>()[0]);
      const auto step = static_cast<int64_t>(in[2]->data<T>()[0]);
      for (size_t i = 0; i < dst.size(); ++i) {
        int64_t offset = 0, value = 0;
        if (__builtin_mul_overflow(static_cast<int64_t>(i), step, &offset) ||
            __builtin_add_overflow(first, offset, &value)) {
          throw Error(ErrorCode::Model, "Range overflows its element type");
        }
        dst[i] = static_cast<T>(value);
      }
    }
  });
}

}  // namespace

void AddShapeKernels(std::vector<KernelEntry>& t) {
  t.push_back({"Reshape", 5, Reshape});
  t.push_back({"Flatten", 1, Flatten});
  t.push_back({"Squeeze", 1, Squeeze});
  t.push_back({"Unsqueeze", 1, Unsqueeze});
  t.push_back({"Transpose", 1, Transpose});
  t.push_back({"Concat", 4, Concat});
  t.push_back({"Split", 2, Split});
  t.push_back({"Slice", 1, Slice});
  t.push_back({"Gather", 1, Gather});
  t.push_back({"GatherElements", 11, GatherElements});
  t.push_back({"Expand", 8, Expand});
  t.push_back({"Tile", 6, Tile});
  t.push_back({"Shape", 1, ShapeOp});
  t.push_back({"Size", 1, Size});
  t.push_back({"Constant", 1, Constant});
  t.push_back({"ConstantOfShape", 9, ConstantOfShape});
  t.push_back({"Range", 11, Range});
}

}  // namespace runnel::tensor
