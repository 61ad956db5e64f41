// Elementwise operators: unary math and activations, binary arithmetic, comparisons
// and logic with NumPy broadcasting, variadic Sum/Mean/Min/Max, Where, Clip, Cast.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <type_traits>

#include "kernels.hpp"
#include "vector_math.hpp"

namespace runnel::tensor {
namespace {

struct Params {
  double alpha = 0, beta = 0, gamma = 0;
};

template <typename T>
constexpr bool kIsFloat = std::is_floating_point_v<T>;

std::string TypeText(const Tensor& t) {
  return DataTypeName(static_cast<int>(t.type()));
}

// ---- unary ----

// Op: `static Params Read(const Node&)`, `template <class T> static T Apply(T, const Params&)`,
// `kInts`: whether integer elements are accepted too.
template <typename Op>
void Unary(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const Params p = Op::Read(node);
  out[0] = x.type() == DataType::kString ? Tensor(x.type(), x.shape()) : Tensor::Uninitialized(x.type(), x.shape());
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_same_v<T, bool>) {
      throw Error(ErrorCode::Model, fmt::format("{} does not take bool elements", node.op));
    } else if constexpr (!kIsFloat<T> && !Op::kInts) {
      throw Error(ErrorCode::Model, fmt::format("{} takes float elements, not {}", node.op, TypeText(x)));
    } else {
      auto src = x.data<T>();
      auto dst = out[0].data<T>();
      for (size_t i = 0; i < src.size(); ++i) dst[i] = Op::template Apply<T>(src[i], p);
    }
  });
}

// Float tensors through the vectorized array function, others through Op.
template <typename Op, void (*Vector)(std::span<float>)>
void VectorUnary(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.type() != DataType::kFloat) return Unary<Op>(node, in, out);
  out[0] = Tensor::Uninitialized(x.type(), x.shape());
  auto dst = out[0].data<float>();
  std::copy(x.data<float>().begin(), x.data<float>().end(), dst.begin());
  Vector(dst);
}

struct NoParams {
  static Params Read(const Node&) { return {}; }
};

#define RUNNEL_FLOAT_UNARY(NAME, EXPR)   \
  struct NAME : NoParams {               \
    static constexpr bool kInts = false; \
    template <typename T>                \
    static T Apply(T x, const Params&) { \
      return static_cast<T>(EXPR);       \
    }                                    \
  };

RUNNEL_FLOAT_UNARY(SqrtOp, std::sqrt(x))
RUNNEL_FLOAT_UNARY(ExpOp, std::exp(x))
RUNNEL_FLOAT_UNARY(LogOp, std::log(x))
RUNNEL_FLOAT_UNARY(ReciprocalOp, T(1) / x)
RUNNEL_FLOAT_UNARY(FloorOp, std::floor(x))
RUNNEL_FLOAT_UNARY(CeilOp, std::ceil(x))
RUNNEL_FLOAT_UNARY(RoundOp, std::nearbyint(x))  // half to even, as the default rounding mode does
RUNNEL_FLOAT_UNARY(ErfOp, std::erf(x))
RUNNEL_FLOAT_UNARY(SinOp, std::sin(x))
RUNNEL_FLOAT_UNARY(CosOp, std::cos(x))
RUNNEL_FLOAT_UNARY(TanOp, std::tan(x))
RUNNEL_FLOAT_UNARY(AsinOp, std::asin(x))
RUNNEL_FLOAT_UNARY(AcosOp, std::acos(x))
RUNNEL_FLOAT_UNARY(AtanOp, std::atan(x))
RUNNEL_FLOAT_UNARY(SinhOp, std::sinh(x))
RUNNEL_FLOAT_UNARY(CoshOp, std::cosh(x))
RUNNEL_FLOAT_UNARY(AsinhOp, std::asinh(x))
RUNNEL_FLOAT_UNARY(AcoshOp, std::acosh(x))
RUNNEL_FLOAT_UNARY(AtanhOp, std::atanh(x))
RUNNEL_FLOAT_UNARY(SigmoidOp, x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x)))
RUNNEL_FLOAT_UNARY(TanhOp, std::tanh(x))
RUNNEL_FLOAT_UNARY(SoftplusOp, x > 20 ? x : std::log1p(std::exp(x)))
RUNNEL_FLOAT_UNARY(SoftsignOp, x / (T(1) + std::abs(x)))
RUNNEL_FLOAT_UNARY(HardSwishOp, x* std::max(T(0), std::min(T(1), x / T(6) + T(0.5))))
RUNNEL_FLOAT_UNARY(MishOp, x* std::tanh(x > 20 ? x : std::log1p(std::exp(x))))
#undef RUNNEL_FLOAT_UNARY

template <typename T>
T Negate(T x) {
  if constexpr (std::is_signed_v<T> && !kIsFloat<T>) {
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(0) - static_cast<std::make_unsigned_t<T>>(x));
  } else {
    return static_cast<T>(-x);
  }
}

struct AbsOp : NoParams {
  static constexpr bool kInts = true;
  template <typename T>
  static T Apply(T x, const Params&) {
    if constexpr (std::is_unsigned_v<T>) return x;
    return x < 0 ? Negate(x) : x;
  }
};
struct NegOp : NoParams {
  static constexpr bool kInts = true;
  template <typename T>
  static T Apply(T x, const Params&) {
    return Negate(x);
  }
};
struct SignOp : NoParams {
  static constexpr bool kInts = true;
  template <typename T>
  static T Apply(T x, const Params&) {
    if constexpr (kIsFloat<T>) {
      if (std::isnan(x)) return x;
    }
    return static_cast<T>(x > 0 ? 1 : (x < 0 ? -1 : 0));
  }
};
struct ReluOp : NoParams {
  static constexpr bool kInts = true;
  template <typename T>
  static T Apply(T x, const Params&) {
    return x > 0 ? x : T(0);
  }
};

struct LeakyReluOp {
  static constexpr bool kInts = false;
  static Params Read(const Node& n) { return {n.Float("alpha", 0.01f)}; }
  template <typename T>
  static T Apply(T x, const Params& p) {
    return x >= 0 ? x : static_cast<T>(p.alpha * x);
  }
};
struct EluOp {
  static constexpr bool kInts = false;
  static Params Read(const Node& n) { return {n.Float("alpha", 1.0f)}; }
  template <typename T>
  static T Apply(T x, const Params& p) {
    return x >= 0 ? x : static_cast<T>(p.alpha * std::expm1(static_cast<double>(x)));
  }
};
struct CeluOp {
  static constexpr bool kInts = false;
  static Params Read(const Node& n) { return {n.Float("alpha", 1.0f)}; }
  template <typename T>
  static T Apply(T x, const Params& p) {
    return static_cast<T>(std::max(0.0, static_cast<double>(x)) +
                          std::min(0.0, p.alpha * std::expm1(static_cast<double>(x) / p.alpha)));
  }
};
struct SeluOp {
  static constexpr bool kInts = false;
  static Params Read(const Node& n) {
    return {n.Float("alpha", 1.67326319217681884765625f), 0, n.Float("gamma", 1.05070102214813232421875f)};
  }
  template <typename T>
  static T Apply(T x, const Params& p) {
    const double v = x > 0 ? static_cast<double>(x) : p.alpha * std::expm1(static_cast<double>(x));
    return static_cast<T>(p.gamma * v);
  }
};
struct HardSigmoidOp {
  static constexpr bool kInts = false;
  static Params Read(const Node& n) { return {n.Float("alpha", 0.2f), n.Float("beta", 0.5f)}; }
  template <typename T>
  static T Apply(T x, const Params& p) {
    return static_cast<T>(std::max(0.0, std::min(1.0, p.alpha * x + p.beta)));
  }
};
struct ThresholdedReluOp {
  static constexpr bool kInts = false;
  static Params Read(const Node& n) { return {n.Float("alpha", 1.0f)}; }
  template <typename T>
  static T Apply(T x, const Params& p) {
    return x > p.alpha ? x : T(0);
  }
};
struct ShrinkOp {
  static constexpr bool kInts = true;
  static Params Read(const Node& n) { return {n.Float("lambd", 0.5f), n.Float("bias", 0.0f)}; }
  template <typename T>
  static T Apply(T x, const Params& p) {
    const double v = static_cast<double>(x);
    if (v < -p.alpha) return FromDouble<T>(v + p.beta);
    if (v > p.alpha) return FromDouble<T>(v - p.beta);
    return T(0);
  }
};

void Identity(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  out[0] = Required(node, in, 0);
}

// Dropout at inference: the input, and a mask of ones when asked for.
void Dropout(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (in.size() > 2 && in[2] != nullptr && in[2]->size() == 1 && ValueAt(*in[2], 0) != 0) {
    throw UnsupportedError("Dropout in training mode");
  }
  out[0] = x;
  if (out.size() > 1) {
    out[1] = Tensor(DataType::kBool, x.shape());
    for (auto& b : out[1].data<bool>()) b = true;
  }
}

void IsNaN(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  out[0] = Tensor(DataType::kBool, x.shape());
  auto dst = out[0].data<bool>();
  for (size_t i = 0; i < x.size(); ++i) dst[i] = std::isnan(ValueAt(x, i));
}

void IsInf(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const bool neg = node.Int("detect_negative", 1) != 0, pos = node.Int("detect_positive", 1) != 0;
  out[0] = Tensor(DataType::kBool, x.shape());
  auto dst = out[0].data<bool>();
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = ValueAt(x, i);
    dst[i] = std::isinf(v) && ((v > 0 && pos) || (v < 0 && neg));
  }
}

void Not(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.type() != DataType::kBool) throw Error(ErrorCode::Model, "Not takes bool elements");
  out[0] = Tensor(DataType::kBool, x.shape());
  auto src = x.data<bool>();
  auto dst = out[0].data<bool>();
  for (size_t i = 0; i < src.size(); ++i) dst[i] = !src[i];
}

// ---- binary, with broadcasting ----

enum class Result { kSame, kBool };

template <typename T>
T Add(T a, T b) {
  if constexpr (!kIsFloat<T> && !std::is_same_v<T, bool>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));  // wraps, as ONNX Runtime's does
  } else {
    return static_cast<T>(a + b);
  }
}

struct AddOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node&) {
    return Add(a, b);
  }
};
struct SubOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node&) {
    return Add(a, Negate(b));
  }
};
struct MulOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node&) {
    if constexpr (!kIsFloat<T> && !std::is_same_v<T, bool>) {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
    } else {
      return static_cast<T>(a * b);
    }
  }
};
struct DivOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node&) {
    if constexpr (!kIsFloat<T>) {
      if (b == 0) throw Error(ErrorCode::Model, "integer division by zero");
      if constexpr (std::is_signed_v<T>) {
        if (a == std::numeric_limits<T>::min() && b == T(-1)) return a;
      }
    }
    return static_cast<T>(a / b);
  }
};
struct ModOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node& node) {
    if constexpr (kIsFloat<T>) {
      if (node.Int("fmod", 0) == 0) throw Error(ErrorCode::Model, "Mod of floats needs fmod = 1");
      return static_cast<T>(std::fmod(a, b));
    } else {
      if (b == 0) throw Error(ErrorCode::Model, "integer modulo by zero");
      if constexpr (std::is_signed_v<T>) {
        if (b == T(-1)) return T(0);
      }
      T r = static_cast<T>(a % b);
      if (node.Int("fmod", 0) == 0 && r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);  // Python's sign
      return r;
    }
  }
};
struct PReluOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node&) {
    return a < 0 ? static_cast<T>(a * b) : a;
  }
};
struct MinOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node&) {
    if constexpr (kIsFloat<T>) {
      if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
    }
    return b < a ? b : a;
  }
};
struct MaxOp {
  static constexpr Result kResult = Result::kSame;
  template <typename T>
  static T Apply(T a, T b, const Node&) {
    if constexpr (kIsFloat<T>) {
      if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<T>::quiet_NaN();
    }
    return a < b ? b : a;
  }
};

#define RUNNEL_COMPARE(NAME, EXPR)                   \
  struct NAME {                                      \
    static constexpr Result kResult = Result::kBool; \
    template <typename T>                            \
    static bool Apply(T a, T b, const Node&) {       \
      return EXPR;                                   \
    }                                                \
  };
RUNNEL_COMPARE(EqualOp, a == b)
RUNNEL_COMPARE(LessOp, a < b)
RUNNEL_COMPARE(GreaterOp, a > b)
RUNNEL_COMPARE(LessOrEqualOp, a <= b)
RUNNEL_COMPARE(GreaterOrEqualOp, a >= b)
RUNNEL_COMPARE(AndOp, a&& b)
RUNNEL_COMPARE(OrOp, a || b)
RUNNEL_COMPARE(XorOp, static_cast<bool>(a) != static_cast<bool>(b))
#undef RUNNEL_COMPARE

template <typename Op>
Tensor ApplyBinary(const Node& node, const Tensor& a, const Tensor& b) {
  if (a.type() != b.type()) {
    throw Error(ErrorCode::Model, fmt::format("{} of {} and {} elements", node.op, TypeText(a), TypeText(b)));
  }
  const Shape shape = BroadcastShapes(a.shape(), b.shape());
  const std::vector<std::vector<size_t>> strides = {BroadcastStrides(a.shape(), shape),
                                                    BroadcastStrides(b.shape(), shape)};
  // Every element is written below (a string operand throws first).
  Tensor out = Tensor::Uninitialized(Op::kResult == Result::kBool ? DataType::kBool : a.type(), shape);
  VisitNumeric(a.type(), [&](auto zero) {
    using T = decltype(zero);
    using R = std::conditional_t<Op::kResult == Result::kBool, bool, T>;
    if constexpr (std::is_same_v<T, bool> && Op::kResult == Result::kSame) {
      throw Error(ErrorCode::Model, fmt::format("{} does not take bool elements", node.op));
    } else {
      auto pa = a.data<T>();
      auto pb = b.data<T>();
      auto dst = out.data<R>();
      if (dst.empty()) return;
      // Inner runs along which each operand advances by one or repeats one element
      // (equal shapes, a scalar, a bias, an attention mask over [batch, 1, 1, seq]):
      // plain loops the compiler vectorizes; the index walk only over the outer axes.
      const InnerRuns runs = SplitInnerRuns(shape, strides);
      const size_t inner = runs.inner;
      const int mode = (runs.step[0] ? 2 : 0) + (runs.step[1] ? 1 : 0);
      ForEachBroadcast(runs.outer, runs.outer_strides, [&](size_t n, const std::vector<size_t>& at) {
        R* d = dst.data() + n * inner;
        const T* x = pa.data() + at[0];
        const T* y = pb.data() + at[1];
        switch (mode) {
          case 3:
            for (size_t i = 0; i < inner; ++i) d[i] = Op::template Apply<T>(x[i], y[i], node);
            break;
          case 2:
            for (size_t i = 0; i < inner; ++i) d[i] = Op::template Apply<T>(x[i], y[0], node);
            break;
          case 1:
            for (size_t i = 0; i < inner; ++i) d[i] = Op::template Apply<T>(x[0], y[i], node);
            break;
          default:
            for (size_t i = 0; i < inner; ++i) d[i] = Op::template Apply<T>(x[0], y[0], node);
            break;
        }
      });
    }
  });
  return out;
}

template <typename Op>
void Binary(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  out[0] = ApplyBinary<Op>(node, Required(node, in, 0), Required(node, in, 1));
}

// Before opset 7, `broadcast = 1` with an `axis` aligned B's shape with A's from that
// axis on: B gets trailing ones, and NumPy broadcasting then does the rest (which also
// covers the suffix rule and equal shapes).
Tensor LegacyAligned(const Node& node, const Tensor& a, const Tensor& b) {
  Tensor aligned = b;
  const auto* axis = node.Find("axis");
  if (node.Int("broadcast", 0) == 0 || axis == nullptr) return aligned;
  const size_t start = NormalizeAxis(axis->i, a.rank());
  if (start + b.rank() > a.rank()) throw Error(ErrorCode::Model, "the broadcast axis leaves too few axes for B");
  Shape shape = b.shape();
  shape.resize(a.rank() - start, 1);
  aligned.Reshape(std::move(shape));
  return aligned;
}

// Before opset 7 a PRelu slope of C values applies per channel (axis 1).
void LegacyPRelu(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  Tensor slope = Required(node, in, 1);
  if (slope.rank() == 1 && x.rank() >= 2 && slope.dim(0) == x.dim(1) && slope.dim(0) != 1) {
    Shape shape{slope.dim(0)};
    shape.resize(x.rank() - 1, 1);
    slope.Reshape(std::move(shape));
  }
  out[0] = ApplyBinary<PReluOp>(node, x, slope);
}

template <typename Op>
void LegacyBinary(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  out[0] = ApplyBinary<Op>(node, a, LegacyAligned(node, a, Required(node, in, 1)));
}

void Equal(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  if (a.type() != DataType::kString) {
    out[0] = ApplyBinary<EqualOp>(node, a, b);
    return;
  }
  if (b.type() != DataType::kString) throw Error(ErrorCode::Model, "Equal of string and number elements");
  const Shape shape = BroadcastShapes(a.shape(), b.shape());
  out[0] = Tensor(DataType::kBool, shape);
  auto dst = out[0].data<bool>();
  ForEachBroadcast(shape, {BroadcastStrides(a.shape(), shape), BroadcastStrides(b.shape(), shape)},
                   [&](size_t n, const std::vector<size_t>& at) { dst[n] = a.strings()[at[0]] == b.strings()[at[1]]; });
}

// Pow: the exponent may be of another numeric type; computed in double.
void Pow(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& a = Required(node, in, 0);
  const Tensor& b = Required(node, in, 1);
  const Shape shape = BroadcastShapes(a.shape(), b.shape());
  out[0] = Tensor(a.type(), shape);
  Tensor& y = out[0];
  VisitNumeric(a.type(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (std::is_same_v<T, bool>) {
      throw Error(ErrorCode::Model, "Pow of bool elements");
    } else {
      auto pa = a.data<T>();
      auto dst = y.data<T>();
      ForEachBroadcast(shape, {BroadcastStrides(a.shape(), shape), BroadcastStrides(b.shape(), shape)},
                       [&](size_t n, const std::vector<size_t>& at) {
                         const double v = std::pow(static_cast<double>(pa[at[0]]), ValueAt(b, at[1]));
                         if constexpr (kIsFloat<T>) {
                           dst[n] = static_cast<T>(v);
                         } else {
                           const bool fits = std::isfinite(v) &&
                                             v >= static_cast<double>(std::numeric_limits<T>::min()) &&
                                             v <= static_cast<double>(std::numeric_limits<T>::max());
                           dst[n] = fits ? static_cast<T>(v) : T(0);
                         }
                       });
    }
  });
}

// Sum, Mean, Min, Max over any number of inputs, broadcast together.
template <typename Op>
void Variadic(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  Tensor acc = Required(node, in, 0);
  for (size_t i = 1; i < in.size(); ++i) acc = ApplyBinary<Op>(node, acc, Required(node, in, i));
  out[0] = std::move(acc);
}

void Mean(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  Variadic<AddOp>(node, in, out);
  VisitNumeric(out[0].type(), [&](auto zero) {
    using T = decltype(zero);
    if constexpr (kIsFloat<T>) {
      for (auto& v : out[0].data<T>()) v = static_cast<T>(v / static_cast<T>(in.size()));
    } else {
      throw Error(ErrorCode::Model, "Mean takes float elements");
    }
  });
}

void Where(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& c = Required(node, in, 0);
  const Tensor& x = Required(node, in, 1);
  const Tensor& y = Required(node, in, 2);
  if (c.type() != DataType::kBool) throw Error(ErrorCode::Model, "Where's condition must be bool");
  if (x.type() != y.type()) throw Error(ErrorCode::Model, fmt::format("Where of {} and {}", TypeText(x), TypeText(y)));
  const Shape shape = BroadcastShapes(BroadcastShapes(c.shape(), x.shape()), y.shape());
  out[0] = Tensor(x.type(), shape);
  auto cond = c.data<bool>();
  ForEachBroadcast(
      shape,
      {BroadcastStrides(c.shape(), shape), BroadcastStrides(x.shape(), shape), BroadcastStrides(y.shape(), shape)},
      [&](size_t n, const std::vector<size_t>& at) {
        if (cond[at[0]]) {
          CopyElement(x, at[1], out[0], n);
        } else {
          CopyElement(y, at[2], out[0], n);
        }
      });
}

void Clip(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  if (node.opset < 11) {
    lo = node.Float("min", -std::numeric_limits<float>::max());
    hi = node.Float("max", std::numeric_limits<float>::max());
  } else {
    if (in.size() > 1 && in[1] != nullptr) lo = ValueAt(*in[1], 0);
    if (in.size() > 2 && in[2] != nullptr) hi = ValueAt(*in[2], 0);
  }
  out[0] = Tensor(x.type(), x.shape());
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    auto src = x.data<T>();
    auto dst = out[0].data<T>();
    for (size_t i = 0; i < src.size(); ++i) {
      const double v = static_cast<double>(src[i]);
      dst[i] = v < lo ? FromDouble<T>(lo) : (v > hi ? FromDouble<T>(hi) : src[i]);
    }
  });
}

void Cast(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const int64_t to = node.Int("to", 0);
  if (!IsSupportedType(static_cast<int>(to)))
    throw UnsupportedError(fmt::format("Cast to {}", DataTypeName(static_cast<int>(to))));
  const auto type = static_cast<DataType>(to);
  if (type == DataType::kString || x.type() == DataType::kString) {
    if (type != x.type()) throw UnsupportedError("Cast between strings and numbers");
    out[0] = x;
    return;
  }
  out[0] = Tensor(type, x.shape());
  Tensor& y = out[0];
  VisitNumeric(type, [&](auto zero) {
    using T = decltype(zero);
    auto dst = y.data<T>();
    if (x.type() == DataType::kInt64) {  // exact for large integers
      auto src = x.data<int64_t>();
      for (size_t i = 0; i < dst.size(); ++i) {
        if constexpr (std::is_same_v<T, bool>) {
          dst[i] = src[i] != 0;
        } else {
          dst[i] = static_cast<T>(src[i]);
        }
      }
      return;
    }
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = FromDouble<T>(ValueAt(x, i));
  });
}

// ---- GELU ----

// ONNX's Gelu (opset 20): x/2 (1 + erf(x/√2)), or with approximate = "tanh"
// x/2 (1 + tanh(√(2/π) (x + 0.044715 x³))). Floats through the vectorized erf/tanh.
void Gelu(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const std::string approximate = node.String("approximate", "none");
  if (approximate != "none" && approximate != "tanh")
    throw Error(ErrorCode::Model,
                fmt::format("Gelu's approximate must be \"none\" or \"tanh\", not \"{}\"", approximate));
  const bool tanh = approximate == "tanh";
  out[0] = Tensor::Uninitialized(x.type(), x.shape());
  if (x.type() == DataType::kFloat) {
    auto src = x.data<float>();
    auto dst = out[0].data<float>();
    const float k = tanh ? static_cast<float>(std::sqrt(2.0 / M_PI)) : static_cast<float>(M_SQRT1_2);
    for (size_t i = 0; i < src.size(); ++i)
      dst[i] = tanh ? k * (src[i] + 0.044715f * src[i] * src[i] * src[i]) : k * src[i];
    tanh ? TanhInPlace(dst) : ErfInPlace(dst);
    for (size_t i = 0; i < src.size(); ++i) dst[i] = 0.5f * src[i] * (1.0f + dst[i]);
    return;
  }
  if (x.type() != DataType::kDouble)
    throw Error(ErrorCode::Model, fmt::format("Gelu takes floats, not {}", TypeText(x)));
  auto src = x.data<double>();
  auto dst = out[0].data<double>();
  for (size_t i = 0; i < src.size(); ++i) {
    const double v = src[i];
    dst[i] = 0.5 * v *
             (1 + (tanh ? std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)) : std::erf(v * M_SQRT1_2)));
  }
}

// The erf GELU as exporters write it out — Div(x, a) → Erf → Add(·, b) → Mul(x, ·) →
// Mul(·, c), or with x·c first — fused (FuseErfGelu): one pass, one value, the same
// float operations in the same order as the five nodes.
struct ErfGeluState final : NodeState {
  float divisor = 0, add = 0, scale = 0;
  bool scale_first = false;  // (x·c)·(erf(x/a) + b) rather than (x·(erf(x/a) + b))·c
  size_t rank = 0;           // of the constants' broadcast: the output has at least this rank
};

void ErfGelu(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  if (x.type() != DataType::kFloat) throw Error(ErrorCode::Model, fmt::format("Div of float and {}", TypeText(x)));
  const auto& s = node.State<ErfGeluState>();
  Shape shape = x.shape();
  if (shape.size() < s.rank) shape.insert(shape.begin(), s.rank - shape.size(), 1);
  out[0] = Tensor::Uninitialized(DataType::kFloat, std::move(shape));
  auto src = x.data<float>();
  auto dst = out[0].data<float>();
  for (size_t i = 0; i < src.size(); ++i) dst[i] = src[i] / s.divisor;
  ErfInPlace(dst);
  for (size_t i = 0; i < src.size(); ++i) {
    const float sum = dst[i] + s.add;
    dst[i] = s.scale_first ? (src[i] * s.scale) * sum : (src[i] * sum) * s.scale;
  }
}

// A one-element float constant, or null.
const Tensor* ScalarConstant(const Graph& g, int id) {
  if (id < 0 || !g.constants[static_cast<size_t>(id)]) return nullptr;
  const Tensor* t = g.constants[static_cast<size_t>(id)].get();
  return t->type() == DataType::kFloat && t->size() == 1 ? t : nullptr;
}

// Node n when it is `op` of the default domain (opset ≥ 7: broadcasting binaries).
const Node* NodeIs(const Graph& g, int n, std::string_view op) {
  if (n < 0) return nullptr;
  const Node& node = g.nodes[static_cast<size_t>(n)];
  return node.domain.empty() && node.op == op && node.opset >= 7 && node.outputs.size() == 1 ? &node : nullptr;
}

// The input of binary `node` other than value `id` when it is a scalar constant, or null.
const Tensor* OtherScalar(const Graph& g, const Node& node, int id) {
  if (node.inputs.size() != 2) return nullptr;
  if (node.inputs[0] == id) return ScalarConstant(g, node.inputs[1]);
  if (node.inputs[1] == id) return ScalarConstant(g, node.inputs[0]);
  return nullptr;
}

// The erf GELU starting at Div node `d`, fused in its place; returns whether it was.
bool FuseErfGeluAt(Graph& g, size_t d) {
  const Node* div = NodeIs(g, static_cast<int>(d), "Div");
  if (div == nullptr || div->inputs.size() != 2) return false;
  const int x = div->inputs[0];
  const Tensor* a = ScalarConstant(g, div->inputs[1]);
  const int e = SoleReader(g, div->outputs[0]);
  if (a == nullptr || e < 0) return false;
  const Node& erf = g.nodes[static_cast<size_t>(e)];
  // (the loader gives every node its first output; an Erf of other arity is not this)
  if (erf.op != "Erf" || !erf.domain.empty() || erf.inputs.size() != 1 || erf.outputs.size() != 1) return false;
  const int erf_out = erf.outputs[0];
  const int ad = SoleReader(g, erf_out);
  const Node* add = NodeIs(g, ad, "Add");
  const Tensor* b = add == nullptr ? nullptr : OtherScalar(g, *add, erf_out);
  if (b == nullptr) return false;
  const int m1 = SoleReader(g, add->outputs[0]);
  const Node* mul = NodeIs(g, m1, "Mul");
  if (mul == nullptr || mul->inputs.size() != 2) return false;
  const int other = mul->inputs[0] == add->outputs[0] ? mul->inputs[1] : mul->inputs[0];
  auto state = std::make_shared<ErfGeluState>();
  std::vector<int> gone{e, ad, m1};
  int y = -1;
  const Tensor* c = nullptr;
  if (other == x) {  // (x·(erf + b))·c
    const int m2 = SoleReader(g, mul->outputs[0]);
    const Node* scale = NodeIs(g, m2, "Mul");
    c = scale == nullptr ? nullptr : OtherScalar(g, *scale, mul->outputs[0]);
    if (c == nullptr) return false;
    gone.push_back(m2);
    y = scale->outputs[0];
  } else {  // (x·c)·(erf + b)
    int h = -1;
    for (size_t n = 0; n < g.nodes.size() && h < 0; ++n) {
      if (!g.nodes[n].outputs.empty() && g.nodes[n].outputs[0] == other) h = static_cast<int>(n);
    }
    const Node* first = NodeIs(g, h, "Mul");
    c = first == nullptr ? nullptr : OtherScalar(g, *first, x);
    if (c == nullptr || SoleReader(g, other) != m1) return false;
    state->scale_first = true;
    gone.push_back(h);
    y = mul->outputs[0];
  }
  state->divisor = a->data<float>()[0];
  state->add = b->data<float>()[0];
  state->scale = c->data<float>()[0];
  state->rank = std::max({a->rank(), b->rank(), c->rank()});
  // In the place of the first of them (each reads only x or their own values; the
  // readers of y come after the last).
  const size_t at = std::min(d, static_cast<size_t>(*std::min_element(gone.begin(), gone.end())));
  Node fused = *div;
  fused.op = "Gelu(erf)";
  fused.inputs = {x};
  fused.outputs = {y};
  fused.kernel = ErfGelu;
  fused.state = std::move(state);
  gone.push_back(static_cast<int>(d));
  std::sort(gone.begin(), gone.end(), std::greater<>());
  std::vector<int> constants;
  for (const int n : gone) {
    for (const int id : g.nodes[static_cast<size_t>(n)].inputs) constants.push_back(id);
  }
  for (const int n : gone) {
    if (static_cast<size_t>(n) != at) g.nodes.erase(g.nodes.begin() + n);
  }
  // `at` is the smallest: the erasures above it left it where it was.
  g.nodes[at] = std::move(fused);
  for (const int id : constants) {
    if (id >= 0 && g.constants[static_cast<size_t>(id)] && Unread(g, id)) g.constants[static_cast<size_t>(id)].reset();
  }
  return true;
}

}  // namespace

void FuseErfGelu(Graph& g) {
  for (size_t d = 0; d < g.nodes.size(); ++d) FuseErfGeluAt(g, d);
}

void AddElementwiseKernels(std::vector<KernelEntry>& t) {
  t.push_back({"Gelu", 20, Gelu});
  t.push_back({"Identity", 1, Identity});
  t.push_back({"Dropout", 1, Dropout});
  t.push_back({"Abs", 6, Unary<AbsOp>});
  t.push_back({"Neg", 6, Unary<NegOp>});
  t.push_back({"Sign", 9, Unary<SignOp>});
  t.push_back({"Relu", 6, Unary<ReluOp>});
  t.push_back({"Sqrt", 6, Unary<SqrtOp>});
  t.push_back({"Exp", 6, VectorUnary<ExpOp, ExpInPlace>});
  t.push_back({"Log", 6, Unary<LogOp>});
  t.push_back({"Reciprocal", 6, Unary<ReciprocalOp>});
  t.push_back({"Floor", 6, Unary<FloorOp>});
  t.push_back({"Ceil", 6, Unary<CeilOp>});
  t.push_back({"Round", 11, Unary<RoundOp>});
  t.push_back({"Erf", 9, VectorUnary<ErfOp, ErfInPlace>});
  t.push_back({"Sin", 7, Unary<SinOp>});
  t.push_back({"Cos", 7, Unary<CosOp>});
  t.push_back({"Tan", 7, Unary<TanOp>});
  t.push_back({"Asin", 7, Unary<AsinOp>});
  t.push_back({"Acos", 7, Unary<AcosOp>});
  t.push_back({"Atan", 7, Unary<AtanOp>});
  t.push_back({"Sinh", 9, Unary<SinhOp>});
  t.push_back({"Cosh", 9, Unary<CoshOp>});
  t.push_back({"Asinh", 9, Unary<AsinhOp>});
  t.push_back({"Acosh", 9, Unary<AcoshOp>});
  t.push_back({"Atanh", 9, Unary<AtanhOp>});
  t.push_back({"Sigmoid", 6, Unary<SigmoidOp>});
  t.push_back({"Tanh", 6, VectorUnary<TanhOp, TanhInPlace>});
  t.push_back({"Softplus", 1, Unary<SoftplusOp>});
  t.push_back({"Softsign", 1, Unary<SoftsignOp>});
  t.push_back({"HardSwish", 14, Unary<HardSwishOp>});
  t.push_back({"Mish", 18, Unary<MishOp>});
  t.push_back({"LeakyRelu", 6, Unary<LeakyReluOp>});
  t.push_back({"Elu", 6, Unary<EluOp>});
  t.push_back({"Celu", 12, Unary<CeluOp>});
  t.push_back({"Selu", 6, Unary<SeluOp>});
  t.push_back({"HardSigmoid", 6, Unary<HardSigmoidOp>});
  t.push_back({"ThresholdedRelu", 10, Unary<ThresholdedReluOp>});
  t.push_back({"Shrink", 9, Unary<ShrinkOp>});
  t.push_back({"IsNaN", 9, IsNaN});
  t.push_back({"IsInf", 10, IsInf});
  t.push_back({"Not", 1, Not});
  // Binary operators broadcast from opset 7 on (before: the `broadcast` attribute).
  t.push_back({"Add", 1, LegacyBinary<AddOp>});
  t.push_back({"Sub", 1, LegacyBinary<SubOp>});
  t.push_back({"Mul", 1, LegacyBinary<MulOp>});
  t.push_back({"Div", 1, LegacyBinary<DivOp>});
  t.push_back({"PRelu", 1, LegacyPRelu});
  t.push_back({"Pow", 1, Pow});
  t.push_back({"Sum", 1, Variadic<AddOp>});
  t.push_back({"Min", 1, Variadic<MinOp>});
  t.push_back({"Max", 1, Variadic<MaxOp>});
  t.push_back({"Mean", 1, Mean});
  t.push_back({"Add", 7, Binary<AddOp>});
  t.push_back({"Sub", 7, Binary<SubOp>});
  t.push_back({"Mul", 7, Binary<MulOp>});
  t.push_back({"Div", 7, Binary<DivOp>});
  t.push_back({"Mod", 10, Binary<ModOp>});
  t.push_back({"Pow", 7, Pow});
  t.push_back({"PRelu", 7, Binary<PReluOp>});
  t.push_back({"Equal", 7, Equal});
  t.push_back({"Less", 7, Binary<LessOp>});
  t.push_back({"Greater", 7, Binary<GreaterOp>});
  t.push_back({"LessOrEqual", 12, Binary<LessOrEqualOp>});
  t.push_back({"GreaterOrEqual", 12, Binary<GreaterOrEqualOp>});
  t.push_back({"And", 7, Binary<AndOp>});
  t.push_back({"Or", 7, Binary<OrOp>});
  t.push_back({"Xor", 7, Binary<XorOp>});
  t.push_back({"Sum", 8, Variadic<AddOp>});
  t.push_back({"Min", 8, Variadic<MinOp>});
  t.push_back({"Max", 8, Variadic<MaxOp>});
  t.push_back({"Mean", 8, Mean});
  t.push_back({"Where", 9, Where});
  t.push_back({"Clip", 6, Clip});
  t.push_back({"Cast", 6, Cast});
}

}  // namespace runnel::tensor
