// Matrix products: MatMul (NumPy semantics: 1-D operands promoted, batch dimensions
// broadcast) and Gemm. Plain loops accumulating in double: the reference the fast
// kernels of model/kernels.hpp are held to.
#include "kernels.hpp"

namespace runnel::tensor {
namespace {

void MatMul(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  if (a.type() != b.type()) throw Error(ErrorCode::Model, "MatMul of unlike element types");
  if (a.rank() == 0 || b.rank() == 0) throw Error(ErrorCode::Model, "MatMul of a scalar");
  Shape as = a.shape(), bs = b.shape();
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
  if (bs[bs.size() - 2] != k) {
    throw Error(ErrorCode::Model, fmt::format("MatMul of {} and {}", ShapeText(a.shape()), ShapeText(b.shape())));
  }
  const Shape abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
  const Shape batch = BroadcastShapes(abatch, bbatch);
  Shape shape = batch;
  if (a.rank() > 1) shape.push_back(m);
  if (b.rank() > 1) shape.push_back(n);
  out[0] = Tensor(a.type(), shape);
  const auto astr = BroadcastStrides(abatch, batch), bstr = BroadcastStrides(bbatch, batch);
  VisitNumeric(a.type(), [&](auto zero) {
    using T = decltype(zero);
    auto pa = a.data<T>();
    auto pb = b.data<T>();
    auto dst = out[0].data<T>();
    const size_t mk = static_cast<size_t>(m * k), kn = static_cast<size_t>(k * n), mn = static_cast<size_t>(m * n);
    ForEachBroadcast(batch, {astr, bstr}, [&](size_t index, const std::vector<size_t>& at) {
      const T* x = pa.data() + at[0] * mk;
      const T* y = pb.data() + at[1] * kn;
      T* z = dst.data() + index * mn;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t p = 0; p < k; ++p) s += static_cast<double>(x[i * k + p]) * static_cast<double>(y[p * n + j]);
          z[i * n + j] = FromDouble<T>(s);
        }
      }
    });
  });
}

void Gemm(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  if (a.rank() != 2 || b.rank() != 2) throw Error(ErrorCode::Model, "Gemm takes matrices");
  const bool ta = node.Int("transA", 0) != 0, tb = node.Int("transB", 0) != 0;
  const double alpha = node.Float("alpha", 1.0f), beta = node.Float("beta", 1.0f);
  const int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const int64_t n = tb ? b.dim(0) : b.dim(1);
  if ((tb ? b.dim(1) : b.dim(0)) != k) {
    throw Error(ErrorCode::Model, fmt::format("Gemm of {} and {}", ShapeText(a.shape()), ShapeText(b.shape())));
  }
  const Tensor* c = in.size() > 2 ? in[2] : nullptr;
  const Shape shape{m, n};
  if (c != nullptr && BroadcastShapes(c->shape(), shape) != shape)
    throw Error(ErrorCode::Model, "Gemm's C does not broadcast");
  out[0] = Tensor(a.type(), shape);
  std::vector<size_t> cstr;
  if (c != nullptr) cstr = BroadcastStrides(c->shape(), shape);
  VisitNumeric(a.type(), [&](auto zero) {
    using T = decltype(zero);
    auto pa = a.data<T>();
    auto pb = b.data<T>();
    auto dst = out[0].data<T>();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double x = static_cast<double>(ta ? pa[p * m + i] : pa[i * k + p]);
          const double y = static_cast<double>(tb ? pb[j * k + p] : pb[p * n + j]);
          s += x * y;
        }
        s *= alpha;
        if (c != nullptr) s += beta * ValueAt(*c, static_cast<size_t>(i) * cstr[0] + static_cast<size_t>(j) * cstr[1]);
        dst[i * n + j] = FromDouble<T>(s);
      }
    }
  });
}

}  // namespace

void AddMatrixKernels(std::vector<KernelEntry>& t) {
  t.push_back({"MatMul", 1, MatMul});
  t.push_back({"Gemm", 7, Gemm});
}

}  // namespace runnel::tensor
