// Reductions over axes (ReduceSum ... ReduceLogSumExp, ArgMax, ArgMin) and the
// normalizations along one axis (Softmax, LogSoftmax, Hardmax). Accumulated in double.
#include <cmath>
#include <limits>

#include "kernels.hpp"
#include "vector_math.hpp"

namespace runnel::tensor {
namespace {

enum class Reduce { kSum, kMean, kMax, kMin, kProd, kL1, kL2, kSumSquare, kLogSum, kLogSumExp };

// Which axes a reduction folds: the `axes` input (ReduceSum from opset 13, the others
// from 18) or attribute; none given folds all, unless noop_with_empty_axes.
std::vector<bool> ReducedAxes(const Node& node, std::span<const Tensor* const> in, size_t rank, bool axes_input) {
  std::vector<int64_t> axes;
  if (axes_input) {
    if (in.size() > 1 && in[1] != nullptr) axes = Ints(*in[1]);
  } else {
    axes = node.IntList("axes");
  }
  std::vector<bool> reduced(rank, axes.empty() && node.Int("noop_with_empty_axes", 0) == 0);
  for (int64_t a : axes) reduced[NormalizeAxis(a, rank)] = true;
  return reduced;
}

// The output index of every input element, and the output shape.
struct Folding {
  Shape out_shape;             // with the reduced axes kept as 1
  std::vector<size_t> target;  // per input element
};

Folding Fold(const Shape& shape, const std::vector<bool>& reduced) {
  Folding f;
  f.out_shape = shape;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (reduced[i]) f.out_shape[i] = 1;
  }
  std::vector<size_t> strides = BroadcastStrides(f.out_shape, shape);
  f.target.resize(ElementCount(shape));
  ForEachBroadcast(shape, {strides}, [&](size_t n, const std::vector<size_t>& at) { f.target[n] = at[0]; });
  return f;
}

Shape Dropped(const Shape& kept, const std::vector<bool>& reduced) {
  Shape out;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (!reduced[i]) out.push_back(kept[i]);
  }
  return out;
}

template <Reduce kind, bool kAxesInput>
void ReduceKernel(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto reduced = ReducedAxes(node, in, x.rank(), kAxesInput);
  const Folding f = Fold(x.shape(), reduced);
  const size_t n_out = ElementCount(f.out_shape);
  const double start = kind == Reduce::kMax    ? -std::numeric_limits<double>::infinity()
                       : kind == Reduce::kMin  ? std::numeric_limits<double>::infinity()
                       : kind == Reduce::kProd ? 1.0
                                               : 0.0;
  std::vector<double> acc(n_out, start);
  std::vector<size_t> count(n_out, 0);
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = ValueAt(x, i);
    double& a = acc[f.target[i]];
    ++count[f.target[i]];
    switch (kind) {
      case Reduce::kSum:
      case Reduce::kMean:
      case Reduce::kLogSum: a += v; break;
      case Reduce::kMax: a = (std::isnan(v) || v > a) ? v : a; break;
      case Reduce::kMin: a = (std::isnan(v) || v < a) ? v : a; break;
      case Reduce::kProd: a *= v; break;
      case Reduce::kL1: a += std::abs(v); break;
      case Reduce::kL2:
      case Reduce::kSumSquare: a += v * v; break;
      case Reduce::kLogSumExp: a += std::exp(v); break;
    }
  }
  for (size_t i = 0; i < n_out; ++i) {
    if (kind == Reduce::kMean) acc[i] /= static_cast<double>(count[i]);
    if (kind == Reduce::kL2) acc[i] = std::sqrt(acc[i]);
    if (kind == Reduce::kLogSum || kind == Reduce::kLogSumExp) acc[i] = std::log(acc[i]);
  }
  Shape shape = node.Int("keepdims", 1) != 0 ? f.out_shape : Dropped(f.out_shape, reduced);
  out[0] = Tensor(x.type(), shape);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    auto dst = out[0].data<T>();
    for (size_t i = 0; i < n_out; ++i) dst[i] = FromDouble<T>(acc[i]);
  });
}

template <bool kMax>
void ArgKernel(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const size_t axis = NormalizeAxis(node.Int("axis", 0), x.rank());
  const bool last = node.Int("select_last_index", 0) != 0;
  std::vector<bool> reduced(x.rank(), false);
  reduced[axis] = true;
  const Folding f = Fold(x.shape(), reduced);
  const size_t n_out = ElementCount(f.out_shape);
  std::vector<double> best(n_out, 0);
  std::vector<int64_t> arg(n_out, -1);
  const auto strides = Strides(x.shape());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = ValueAt(x, i);
    const size_t t = f.target[i];
    const auto pos = static_cast<int64_t>((i / strides[axis]) % static_cast<size_t>(x.dim(axis)));
    const bool better = kMax ? (last ? v >= best[t] : v > best[t]) : (last ? v <= best[t] : v < best[t]);
    if (arg[t] < 0 || better) {
      best[t] = v;
      arg[t] = pos;
    }
  }
  Shape shape = node.Int("keepdims", 1) != 0 ? f.out_shape : Dropped(f.out_shape, reduced);
  out[0] = Tensor(DataType::kInt64, shape);
  std::copy(arg.begin(), arg.end(), out[0].data<int64_t>().begin());
}

enum class Normalize { kSoftmax, kLogSoftmax, kHardmax };

// Along `axis` (opset 13 on), or over everything from `axis` on, as a 2-D view (before).
template <Normalize kind>
void NormalizeKernel(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const bool per_axis = node.opset >= 13;
  const size_t axis = NormalizeAxis(node.Int("axis", per_axis ? -1 : 1), x.rank());
  size_t outer = 1, len = 1, inner = 1;
  for (size_t i = 0; i < axis; ++i) outer *= static_cast<size_t>(x.dim(i));
  if (per_axis) {
    len = static_cast<size_t>(x.dim(axis));
    for (size_t i = axis + 1; i < x.rank(); ++i) inner *= static_cast<size_t>(x.dim(i));
  } else {
    for (size_t i = axis; i < x.rank(); ++i) len *= static_cast<size_t>(x.dim(i));
  }
  out[0] = Tensor::Uninitialized(x.type(), x.shape());  // each branch writes every element
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!std::is_floating_point_v<T>) {
      throw Error(ErrorCode::Model, fmt::format("{} takes float elements", node.op));
    } else if (std::is_same_v<T, float> && kind == Normalize::kSoftmax && inner == 1) {
      // Float softmax over contiguous runs, in float (within the backend tests' tolerance).
      auto src = x.data<T>();
      auto dst = out[0].data<T>();
      for (size_t o = 0; o < outer; ++o) {
        const T* row = src.data() + o * len;
        T* y = dst.data() + o * len;
        if (len == 0) continue;
        const T max = MaxLanes(row, len);
        // Below -87 the exponential is under FLT_MIN: 0 beside the maximum's 1, and the
        // vector exp would take its slow path for it (masked attention scores are -1e4).
        for (size_t k = 0; k < len; ++k) y[k] = std::max(row[k] - max, T(-87));
        if constexpr (std::is_same_v<T, float>) ExpInPlace(std::span<float>(y, len));
        const T sum = SumLanes<T>(y, len);
        const T scale = T(1) / sum;
        for (size_t k = 0; k < len; ++k) y[k] = row[k] - max < T(-87) ? T(0) : y[k] * scale;
      }
    } else {
      auto src = x.data<T>();
      auto dst = out[0].data<T>();
      for (size_t o = 0; o < outer; ++o) {
        for (size_t j = 0; j < inner; ++j) {
          auto at = [&](size_t k) { return (o * len + k) * inner + j; };
          double max = -std::numeric_limits<double>::infinity();
          size_t arg = 0;
          for (size_t k = 0; k < len; ++k) {
            if (static_cast<double>(src[at(k)]) > max) {
              max = static_cast<double>(src[at(k)]);
              arg = k;
            }
          }
          if (kind == Normalize::kHardmax) {
            for (size_t k = 0; k < len; ++k) dst[at(k)] = k == arg ? T(1) : T(0);
            continue;
          }
          double sum = 0;
          for (size_t k = 0; k < len; ++k) sum += std::exp(static_cast<double>(src[at(k)]) - max);
          for (size_t k = 0; k < len; ++k) {
            const double shifted = static_cast<double>(src[at(k)]) - max;
            dst[at(k)] =
                static_cast<T>(kind == Normalize::kSoftmax ? std::exp(shifted) / sum : shifted - std::log(sum));
          }
        }
      }
    }
  });
}

}  // namespace

void AddReduceKernels(std::vector<KernelEntry>& t) {
  t.push_back({"ReduceSum", 1, ReduceKernel<Reduce::kSum, false>});
  t.push_back({"ReduceSum", 13, ReduceKernel<Reduce::kSum, true>});
  t.push_back({"ReduceMean", 1, ReduceKernel<Reduce::kMean, false>});
  t.push_back({"ReduceMean", 18, ReduceKernel<Reduce::kMean, true>});
  t.push_back({"ReduceMax", 1, ReduceKernel<Reduce::kMax, false>});
  t.push_back({"ReduceMax", 18, ReduceKernel<Reduce::kMax, true>});
  t.push_back({"ReduceMin", 1, ReduceKernel<Reduce::kMin, false>});
  t.push_back({"ReduceMin", 18, ReduceKernel<Reduce::kMin, true>});
  t.push_back({"ReduceProd", 1, ReduceKernel<Reduce::kProd, false>});
  t.push_back({"ReduceProd", 18, ReduceKernel<Reduce::kProd, true>});
  t.push_back({"ReduceL1", 1, ReduceKernel<Reduce::kL1, false>});
  t.push_back({"ReduceL1", 18, ReduceKernel<Reduce::kL1, true>});
  t.push_back({"ReduceL2", 1, ReduceKernel<Reduce::kL2, false>});
  t.push_back({"ReduceL2", 18, ReduceKernel<Reduce::kL2, true>});
  t.push_back({"ReduceSumSquare", 1, ReduceKernel<Reduce::kSumSquare, false>});
  t.push_back({"ReduceSumSquare", 18, ReduceKernel<Reduce::kSumSquare, true>});
  t.push_back({"ReduceLogSum", 1, ReduceKernel<Reduce::kLogSum, false>});
  t.push_back({"ReduceLogSum", 18, ReduceKernel<Reduce::kLogSum, true>});
  t.push_back({"ReduceLogSumExp", 1, ReduceKernel<Reduce::kLogSumExp, false>});
  t.push_back({"ReduceLogSumExp", 18, ReduceKernel<Reduce::kLogSumExp, true>});
  t.push_back({"ArgMax", 1, ArgKernel<true>});
  t.push_back({"ArgMin", 1, ArgKernel<false>});
  t.push_back({"Softmax", 1, NormalizeKernel<Normalize::kSoftmax>});
  t.push_back({"LogSoftmax", 1, NormalizeKernel<Normalize::kLogSoftmax>});
  t.push_back({"Hardmax", 1, NormalizeKernel<Normalize::kHardmax>});
}

}  // namespace runnel::tensor
