// Matrix products: MatMul (NumPy semantics: 1-D operands promoted, batch dimensions
// broadcast), Gemm, Einsum. The reference kernels are plain loops accumulating in
// double; float MatMul and Gemm run on the packed micro-kernel of gemm.hpp, tested
// against them.
#include <algorithm>
#include <cctype>
#include <map>
#include <memory>

#include "kernels.hpp"
#include "runnel/tensor/gemm.hpp"

namespace runnel::tensor {
namespace {

// MatMul's operands as matrices: batch dimensions broadcast, 1-D operands promoted.
struct MatMulShape {
  int64_t m = 0, k = 0, n = 0;
  Shape abatch, bbatch, batch, out;
};

MatMulShape MatMulShapeOf(const Shape& a_shape, const Shape& b_shape) {
  if (a_shape.empty() || b_shape.empty()) throw Error(ErrorCode::Model, "MatMul of a scalar");
  Shape as = a_shape, bs = b_shape;
  if (as.size() == 1) as.insert(as.begin(), 1);
  if (bs.size() == 1) bs.push_back(1);
  MatMulShape s;
  s.m = as[as.size() - 2];
  s.k = as.back();
  s.n = bs.back();
  if (bs[bs.size() - 2] != s.k) {
    throw Error(ErrorCode::Model, fmt::format("MatMul of {} and {}", ShapeText(a_shape), ShapeText(b_shape)));
  }
  s.abatch.assign(as.begin(), as.end() - 2);
  s.bbatch.assign(bs.begin(), bs.end() - 2);
  s.batch = BroadcastShapes(s.abatch, s.bbatch);
  s.out = s.batch;
  if (a_shape.size() > 1) s.out.push_back(s.m);
  if (b_shape.size() > 1) s.out.push_back(s.n);
  return s;
}

MatMulShape MatMulShapeOf(const Tensor& a, const Tensor& b) {
  if (a.type() != b.type()) throw Error(ErrorCode::Model, "MatMul of unlike element types");
  return MatMulShapeOf(a.shape(), b.shape());
}

}  // namespace

void MatMulReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  const MatMulShape s = MatMulShapeOf(a, b);
  const int64_t m = s.m, k = s.k, n = s.n;
  out[0] = Tensor(a.type(), s.out);
  const auto astr = BroadcastStrides(s.abatch, s.batch), bstr = BroadcastStrides(s.bbatch, s.batch);
  VisitNumeric(a.type(), [&](auto zero) {
    using T = decltype(zero);
    auto pa = a.data<T>();
    auto pb = b.data<T>();
    auto dst = out[0].data<T>();
    const size_t mk = static_cast<size_t>(m * k), kn = static_cast<size_t>(k * n), mn = static_cast<size_t>(m * n);
    ForEachBroadcast(s.batch, {astr, bstr}, [&](size_t index, const std::vector<size_t>& at) {
      const T* x = pa.data() + at[0] * mk;
      const T* y = pb.data() + at[1] * kn;
      T* z = dst.data() + index * mn;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double sum = 0;
          for (int64_t p = 0; p < k; ++p) sum += static_cast<double>(x[i * k + p]) * static_cast<double>(y[p * n + j]);
          z[i * n + j] = FromDouble<T>(sum);
        }
      }
    });
  });
}

void MultiplyInto(const float* x, size_t rows, const PackedMatrix& w, float* z, std::vector<float>& scratch) {
  if (w.out_padded == w.out) {
    MultiplyPacked(x, w.in, rows, w, false, z, w.out);
    return;
  }
  // Through a scratch of at most 256 rows: a narrow product (n = 1 pads to 16) never
  // takes 16 times its output.
  constexpr size_t kRows = 256;
  scratch.resize(std::min(rows, kRows) * w.out_padded);
  for (size_t first = 0; first < rows; first += kRows) {
    const size_t n = std::min(kRows, rows - first);
    MultiplyPacked(x + first * w.in, w.in, n, w, false, scratch.data(), w.out_padded);
    for (size_t r = 0; r < n; ++r) std::copy_n(scratch.data() + r * w.out_padded, w.out, z + (first + r) * w.out);
  }
}

namespace {

// Whether packing a [k, n] right-hand matrix stays within bounds: its padding (n = 1
// pads to 16 columns) may not blow a large operand up past 16 MiB.
bool PackFits(size_t k, size_t n) {
  return k * PaddedWidth(n) <= std::max<size_t>(2 * k * n, size_t{1} << 22);
}

// Float MatMul on the packed micro-kernel: B packed once per distinct matrix; when B
// has no batch dimensions, all of A's matrices are one tall matrix.
void MatMul(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  if (a.type() != DataType::kFloat || b.type() != DataType::kFloat) return MatMulReference(node, in, out);
  const MatMulShape s = MatMulShapeOf(a, b);
  const auto m = static_cast<size_t>(s.m), k = static_cast<size_t>(s.k), n = static_cast<size_t>(s.n);
  if (!PackFits(k, n)) return MatMulReference(node, in, out);
  out[0] = Tensor::Uninitialized(a.type(), s.out);  // every product row is written below
  if (out[0].size() == 0) return;
  auto pa = a.data<float>();
  auto pb = b.data<float>();
  auto dst = out[0].data<float>();
  std::vector<float> scratch;
  if (s.bbatch.empty() || ElementCount(s.bbatch) == 1) {
    if (ElementCount(s.abatch) == ElementCount(s.batch)) {  // A's matrices stacked: one product
      const auto packed = PackMatrix(pb.data(), k, n, n, false);
      MultiplyInto(pa.data(), ElementCount(s.batch) * m, packed, dst.data(), scratch);
      return;
    }
  }
  const auto astr = BroadcastStrides(s.abatch, s.batch), bstr = BroadcastStrides(s.bbatch, s.batch);
  PackedMatrix packed;
  size_t packed_at = SIZE_MAX;
  ForEachBroadcast(s.batch, {astr, bstr}, [&](size_t index, const std::vector<size_t>& at) {
    if (at[1] != packed_at) {
      packed = PackMatrix(pb.data() + at[1] * k * n, k, n, n, false);
      packed_at = at[1];
    }
    MultiplyInto(pa.data() + at[0] * m * k, m, packed, dst.data() + index * m * n, scratch);
  });
}

// A MatMul by a constant matrix packed at load (PackConstantMatMuls), its bias in.
struct PackedMatMulState final : NodeState {
  Shape b_shape;
  PackedMatrix packed;
};

void PackedMatMul(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const auto& state = node.State<PackedMatMulState>();
  if (a.type() != DataType::kFloat) throw Error(ErrorCode::Model, "MatMul of unlike element types");
  const MatMulShape s = MatMulShapeOf(a.shape(), state.b_shape);
  out[0] = Tensor::Uninitialized(DataType::kFloat, s.out);  // every product row is written below
  if (out[0].size() == 0) return;
  // B has no batch axes: A's matrices, contiguous, are one tall matrix.
  std::vector<float> scratch;
  MultiplyInto(a.data<float>().data(), ElementCount(s.batch) * static_cast<size_t>(s.m), state.packed,
               out[0].data<float>().data(), scratch);
}

const Tensor* FloatConstant(const Graph& g, int id) {
  if (id < 0 || !g.constants[static_cast<size_t>(id)]) return nullptr;
  const Tensor* t = g.constants[static_cast<size_t>(id)].get();
  return t->type() == DataType::kFloat ? t : nullptr;
}

// The constant [n] vector node `add` adds to value `product`, or -1.
int BiasOf(const Graph& g, const Node& add, int product, size_t n) {
  if (!add.domain.empty() || add.op != "Add" || add.opset < 7 || add.inputs.size() != 2) return -1;
  const int other = add.inputs[0] == product ? add.inputs[1] : add.inputs[0];
  const Tensor* bias = FloatConstant(g, other);
  return bias != nullptr && bias->rank() == 1 && bias->size() == n ? other : -1;
}

}  // namespace

void PackConstantMatMuls(Graph& g) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& mm = g.nodes[i];
    if (!mm.domain.empty() || mm.op != "MatMul" || mm.inputs.size() != 2 || mm.outputs.size() != 1) continue;
    const Tensor* b = FloatConstant(g, mm.inputs[1]);
    if (b == nullptr || b->rank() != 2 || b->size() == 0) continue;
    const auto k = static_cast<size_t>(b->dim(0)), n = static_cast<size_t>(b->dim(1));
    if (!PackFits(k, n)) continue;
    const int add = SoleReader(g, mm.outputs[0]);
    const int bias = add < 0 ? -1 : BiasOf(g, g.nodes[static_cast<size_t>(add)], mm.outputs[0], n);
    auto state = std::make_shared<PackedMatMulState>();
    state->b_shape = b->shape();
    const std::span<const float> bias_values =
        bias < 0 ? std::span<const float>() : g.constants[static_cast<size_t>(bias)]->data<float>();
    state->packed = PackMatrix(b->data<float>().data(), k, n, n, false, bias_values);
    Node fused = mm;
    const int weights = mm.inputs[1];
    fused.inputs = {mm.inputs[0]};
    fused.kernel = PackedMatMul;
    fused.state = std::move(state);
    if (bias >= 0) {
      fused.op = "MatMul+Add";
      fused.outputs = g.nodes[static_cast<size_t>(add)].outputs;
      g.nodes.erase(g.nodes.begin() + add);  // readers come after writers: add > i
    }
    g.nodes[i] = std::move(fused);
    for (const int id : {weights, bias}) {
      if (id >= 0 && Unread(g, id)) g.constants[static_cast<size_t>(id)].reset();
    }
  }
}

void GemmReference(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  if (a.rank() != 2 || b.rank() != 2) throw Error(ErrorCode::Model, "Gemm takes matrices");
  if (a.type() != b.type()) throw Error(ErrorCode::Model, "Gemm of unlike element types");
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

namespace {

// Float Gemm on the packed micro-kernel: alpha * A' B' + beta * C.
void Gemm(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  const Tensor* c = in.size() > 2 ? in[2] : nullptr;
  if (a.type() != DataType::kFloat || b.type() != DataType::kFloat || a.rank() != 2 || b.rank() != 2 ||
      (c != nullptr && c->type() != DataType::kFloat))
    return GemmReference(node, in, out);
  const bool ta = node.Int("transA", 0) != 0, tb = node.Int("transB", 0) != 0;
  const float alpha = node.Float("alpha", 1.0f), beta = node.Float("beta", 1.0f);
  const auto m = static_cast<size_t>(ta ? a.dim(1) : a.dim(0)), k = static_cast<size_t>(ta ? a.dim(0) : a.dim(1));
  const auto n = static_cast<size_t>(tb ? b.dim(0) : b.dim(1));
  if (static_cast<size_t>(tb ? b.dim(1) : b.dim(0)) != k) {
    throw Error(ErrorCode::Model, fmt::format("Gemm of {} and {}", ShapeText(a.shape()), ShapeText(b.shape())));
  }
  const Shape shape{static_cast<int64_t>(m), static_cast<int64_t>(n)};
  if (c != nullptr && BroadcastShapes(c->shape(), shape) != shape)
    throw Error(ErrorCode::Model, "Gemm's C does not broadcast");
  if (!PackFits(k, n)) return GemmReference(node, in, out);
  out[0] = Tensor(DataType::kFloat, shape);
  if (out[0].size() == 0) return;
  const auto packed = PackMatrix(b.data<float>().data(), k, n, tb ? k : n, tb);
  std::vector<float> transposed;
  const float* x = a.data<float>().data();
  if (ta) {
    transposed.resize(m * k);
    for (size_t i = 0; i < m; ++i) {
      for (size_t p = 0; p < k; ++p) transposed[i * k + p] = x[p * m + i];
    }
    x = transposed.data();
  }
  auto dst = out[0].data<float>();
  std::vector<float> scratch;
  MultiplyInto(x, m, packed, dst.data(), scratch);
  if (alpha != 1.0f) {
    for (float& v : dst) v *= alpha;
  }
  if (c != nullptr && beta != 0.0f) {
    const auto cstr = BroadcastStrides(c->shape(), shape);
    auto pc = c->data<float>();
    for (size_t i = 0; i < m; ++i) {
      for (size_t j = 0; j < n; ++j) dst[i * n + j] += beta * pc[i * cstr[0] + j * cstr[1]];
    }
  }
}

// Einsum without ellipses: every letter of the equation is a loop; products of the
// inputs' elements add into the output element the output letters pick.
void Einsum(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  std::string eq;
  for (char c : node.String("equation", "")) {
    if (c != ' ') eq += c;
  }
  if (eq.find('.') != std::string::npos) throw UnsupportedError("Einsum with an ellipsis");
  const auto arrow = eq.find("->");
  std::vector<std::string> terms;
  std::string lhs = eq.substr(0, arrow);
  for (size_t start = 0;;) {
    const auto comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (terms.size() != in.size()) throw Error(ErrorCode::Model, "Einsum's equation and inputs differ in number");
  std::map<char, int64_t> dims;
  for (size_t t = 0; t < terms.size(); ++t) {
    const Tensor& x = Required(node, in, t);
    if (terms[t].size() != x.rank() || x.type() != in[0]->type()) {
      throw Error(ErrorCode::Model, fmt::format("Einsum term '{}' does not match input {}", terms[t], t));
    }
    for (size_t a = 0; a < terms[t].size(); ++a) {
      const char c = terms[t][a];
      if (!std::isalpha(static_cast<unsigned char>(c))) throw Error(ErrorCode::Model, "Einsum's letters");
      auto [it, added] = dims.emplace(c, x.dim(a));
      if (!added && it->second != x.dim(a))
        throw Error(ErrorCode::Model, fmt::format("Einsum's '{}' differs in size", c));
    }
  }
  std::string result;
  if (arrow != std::string::npos) {
    result = eq.substr(arrow + 2);
  } else {  // implicit: the letters seen once, in alphabetical order
    for (const auto& [c, d] : dims) {
      if (std::count(lhs.begin(), lhs.end(), c) == 1) result += c;
    }
  }
  std::string letters;
  for (const auto& [c, d] : dims) letters += c;
  Shape shape, loop;
  for (char c : result) {
    if (!dims.contains(c)) throw Error(ErrorCode::Model, fmt::format("Einsum's output letter '{}' is in no input", c));
    shape.push_back(dims[c]);
  }
  for (char c : letters) loop.push_back(dims[c]);
  out[0] = Tensor(in[0]->type(), shape);
  ElementCount(loop);  // bounded like any tensor
  // Per loop position: the flat index of each input and of the output.
  auto strides_of = [&](const std::string& term, const Shape& s) {
    const auto own = Strides(s);
    std::vector<size_t> st(letters.size(), 0);
    for (size_t a = 0; a < term.size(); ++a) st[letters.find(term[a])] += own[a];
    return st;
  };
  std::vector<std::vector<size_t>> strides;
  for (size_t t = 0; t < terms.size(); ++t) strides.push_back(strides_of(terms[t], in[t]->shape()));
  strides.push_back(strides_of(result, shape));
  std::vector<double> acc(out[0].size(), 0.0);
  ForEachBroadcast(loop, strides, [&](size_t, const std::vector<size_t>& at) {
    double p = 1;
    for (size_t t = 0; t < terms.size(); ++t) p *= ValueAt(*in[t], at[t]);
    acc[at.back()] += p;
  });
  VisitNumeric(out[0].type(), [&](auto zero) {
    using T = decltype(zero);
    auto dst = out[0].data<T>();
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = FromDouble<T>(acc[i]);
  });
}

}  // namespace

void AddMatrixKernels(std::vector<KernelEntry>& t) {
  t.push_back({"MatMul", 1, MatMul});
  t.push_back({"Gemm", 1, Gemm});  // C broadcasts (before opset 7: when `broadcast` says so; NumPy's rule covers it)
  t.push_back({"Einsum", 12, Einsum});
}

}  // namespace runnel::tensor
