// Classic machine-learning operators of the ai.onnx.ml domain, as scikit-learn
// pipelines converted to ONNX use them: LinearRegressor, LinearClassifier, Scaler,
// Normalizer, Binarizer, Imputer, ArrayFeatureExtractor, FeatureVectorizer,
// OneHotEncoder, LabelEncoder, CategoryMapper, ZipMap. Where the specification leaves
// a case open (a binary classifier with one score column, a one-target regressor's
// post_transform), the kernels do what ONNX Runtime does, so that a model scores here
// as it scores there.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <variant>

#include "kernels.hpp"

namespace runnel::tensor {
namespace {

// Rows of a [N, C] (or [C]: one row) numeric input, as float: the tensor's own floats
// (valid while it lives: the kernel's run), or a converted copy.
struct Rows {
  size_t rows = 0, cols = 0;
  const float* data = nullptr;
  std::vector<float> converted;  // other element types
};

Rows FloatRows(const Tensor& x) {
  if (x.rank() != 1 && x.rank() != 2)
    throw Error(ErrorCode::Model, fmt::format("input has shape {}, expected [N, C]", ShapeText(x.shape())));
  Rows r;
  r.rows = x.rank() == 1 ? 1 : static_cast<size_t>(x.dim(0));
  r.cols = x.rank() == 1 ? x.size() : static_cast<size_t>(x.dim(1));
  if (x.type() == DataType::kFloat) {
    r.data = x.data<float>().data();
    return r;
  }
  r.converted.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) r.converted[i] = static_cast<float>(ValueAt(x, i));
  r.data = r.converted.data();
  return r;
}

enum class PostTransform { kNone, kLogistic, kSoftmax, kSoftmaxZero };

PostTransform PostTransformOf(const Node& node) {
  const std::string name = node.String("post_transform", "NONE");
  if (name == "NONE") return PostTransform::kNone;
  if (name == "LOGISTIC") return PostTransform::kLogistic;
  if (name == "SOFTMAX") return PostTransform::kSoftmax;
  if (name == "SOFTMAX_ZERO") return PostTransform::kSoftmaxZero;
  throw UnsupportedError(fmt::format("{}: post_transform '{}'", node.Label(), name));
}

float Logistic(float v) {
  const float e = 1.0f / (1.0f + std::exp(-std::abs(v)));
  return v < 0 ? 1.0f - e : e;
}

// Applies `transform` to one row of scores (two or more: a single score is left as
// it is, as ONNX Runtime does).
void Transform(PostTransform transform, std::span<float> s) {
  if (s.size() < 2) return;
  switch (transform) {
    case PostTransform::kNone: break;
    case PostTransform::kLogistic:
      for (float& v : s) v = Logistic(v);
      break;
    case PostTransform::kSoftmax: {
      const float top = *std::max_element(s.begin(), s.end());
      float sum = 0;
      for (float& v : s) sum += (v = std::exp(v - top));
      for (float& v : s) v /= sum;
      break;
    }
    case PostTransform::kSoftmaxZero: {  // zeros stay zero
      const float top = *std::max_element(s.begin(), s.end());
      float sum = 0;
      for (float& v : s) {
        if (std::abs(v) > 1e-7f)
          sum += (v = std::exp(v - top));
        else
          v *= std::exp(-top);
      }
      for (float& v : s) v /= sum;
      break;
    }
  }
}

// The number of targets: LinearRegressor's `targets`, a classifier's classes.
size_t LinearTargets(const Node& node) {
  if (node.op == "LinearRegressor") {
    const int64_t targets = node.Int("targets", 1);
    if (targets < 1) throw Error(ErrorCode::Model, fmt::format("targets is {}", targets));
    return static_cast<size_t>(targets);
  }
  const auto intercepts = node.FloatList("intercepts");
  const size_t labels =
      std::max(node.IntList("classlabels_ints").size(), node.StringList("classlabels_strings").size());
  const size_t classes = !intercepts.empty() ? intercepts.size() : labels;
  if (classes == 0) throw Error(ErrorCode::Model, "the classifier has no class");
  return classes;
}

// Whether all `n` floats are ±0, 16 at a time: a TF-IDF row is mostly zero blocks, and
// a branch per element costs more than the products it skips.
constexpr size_t kZeroBlock = 16;
bool AllZero(const float* v, size_t n) {
  uint32_t bits = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t b = 0;
    std::memcpy(&b, v + i, sizeof b);
    bits |= b & 0x7FFFFFFFu;
  }
  return bits == 0;
}

// scores[n, t] = sum_c x[n, c] * coefficients[t * cols + c] + intercepts[t], summed in
// feature order, zero features skipped.
std::vector<float> Linear(const Node& node, const Rows& x) {
  const auto& s = node.State<LinearState>();
  if (x.cols != s.cols)
    throw Error(ErrorCode::Model,
                fmt::format("{} coefficients for {} outputs of {} features", s.by_feature.size(), s.targets, x.cols));
  std::vector<float> scores(x.rows * s.targets);
  for (size_t n = 0; n < x.rows; ++n) {
    float* acc = scores.data() + n * s.targets;
    if (!s.intercepts.empty()) std::copy(s.intercepts.begin(), s.intercepts.end(), acc);
    const float* row = x.data + n * x.cols;
    for (size_t block = 0; block < x.cols; block += kZeroBlock) {
      const size_t end = std::min(x.cols, block + kZeroBlock);
      if (AllZero(row + block, end - block)) continue;
      for (size_t c = block; c < end; ++c) {
        if (row[c] != 0.0f) s.Accumulate(c, row[c], acc);
      }
    }
  }
  return scores;
}

void LinearRegressor(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Rows x = FloatRows(Required(node, in, 0));
  const size_t t = node.State<LinearState>().targets;
  const auto targets = static_cast<int64_t>(t);
  auto scores = Linear(node, x);
  const PostTransform transform = PostTransformOf(node);
  for (size_t n = 0; n < x.rows; ++n) Transform(transform, std::span(scores).subspan(n * t, t));
  out[0] = Tensor::Of<float>(DataType::kFloat, {static_cast<int64_t>(x.rows), targets}, scores);
}

// A classifier's labels: int64s or strings, one per class.
struct Labels {
  std::vector<int64_t> ints;
  std::vector<std::string> strings;

  static Labels Of(const Node& node, std::string_view ints_name) {
    Labels l;
    l.ints = node.IntList(ints_name);
    l.strings = node.StringList("classlabels_strings");
    return l;
  }
  size_t size() const { return strings.empty() ? ints.size() : strings.size(); }
  Tensor Make(size_t rows) const {
    return Tensor(strings.empty() ? DataType::kInt64 : DataType::kString, {int64_t(rows)});
  }
  // out[row] = label `k`, or, past the labels, `k` itself ("0"/"1" for strings).
  void Set(Tensor& out, size_t row, size_t k) const {
    if (!strings.empty()) {
      out.strings()[row] = k < strings.size() ? strings[k] : std::to_string(k);
    } else {
      out.data<int64_t>()[row] = k < ints.size() ? ints[k] : static_cast<int64_t>(k);
    }
  }
};

void LinearClassifier(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Rows x = FloatRows(Required(node, in, 0));
  auto scores = Linear(node, x);
  ClassifierOutputs(node, node.State<LinearState>().targets, scores, x.rows, out);
}

// One value per feature, or one for all: `values[c]` or `values[0]`.
float PerFeature(const std::vector<float>& values, size_t c, const char* what, size_t cols) {
  if (values.size() == 1) return values[0];
  if (values.size() != cols)
    throw Error(ErrorCode::Model, fmt::format("{} {} values for {} features", values.size(), what, cols));
  return values[c];
}

void Scaler(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto offset = node.FloatList("offset"), scale = node.FloatList("scale");
  const size_t cols = x.rank() == 0 ? 1 : static_cast<size_t>(x.dim(x.rank() - 1));
  out[0] = Tensor(DataType::kFloat, x.shape());
  auto y = out[0].data<float>();
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t c = i % cols;
    const float o = offset.empty() ? 0.0f : PerFeature(offset, c, "offset", cols);
    const float s = scale.empty() ? 1.0f : PerFeature(scale, c, "scale", cols);
    y[i] = (static_cast<float>(ValueAt(x, i)) - o) * s;
  }
}

// The sum of f(v) over `row` in 8 interleaved partial sums: the compiler vectorizes it
// (one running sum is a chain of dependent adds; a TF-IDF row is thousands wide).
template <typename F>
float SumOf(std::span<const float> row, F f) {
  float partial[8] = {};
  size_t i = 0;
  for (; i + 8 <= row.size(); i += 8) {
    for (size_t k = 0; k < 8; ++k) partial[k] += f(row[i + k]);
  }
  float sum = 0;
  for (; i < row.size(); ++i) sum += f(row[i]);
  for (const float p : partial) sum += p;
  return sum;
}

// The divisor of a dense row: its largest value, the sum of its absolute values or its
// Euclidean norm.
float DenseDivisor(Norm norm, std::span<const float> row) {
  switch (norm) {
    case Norm::kMax: return row.empty() ? 0.0f : *std::max_element(row.begin(), row.end());
    case Norm::kL1: return SumOf(row, [](float v) { return std::abs(v); });
    case Norm::kL2: return std::sqrt(SumOf(row, [](float v) { return v * v; }));
  }
  return 0.0f;
}

// Each row divided by its largest value (MAX), the sum of its absolute values (L1)
// or its Euclidean norm (L2). A row whose divisor is 0 stays as it is.
void Normalizer(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& input = Required(node, in, 0);
  const Norm norm = NormOf(node);
  if (input.rank() != 1 && input.rank() != 2)
    throw Error(ErrorCode::Model, fmt::format("input has shape {}, expected [N, C]", ShapeText(input.shape())));
  const size_t cols = input.rank() == 1 ? input.size() : static_cast<size_t>(input.dim(1));
  out[0] = Tensor::Uninitialized(DataType::kFloat, input.shape());  // copied whole below
  auto y = out[0].data<float>();
  if (input.type() == DataType::kFloat) {
    std::copy_n(input.data<float>().begin(), input.size(), y.begin());
  } else {
    for (size_t i = 0; i < input.size(); ++i) y[i] = static_cast<float>(ValueAt(input, i));
  }
  for (size_t start = 0; cols > 0 && start < y.size(); start += cols) {
    auto row = y.subspan(start, cols);
    const float d = DenseDivisor(norm, row);
    if (d != 0) {
      for (float& v : row) v /= d;
    }
  }
}

void Binarizer(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const double threshold = node.Float("threshold", 0.0f);
  out[0] = Tensor(x.type(), x.shape());
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    auto src = x.data<T>();
    auto dst = out[0].data<T>();
    for (size_t i = 0; i < src.size(); ++i) dst[i] = static_cast<double>(src[i]) > threshold ? T(1) : T(0);
  });
}

// Replaces each element equal to replaced_value_float (NaN: each NaN, as
// scikit-learn's SimpleImputer converts) or replaced_value_int64 by its feature's
// imputed value.
void Imputer(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const size_t cols = x.rank() == 0 ? 1 : static_cast<size_t>(x.dim(x.rank() - 1));
  out[0] = x;
  if (x.type() == DataType::kInt64) {
    const auto imputed = node.IntList("imputed_value_int64s");
    const int64_t replaced = node.Int("replaced_value_int64", 0);
    auto v = out[0].data<int64_t>();
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] != replaced) continue;
      if (imputed.size() != 1 && imputed.size() != cols)
        throw Error(ErrorCode::Model, fmt::format("{} imputed values for {} features", imputed.size(), cols));
      v[i] = imputed.size() == 1 ? imputed[0] : imputed[i % cols];
    }
    return;
  }
  if (x.type() != DataType::kFloat && x.type() != DataType::kDouble)
    throw UnsupportedError(fmt::format("Imputer of {}", DataTypeName(static_cast<int>(x.type()))));
  const auto imputed = node.FloatList("imputed_value_floats");
  const float replaced = node.Float("replaced_value_float", 0.0f);
  VisitNumeric(x.type(), [&](auto zero) {
    using T = decltype(zero);
    auto v = out[0].data<T>();
    for (size_t i = 0; i < v.size(); ++i) {
      const bool hit = std::isnan(replaced) ? std::isnan(v[i]) : v[i] == static_cast<T>(replaced);
      if (hit) v[i] = static_cast<T>(PerFeature(imputed, i % cols, "imputed", cols));
    }
  });
}

// The elements of X's last axis at the given indices: [..., C] -> [..., k] ([C] ->
// [1, k]).
void ArrayFeatureExtractor(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto indices = Ints(Required(node, in, 1));
  if (x.rank() == 0) throw Error(ErrorCode::Model, "ArrayFeatureExtractor of a scalar");
  const auto cols = x.dim(x.rank() - 1);
  for (int64_t i : indices) {
    if (i < 0 || i >= cols)
      throw Error(ErrorCode::Model, fmt::format("index {} is out of range for {} columns", i, cols));
  }
  Shape shape = x.rank() == 1 ? Shape{1} : Shape(x.shape().begin(), x.shape().end() - 1);
  shape.push_back(static_cast<int64_t>(indices.size()));
  out[0] = Tensor(x.type(), shape);
  const size_t rows = x.size() / std::max<size_t>(1, static_cast<size_t>(cols));
  for (size_t r = 0; r < rows; ++r) {
    for (size_t k = 0; k < indices.size(); ++k) {
      CopyElement(x, r * static_cast<size_t>(cols) + static_cast<size_t>(indices[k]), out[0], r * indices.size() + k);
    }
  }
}

// Inputs [N, C_i] side by side as float [N, sum of inputdimensions]: each input cut or
// zero-padded to its declared width.
void FeatureVectorizer(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const auto dims = node.IntList("inputdimensions");
  if (dims.size() != in.size())
    throw Error(ErrorCode::Model, fmt::format("{} inputdimensions for {} inputs", dims.size(), in.size()));
  int64_t total = 0;
  for (int64_t d : dims) {
    if (d < 0 || d > int64_t{1} << 24) throw Error(ErrorCode::Model, fmt::format("an input dimension of {}", d));
    total += d;
  }
  const Tensor& first = Required(node, in, 0);
  const int64_t rows = first.rank() <= 1 ? 1 : first.dim(0);
  out[0] = Tensor(DataType::kFloat, {rows, total});
  auto y = out[0].data<float>();
  size_t offset = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const Tensor& x = Required(node, in, i);
    const int64_t x_rows = x.rank() <= 1 ? 1 : x.dim(0);
    if (x_rows != rows) throw Error(ErrorCode::Model, fmt::format("input {} has {} rows, input 0 {}", i, x_rows, rows));
    const size_t cols = x.size() / static_cast<size_t>(std::max<int64_t>(rows, 1));
    const auto width = static_cast<size_t>(dims[i]);
    for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
      for (size_t c = 0; c < std::min(cols, width); ++c) {
        y[r * static_cast<size_t>(total) + offset + c] = static_cast<float>(ValueAt(x, r * cols + c));
      }
    }
    offset += width;
  }
}

// A key of the string, integer or float maps below.
using Key = std::variant<std::string, int64_t, float>;

Key KeyAt(const Tensor& t, size_t i) {
  if (t.type() == DataType::kString) return t.strings()[i];
  if (t.type() == DataType::kFloat || t.type() == DataType::kDouble) return static_cast<float>(ValueAt(t, i));
  return IntAt(t, i);
}

struct KeyHash {
  size_t operator()(const Key& k) const { return std::hash<Key>{}(k); }
};

// A value of the maps' output (a typed default plus one value per key).
struct ValueList {
  DataType type = DataType::kInt64;
  std::vector<std::string> strings;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::string default_string;
  int64_t default_int = -1;
  float default_float = 0;

  size_t size() const {
    return type == DataType::kString ? strings.size() : type == DataType::kInt64 ? ints.size() : floats.size();
  }
  // out[i] = value k, or the default for k == npos.
  void Set(Tensor& out, size_t i, size_t k) const {
    const bool hit = k != std::string::npos;
    switch (type) {
      case DataType::kString: out.strings()[i] = hit ? strings[k] : default_string; break;
      case DataType::kInt64: out.data<int64_t>()[i] = hit ? ints[k] : default_int; break;
      default: out.data<float>()[i] = hit ? floats[k] : default_float; break;
    }
  }
};

// A lookup from keys to values, prepared at load (LabelEncoder, CategoryMapper).
struct MapState : NodeState {
  std::unordered_map<Key, size_t, KeyHash> index;  // key -> its position in values
  ValueList values;
  DataType key_type = DataType::kString;

  void AddKeys(const std::vector<Key>& keys) {
    if (keys.size() != values.size())
      throw Error(ErrorCode::Model, fmt::format("{} keys for {} values", keys.size(), values.size()));
    for (size_t i = 0; i < keys.size(); ++i) index.emplace(keys[i], i);  // the first of a repeated key wins
  }
};

template <typename T>
std::vector<Key> KeysOf(const std::vector<T>& v) {
  return {v.begin(), v.end()};
}

// LabelEncoder opset 1: classes_strings; strings map to their index, integers to the
// class string of that index.
std::shared_ptr<const NodeState> PrepareLabelEncoderV1(const Node& node) {
  auto s = std::make_shared<MapState>();
  const auto classes = node.StringList("classes_strings");
  // Both directions are served by one map each way: the input type picks at run.
  s->values.type = DataType::kInt64;
  s->values.default_int = node.Int("default_int64", -1);
  s->values.default_string = node.String("default_string", "_Unused");
  for (size_t i = 0; i < classes.size(); ++i) {
    s->values.ints.push_back(static_cast<int64_t>(i));
    s->values.strings.push_back(classes[i]);
  }
  s->AddKeys(KeysOf(classes));
  return s;
}

// LabelEncoder opset 2: keys_{strings,int64s,floats} -> values_{strings,int64s,floats}.
std::shared_ptr<const NodeState> PrepareLabelEncoder(const Node& node) {
  if (node.opset < 2) return PrepareLabelEncoderV1(node);
  auto s = std::make_shared<MapState>();
  auto& v = s->values;
  v.strings = node.StringList("values_strings");
  v.ints = node.IntList("values_int64s");
  v.floats = node.FloatList("values_floats");
  v.type = !v.strings.empty() ? DataType::kString : !v.ints.empty() ? DataType::kInt64 : DataType::kFloat;
  v.default_string = node.String("default_string", "_Unused");
  v.default_int = node.Int("default_int64", -1);
  v.default_float = node.Float("default_float", -0.0f);
  if (node.Find("keys_tensor") != nullptr || node.Find("values_tensor") != nullptr)
    throw UnsupportedError("LabelEncoder keys_tensor / values_tensor");
  const auto strings = node.StringList("keys_strings");
  const auto ints = node.IntList("keys_int64s");
  const auto floats = node.FloatList("keys_floats");
  s->key_type = !strings.empty() ? DataType::kString : !ints.empty() ? DataType::kInt64 : DataType::kFloat;
  s->AddKeys(!strings.empty() ? KeysOf(strings) : !ints.empty() ? KeysOf(ints) : KeysOf(floats));
  return s;
}

void LabelEncoder(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto& s = node.State<MapState>();
  ValueList values = s.values;
  if (node.opset < 2) {  // strings -> indexes, integers -> strings
    if (x.type() != DataType::kString) {
      out[0] = Tensor(DataType::kString, x.shape());
      for (size_t i = 0; i < x.size(); ++i) {
        const int64_t k = IntAt(x, i);
        out[0].strings()[i] =
            k >= 0 && static_cast<size_t>(k) < values.strings.size() ? values.strings[k] : values.default_string;
      }
      return;
    }
    values.type = DataType::kInt64;
  }
  out[0] = Tensor(values.type, x.shape());
  for (size_t i = 0; i < x.size(); ++i) {
    auto it = s.index.find(KeyAt(x, i));
    values.Set(out[0], i, it == s.index.end() ? std::string::npos : it->second);
  }
}

// CategoryMapper: cats_strings[i] <-> cats_int64s[i], in the direction the input's
// type says.
std::shared_ptr<const NodeState> PrepareCategoryMapper(const Node& node) {
  auto s = std::make_shared<MapState>();
  const auto strings = node.StringList("cats_strings");
  const auto ints = node.IntList("cats_int64s");
  if (strings.size() != ints.size())
    throw Error(ErrorCode::Model, fmt::format("{} cats_strings for {} cats_int64s", strings.size(), ints.size()));
  s->values.strings = strings;
  s->values.ints = ints;
  s->values.default_string = node.String("default_string", "_Unused");
  s->values.default_int = node.Int("default_int64", -1);
  for (size_t i = 0; i < strings.size(); ++i) {
    s->index.emplace(strings[i], i);
    s->index.emplace(ints[i], i);
  }
  return s;
}

void CategoryMapper(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto& s = node.State<MapState>();
  ValueList values = s.values;
  values.type = x.type() == DataType::kString ? DataType::kInt64 : DataType::kString;
  out[0] = Tensor(values.type, x.shape());
  for (size_t i = 0; i < x.size(); ++i) {
    auto it = s.index.find(KeyAt(x, i));
    values.Set(out[0], i, it == s.index.end() ? std::string::npos : it->second);
  }
}

// X's shape plus one axis of len(cats): 1 at the element's category. An unknown
// category is all zeros, or an error when `zeros` is 0.
void OneHotEncoder(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const auto strings = node.StringList("cats_strings");
  const auto ints = node.IntList("cats_int64s");
  const size_t cats = strings.empty() ? ints.size() : strings.size();
  if (cats == 0) throw Error(ErrorCode::Model, "OneHotEncoder has no category");
  const bool zeros = node.Int("zeros", 1) != 0;
  Shape shape = x.shape();
  shape.push_back(static_cast<int64_t>(cats));
  out[0] = Tensor(DataType::kFloat, shape);
  auto y = out[0].data<float>();
  for (size_t i = 0; i < x.size(); ++i) {
    size_t k = cats;
    if (x.type() == DataType::kString) {
      k = static_cast<size_t>(std::find(strings.begin(), strings.end(), x.strings()[i]) - strings.begin());
    } else if (!ints.empty()) {
      const auto v = static_cast<int64_t>(ValueAt(x, i));
      k = static_cast<size_t>(std::find(ints.begin(), ints.end(), v) - ints.begin());
    }
    if (k < cats) {
      y[i * cats + k] = 1.0f;
    } else if (!zeros) {
      throw Error(ErrorCode::Model, fmt::format("element {} is not one of the {} categories", i, cats));
    }
  }
}

// ZipMap turns [N, C] probabilities into one map per row, label -> probability. The
// runtime keeps them as the [N, C] tensor, columns in label order: that is how a
// pipeline serves them (one column per class).
void ZipMap(const Node& node, std::span<const Tensor* const> in, std::span<Tensor> out) {
  const Tensor& x = Required(node, in, 0);
  const size_t labels =
      std::max(node.IntList("classlabels_int64s").size(), node.StringList("classlabels_strings").size());
  if (x.rank() != 2 || static_cast<size_t>(x.dim(1)) != labels)
    throw Error(ErrorCode::Model, fmt::format("ZipMap of {} for {} labels", ShapeText(x.shape()), labels));
  out[0] = x;
}

}  // namespace

std::shared_ptr<const NodeState> PrepareLinear(const Node& node) {
  auto s = std::make_shared<LinearState>();
  s->targets = LinearTargets(node);
  const auto coefficients = node.FloatList("coefficients");
  s->intercepts = node.FloatList("intercepts");
  if (coefficients.empty() || coefficients.size() % s->targets != 0)
    throw Error(ErrorCode::Model, fmt::format("{} coefficients for {} outputs", coefficients.size(), s->targets));
  if (!s->intercepts.empty() && s->intercepts.size() != s->targets)
    throw Error(ErrorCode::Model, fmt::format("{} intercepts for {} outputs", s->intercepts.size(), s->targets));
  s->cols = coefficients.size() / s->targets;
  s->by_feature.resize(coefficients.size());
  for (size_t t = 0; t < s->targets; ++t) {
    for (size_t c = 0; c < s->cols; ++c) s->by_feature[c * s->targets + t] = coefficients[t * s->cols + c];
  }
  return s;
}

// Outputs: Y the label per row, Z the scores per class. One score column for two
// labels is a binary classifier: label 1 when the score is positive, scores
// [1 - s, s].
void ClassifierOutputs(const Node& node, size_t classes, std::span<float> scores, size_t rows, std::span<Tensor> out) {
  const Labels labels = Labels::Of(node, "classlabels_ints");
  const PostTransform transform = PostTransformOf(node);
  const bool binary = classes == 1 && labels.size() == 2;
  const size_t width = binary ? 2 : classes;
  out[0] = labels.Make(rows);
  Tensor z(DataType::kFloat, {static_cast<int64_t>(rows), static_cast<int64_t>(width)});
  auto zs = z.data<float>();
  for (size_t n = 0; n < rows; ++n) {
    auto row = scores.subspan(n * classes, classes);
    if (classes == 1) {
      labels.Set(out[0], n, row[0] > 0 ? 1 : 0);
      if (binary) {
        zs[n * 2] = 1.0f - row[0];
        zs[n * 2 + 1] = row[0];
      } else {
        zs[n] = row[0];
      }
      continue;
    }
    labels.Set(out[0], n, static_cast<size_t>(std::max_element(row.begin(), row.end()) - row.begin()));
    auto dst = zs.subspan(n * classes, classes);
    std::copy(row.begin(), row.end(), dst.begin());
    Transform(transform, dst);
  }
  if (out.size() > 1) out[1] = std::move(z);
}

Norm NormOf(const Node& node) {
  const std::string name = node.String("norm", "MAX");
  if (name == "MAX") return Norm::kMax;
  if (name == "L1") return Norm::kL1;
  if (name == "L2") return Norm::kL2;
  throw UnsupportedError(fmt::format("norm '{}'", name));
}

// SumOf's partial sums over the coordinates that hold values (a zero adds nothing, so
// leaving it out changes no bit): partial[c % 8] up to the last whole block of 8, the
// rest summed in order, then the partials added to that in order.
float SparseDivisor(Norm norm, std::span<const float> values, std::span<const uint32_t> coords, size_t cols) {
  if (norm == Norm::kMax) {
    if (cols == 0) return 0.0f;
    float top = values.empty() ? 0.0f : *std::max_element(values.begin(), values.end());
    return values.size() < cols ? std::max(top, 0.0f) : top;
  }
  const size_t whole = cols / 8 * 8;
  float partial[8] = {};
  float sum = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const float f = norm == Norm::kL1 ? std::abs(values[i]) : values[i] * values[i];
    if (coords[i] < whole) {
      partial[coords[i] % 8] += f;
    } else {
      sum += f;
    }
  }
  for (const float p : partial) sum += p;
  return norm == Norm::kL1 ? sum : std::sqrt(sum);
}

void AddMlKernels(std::vector<KernelEntry>& t) {
  constexpr std::string_view ml = "ai.onnx.ml";
  t.push_back({"LinearRegressor", 1, LinearRegressor, ml, PrepareLinear});
  t.push_back({"LinearClassifier", 1, LinearClassifier, ml, PrepareLinear});
  t.push_back({"Scaler", 1, Scaler, ml});
  t.push_back({"Normalizer", 1, Normalizer, ml});
  t.push_back({"Binarizer", 1, Binarizer, ml});
  t.push_back({"Imputer", 1, Imputer, ml});
  t.push_back({"ArrayFeatureExtractor", 1, ArrayFeatureExtractor, ml});
  t.push_back({"FeatureVectorizer", 1, FeatureVectorizer, ml});
  t.push_back({"OneHotEncoder", 1, OneHotEncoder, ml});
  t.push_back({"LabelEncoder", 1, LabelEncoder, ml, PrepareLabelEncoder});
  t.push_back({"CategoryMapper", 1, CategoryMapper, ml, PrepareCategoryMapper});
  t.push_back({"ZipMap", 1, ZipMap, ml});
}

}  // namespace runnel::tensor
