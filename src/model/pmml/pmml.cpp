// PMML 4.x: parse (pugixml) -> compile into flat structures -> score. The format and
// the value conventions are described in include/runnel/model/pmml.hpp.
//
// Every field (data, derived, output) gets an index into one array of doubles, the
// row's environment; expressions, predicates and models refer to fields by index.
// Scoring a row fills the active inputs, applies the mining schema, evaluates the
// derived fields and then the model. Trees are arrays of nodes with their children
// contiguous; a node whose two children split one field at one threshold (what every
// Spark/JPMML tree is) is marked so that scoring is one comparison per level, and
// ensembles of such trees are scored tree by tree over the whole batch.
#include "runnel/model/pmml.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <pugixml.hpp>
#include <set>

#include "runnel/core/error.hpp"

namespace runnel::model::pmml {

namespace internal {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

bool Missing(double v) {
  return std::isnan(v);
}

// ---- fields ----

struct Field {
  std::string name;
  bool categorical = false;
  std::vector<std::string> labels;                   // categorical: the <Value> list, in order
  std::vector<double> codes;                         // their numeric values (see the header)
  std::vector<std::pair<double, double>> intervals;  // continuous: the valid ranges
};

double LabelCode(const std::vector<std::string>& labels, const std::string& label) {
  char* end = nullptr;
  const double v = std::strtod(label.c_str(), &end);
  if (!label.empty() && end == label.c_str() + label.size()) return v;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == label) return static_cast<double>(i);
  }
  return kNaN;
}

// ---- expressions ----

struct Expr {
  enum class Kind { FieldRef, Constant, NormContinuous, NormDiscrete, Discretize, MapValues, Apply };
  Kind kind = Kind::Constant;
  int field = -1;
  double constant = kNaN;
  double map_missing = kNaN;  // mapMissingTo
  double default_value = kNaN;
  // NormContinuous: (orig, norm) points; outliers 0 asIs, 1 asMissingValues, 2 asExtremeValues
  std::vector<std::pair<double, double>> points;
  int outliers = 0;
  double value = kNaN;  // NormDiscrete
  struct Bin {
    double left = -kInf, right = kInf;
    bool left_closed = false, right_closed = false;
    double bin = kNaN;
  };
  std::vector<Bin> bins;
  std::vector<std::pair<double, double>> map;  // MapValues: input -> output
  std::string function;
  std::vector<Expr> args;
};

double EvalApply(const Expr& e, const double* env);

double Eval(const Expr& e, const double* env) {
  switch (e.kind) {
    case Expr::Kind::Constant: return e.constant;
    case Expr::Kind::FieldRef: {
      const double v = env[e.field];
      return Missing(v) ? e.map_missing : v;
    }
    case Expr::Kind::NormContinuous: {
      const double x = env[e.field];
      if (Missing(x)) return e.map_missing;
      const auto& p = e.points;
      if (x < p.front().first || x > p.back().first) {
        if (e.outliers == 1) return kNaN;
        if (e.outliers == 2) return x < p.front().first ? p.front().second : p.back().second;
      }
      size_t i = 1;
      while (i + 1 < p.size() && x > p[i].first) ++i;
      const auto& a = p[i - 1];
      const auto& b = p[i];
      return a.second + (x - a.first) * (b.second - a.second) / (b.first - a.first);
    }
    case Expr::Kind::NormDiscrete: {
      const double x = env[e.field];
      if (Missing(x)) return e.map_missing;
      return x == e.value ? 1.0 : 0.0;
    }
    case Expr::Kind::Discretize: {
      const double x = env[e.field];
      if (Missing(x)) return e.map_missing;
      for (const auto& b : e.bins) {
        const bool above = b.left_closed ? x >= b.left : x > b.left;
        const bool below = b.right_closed ? x <= b.right : x < b.right;
        if (above && below) return b.bin;
      }
      return e.default_value;
    }
    case Expr::Kind::MapValues: {
      const double x = env[e.field];
      if (Missing(x)) return e.map_missing;
      for (const auto& [in, out] : e.map) {
        if (in == x) return out;
      }
      return e.default_value;
    }
    case Expr::Kind::Apply: return EvalApply(e, env);
  }
  return kNaN;
}

double EvalApply(const Expr& e, const double* env) {
  const std::string& f = e.function;
  std::vector<double> a;
  a.reserve(e.args.size());
  for (const auto& arg : e.args) a.push_back(Eval(arg, env));
  if (f == "isMissing") return Missing(a[0]) ? 1 : 0;
  if (f == "isNotMissing") return Missing(a[0]) ? 0 : 1;
  if (f == "if") {
    if (Missing(a[0])) return e.map_missing;
    return a[0] != 0 ? a[1] : (a.size() > 2 ? a[2] : kNaN);
  }
  for (double v : a) {
    if (Missing(v)) return e.map_missing;
  }
  double r = kNaN;
  if (f == "+")
    r = a[0] + a[1];
  else if (f == "-")
    r = a[0] - a[1];
  else if (f == "*")
    r = a[0] * a[1];
  else if (f == "/")
    r = a[1] == 0 ? kNaN : a[0] / a[1];
  else if (f == "min")
    r = *std::min_element(a.begin(), a.end());
  else if (f == "max")
    r = *std::max_element(a.begin(), a.end());
  else if (f == "sum") {
    r = 0;
    for (double v : a) r += v;
  } else if (f == "product") {
    r = 1;
    for (double v : a) r *= v;
  } else if (f == "avg") {
    r = 0;
    for (double v : a) r += v;
    r /= static_cast<double>(a.size());
  } else if (f == "log10")
    r = a[0] > 0 ? std::log10(a[0]) : kNaN;
  else if (f == "ln")
    r = a[0] > 0 ? std::log(a[0]) : kNaN;
  else if (f == "sqrt")
    r = a[0] >= 0 ? std::sqrt(a[0]) : kNaN;
  else if (f == "abs")
    r = std::abs(a[0]);
  else if (f == "exp")
    r = std::exp(a[0]);
  else if (f == "pow")
    r = std::pow(a[0], a[1]);
  else if (f == "threshold")
    r = a[0] > a[1] ? 1 : 0;
  else if (f == "floor")
    r = std::floor(a[0]);
  else if (f == "ceil")
    r = std::ceil(a[0]);
  else if (f == "round")
    r = std::round(a[0]);
  else if (f == "equal")
    r = a[0] == a[1];
  else if (f == "notEqual")
    r = a[0] != a[1];
  else if (f == "lessThan")
    r = a[0] < a[1];
  else if (f == "lessOrEqual")
    r = a[0] <= a[1];
  else if (f == "greaterThan")
    r = a[0] > a[1];
  else if (f == "greaterOrEqual")
    r = a[0] >= a[1];
  else if (f == "and") {
    r = 1;
    for (double v : a) r = r != 0 && v != 0;
  } else if (f == "or") {
    r = 0;
    for (double v : a) r = r != 0 || v != 0;
  } else if (f == "not")
    r = a[0] == 0;
  if (!std::isfinite(r)) return e.default_value;
  return r;
}

// ---- predicates (three-valued) ----

enum class Tri { False, True, Unknown };

struct Predicate {
  enum class Kind { True, False, Simple, Compound, Set };
  enum class Op { Equal, NotEqual, Less, LessEq, Greater, GreaterEq, IsMissing, IsNotMissing };
  enum class Bool { And, Or, Xor, Surrogate };
  Kind kind = Kind::True;
  int field = -1;
  Op op = Op::Equal;
  double value = 0;
  bool is_in = true;
  std::vector<double> set;
  Bool bool_op = Bool::And;
  std::vector<Predicate> children;
};

Tri Test(const Predicate& p, const double* env) {
  switch (p.kind) {
    case Predicate::Kind::True: return Tri::True;
    case Predicate::Kind::False: return Tri::False;
    case Predicate::Kind::Simple: {
      const double x = env[p.field];
      if (p.op == Predicate::Op::IsMissing) return Missing(x) ? Tri::True : Tri::False;
      if (p.op == Predicate::Op::IsNotMissing) return Missing(x) ? Tri::False : Tri::True;
      if (Missing(x)) return Tri::Unknown;
      bool r = false;
      switch (p.op) {
        case Predicate::Op::Equal: r = x == p.value; break;
        case Predicate::Op::NotEqual: r = x != p.value; break;
        case Predicate::Op::Less: r = x < p.value; break;
        case Predicate::Op::LessEq: r = x <= p.value; break;
        case Predicate::Op::Greater: r = x > p.value; break;
        case Predicate::Op::GreaterEq: r = x >= p.value; break;
        default: break;
      }
      return r ? Tri::True : Tri::False;
    }
    case Predicate::Kind::Set: {
      const double x = env[p.field];
      if (Missing(x)) return Tri::Unknown;
      const bool in = std::find(p.set.begin(), p.set.end(), x) != p.set.end();
      return in == p.is_in ? Tri::True : Tri::False;
    }
    case Predicate::Kind::Compound: {
      if (p.bool_op == Predicate::Bool::Surrogate) {
        for (const auto& c : p.children) {
          const Tri t = Test(c, env);
          if (t != Tri::Unknown) return t;
        }
        return Tri::Unknown;
      }
      bool unknown = false;
      int trues = 0;
      for (const auto& c : p.children) {
        const Tri t = Test(c, env);
        if (t == Tri::Unknown) {
          unknown = true;
          continue;
        }
        if (t == Tri::True) ++trues;
        if (p.bool_op == Predicate::Bool::And && t == Tri::False) return Tri::False;
        if (p.bool_op == Predicate::Bool::Or && t == Tri::True) return Tri::True;
      }
      if (unknown) return Tri::Unknown;
      if (p.bool_op == Predicate::Bool::And) return Tri::True;
      if (p.bool_op == Predicate::Bool::Or) return Tri::False;
      return trues % 2 == 1 ? Tri::True : Tri::False;  // xor
    }
  }
  return Tri::Unknown;
}

// ---- models ----

struct Result {
  double value = kNaN;        // regression value, or the winning label's code
  std::vector<double> probs;  // classification, per class of the target
  bool valid() const { return !Missing(value); }
};

struct MiningField {
  int field = -1;
  double replacement = kNaN;  // missingValueReplacement
  enum class Invalid { ReturnInvalid, AsIs, AsMissing } invalid = Invalid::ReturnInvalid;
  int outliers = 0;  // 0 asIs, 1 asMissingValues, 2 asExtremeValues
  double low = -kInf, high = kInf;
};

struct OutputField {
  int field = -1;
  bool probability = false;
  int class_index = -1;  // probability of this class
};

struct TargetSpec {
  double factor = 1, constant = 0;
  double min = -kInf, max = kInf;
  enum class Cast { None, Round, Ceiling, Floor } cast = Cast::None;
};

struct ModelNode {
  virtual ~ModelNode() = default;
  std::string kind;  // element name, for Describe
  bool classification = false;
  int target = -1;                  // field index, -1 when none
  std::vector<double> class_codes;  // per class (the target's labels)
  std::vector<MiningField> schema;
  std::vector<std::pair<int, Expr>> locals;  // LocalTransformations, in order
  std::vector<OutputField> outputs;
  TargetSpec target_spec;

  const std::vector<Field>* fields = nullptr;  // non-owning: the document's field table

  // Evaluates one row (schema, local fields, model, targets, output fields); env holds
  // every field.
  Result Evaluate(double* env) const;
  virtual Result Score(double* env) const = 0;
  virtual std::string Describe() const = 0;
};

Result Finish(const ModelNode& m, Result r) {
  if (m.classification) {
    if (!r.probs.empty() && Missing(r.value)) {
      // Winner: highest probability, first in class order on ties.
      size_t best = 0;
      for (size_t i = 1; i < r.probs.size(); ++i) {
        if (r.probs[i] > r.probs[best]) best = i;
      }
      if (!Missing(r.probs[best])) r.value = m.class_codes[best];
    }
  } else if (r.valid()) {
    const auto& t = m.target_spec;
    r.value = r.value * t.factor + t.constant;
    r.value = std::clamp(r.value, t.min, t.max);
    switch (t.cast) {
      case TargetSpec::Cast::Round: r.value = std::round(r.value); break;
      case TargetSpec::Cast::Ceiling: r.value = std::ceil(r.value); break;
      case TargetSpec::Cast::Floor: r.value = std::floor(r.value); break;
      case TargetSpec::Cast::None: break;
    }
  }
  return r;
}

bool ApplySchema(const ModelNode& m, const std::vector<Field>& fields, double* env) {
  for (const auto& mf : m.schema) {
    double& v = env[mf.field];
    const Field& f = fields[static_cast<size_t>(mf.field)];
    if (!Missing(v)) {
      bool valid = true;
      if (!f.intervals.empty()) {
        valid = std::any_of(f.intervals.begin(), f.intervals.end(),
                            [&](const auto& iv) { return v >= iv.first && v <= iv.second; });
      } else if (f.categorical && !f.codes.empty()) {
        valid = std::find(f.codes.begin(), f.codes.end(), v) != f.codes.end();
      }
      if (!valid) {
        if (mf.invalid == MiningField::Invalid::ReturnInvalid) return false;
        if (mf.invalid == MiningField::Invalid::AsMissing) v = kNaN;
      }
    }
    if (!Missing(v) && (v < mf.low || v > mf.high)) {
      if (mf.outliers == 1) v = kNaN;
      if (mf.outliers == 2) v = std::clamp(v, mf.low, mf.high);
    }
    if (Missing(v)) v = mf.replacement;
  }
  return true;
}

struct Context;  // fields, shared by every model of a document

// -- RegressionModel --

struct RegressionModel : ModelNode {
  struct Term {
    std::vector<std::pair<int, double>> factors;  // field, exponent (product of powers)
    int categorical_field = -1;
    double category = 0;
    double coefficient = 0;
  };
  struct Table {
    double intercept = 0;
    std::vector<Term> terms;
    int class_index = -1;
  };
  std::vector<Table> tables;
  std::string normalization = "none";

  static double Link(const std::string& method, double y) {
    if (method == "logit") return 1 / (1 + std::exp(-y));
    if (method == "probit") return 0.5 * std::erfc(-y / std::sqrt(2.0));
    if (method == "cloglog") return 1 - std::exp(-std::exp(y));
    if (method == "loglog") return std::exp(-std::exp(-y));
    if (method == "cauchit") return 0.5 + std::atan(y) / M_PI;
    if (method == "exp") return std::exp(y);
    return y;
  }

  double TableValue(const Table& t, const double* env) const {
    double y = t.intercept;
    for (const auto& term : t.terms) {
      if (term.categorical_field >= 0) {
        const double v = env[term.categorical_field];
        if (Missing(v)) return kNaN;
        if (v == term.category) y += term.coefficient;
        continue;
      }
      double p = term.coefficient;
      for (const auto& [field, exponent] : term.factors) {
        const double v = env[field];
        if (Missing(v)) return kNaN;
        p *= exponent == 1 ? v : std::pow(v, exponent);
      }
      y += p;
    }
    return y;
  }

  Result Score(double* env) const override {
    Result r;
    if (!classification) {
      r.value = Link(normalization, TableValue(tables.front(), env));
      return r;
    }
    std::vector<double> y(class_codes.size(), kNaN);
    for (const auto& t : tables) y[static_cast<size_t>(t.class_index)] = TableValue(t, env);
    for (double v : y) {
      if (Missing(v)) return r;
    }
    r.probs.assign(y.size(), 0);
    if (normalization == "softmax") {
      const double mx = *std::max_element(y.begin(), y.end());
      double sum = 0;
      for (size_t i = 0; i < y.size(); ++i) sum += (r.probs[i] = std::exp(y[i] - mx));
      for (auto& p : r.probs) p /= sum;
    } else if (normalization == "simplemax") {
      double sum = 0;
      for (double v : y) sum += v;
      for (size_t i = 0; i < y.size(); ++i) r.probs[i] = y[i] / sum;
    } else if (y.size() == 2 && normalization != "none") {
      r.probs[0] = Link(normalization, y[0]);
      r.probs[1] = 1 - r.probs[0];
    } else {
      for (size_t i = 0; i < y.size(); ++i) r.probs[i] = Link(normalization, y[i]);
    }
    return r;
  }

  std::string Describe() const override {
    return fmt::format("RegressionModel ({}), {} table(s), normalization {}",
                       classification ? "classification" : "regression", tables.size(), normalization);
  }
};

// -- GeneralRegressionModel --

struct GeneralRegression : ModelNode {
  std::string model_type, link = "identity";
  double link_parameter = 1;
  struct Cell {
    int field;
    bool factor;  // factor: indicator of `value`; covariate: x^value
    double value;
  };
  std::vector<std::vector<Cell>> params;   // per parameter: its PPMatrix cells
  std::vector<std::vector<double>> betas;  // [class or 0][parameter]
  double offset = 0;

  double Eta(size_t k, const double* env) const {
    double eta = offset;
    for (size_t p = 0; p < params.size(); ++p) {
      const double b = betas[k][p];
      if (b == 0) continue;
      double term = b;
      for (const auto& c : params[p]) {
        const double v = env[c.field];
        if (Missing(v)) return kNaN;
        term *= c.factor ? (v == c.value ? 1.0 : 0.0) : (c.value == 1 ? v : std::pow(v, c.value));
      }
      eta += term;
    }
    return eta;
  }

  double Inverse(double eta) const {
    if (link == "identity") return eta;
    if (link == "log") return std::exp(eta);
    if (link == "logit") return 1 / (1 + std::exp(-eta));
    if (link == "probit") return 0.5 * std::erfc(-eta / std::sqrt(2.0));
    if (link == "cloglog") return 1 - std::exp(-std::exp(eta));
    if (link == "loglog") return std::exp(-std::exp(-eta));
    if (link == "cauchit") return 0.5 + std::atan(eta) / M_PI;
    if (link == "inverse") return 1 / eta;
    if (link == "power") return link_parameter == 0 ? std::exp(eta) : std::pow(eta, 1 / link_parameter);
    return kNaN;
  }

  Result Score(double* env) const override {
    Result r;
    if (model_type != "multinomialLogistic") {
      const double eta = Eta(0, env);
      if (Missing(eta)) return r;
      if (!classification) {
        r.value = Inverse(eta);
        return r;
      }
      // Binary classification: the first class's probability through the link.
      const double p = Inverse(eta);
      r.probs = {p, 1 - p};
      return r;
    }
    // Softmax over the categories; the reference category (no cells) has eta 0.
    std::vector<double> eta(class_codes.size());
    for (size_t k = 0; k < eta.size(); ++k) {
      eta[k] = Eta(k, env);
      if (Missing(eta[k])) return r;
    }
    const double mx = *std::max_element(eta.begin(), eta.end());
    double sum = 0;
    r.probs.resize(eta.size());
    for (size_t k = 0; k < eta.size(); ++k) sum += (r.probs[k] = std::exp(eta[k] - mx));
    for (auto& p : r.probs) p /= sum;
    return r;
  }

  std::string Describe() const override {
    return fmt::format("GeneralRegressionModel {} link {}, {} parameters", model_type, link, params.size());
  }
};

// -- TreeModel --

struct TreeModel : ModelNode {
  struct Node {
    int first_child = 0, child_count = 0;
    int default_child = -1;  // index, for missingValueStrategy defaultChild
    Predicate predicate;
    double score = kNaN;   // regression value or class code
    int prob_offset = -1;  // into probs: class_codes.size() values
    // Fast path: children are exactly (x <= t, x > t) on one field.
    bool split = false;
    int split_field = -1;
    double threshold = 0;
  };
  std::vector<Node> nodes;  // nodes[0] is the root
  std::vector<double> probs;
  enum class Missing { None, LastPrediction, NullPrediction, DefaultChild } missing = Missing::None;
  bool no_true_child_last = false;  // noTrueChildStrategy returnLastPrediction

  // The node a row ends in, -1 for no prediction.
  int Walk(const double* env) const {
    if (Test(nodes[0].predicate, env) != Tri::True) return -1;
    int at = 0;
    while (true) {
      const Node& n = nodes[static_cast<size_t>(at)];
      if (n.child_count == 0) return at;
      if (n.split) {
        const double x = env[n.split_field];
        if (!std::isnan(x)) {
          at = n.first_child + (x <= n.threshold ? 0 : 1);
          continue;
        }
      }
      int next = -1;
      for (int c = 0; c < n.child_count; ++c) {
        const Tri t = Test(nodes[static_cast<size_t>(n.first_child) + static_cast<size_t>(c)].predicate, env);
        if (t == Tri::True) {
          next = n.first_child + c;
          break;
        }
        if (t == Tri::Unknown) {  // missingValueStrategy "none": as if false
          if (missing == Missing::LastPrediction) return at;
          if (missing == Missing::NullPrediction) return -1;
          if (missing == Missing::DefaultChild && n.default_child >= 0) {
            next = n.default_child;
            break;
          }
        }
      }
      if (next < 0) return no_true_child_last ? at : -1;
      at = next;
    }
  }

  Result Emit(int leaf) const {
    Result r;
    if (leaf < 0) return r;
    const Node& n = nodes[static_cast<size_t>(leaf)];
    if (classification && n.prob_offset >= 0) {
      r.probs.assign(probs.begin() + n.prob_offset,
                     probs.begin() + n.prob_offset + static_cast<std::ptrdiff_t>(class_codes.size()));
    }
    r.value = n.score;
    return r;
  }

  Result Score(double* env) const override { return Emit(Walk(env)); }

  std::string Describe() const override {
    return fmt::format("TreeModel ({}), {} nodes", classification ? "classification" : "regression", nodes.size());
  }
};

// -- NeuralNetwork --

struct NeuralNetwork : ModelNode {
  struct Neuron {
    double bias = 0;
    std::vector<std::pair<int, double>> from;  // activation index, weight
    int out = -1;                              // activation index
  };
  struct Layer {
    std::vector<Neuron> neurons;
    int activation = 0;  // an Act
    double threshold = 0;
    std::string normalization = "none";
  };
  std::vector<Expr> inputs;  // activation i = inputs[i]
  std::vector<Layer> layers;
  size_t activations = 0;
  // Outputs: classification: per class, the neuron giving its probability;
  // regression: the neuron and an optional NormContinuous to invert.
  std::vector<int> class_neuron;
  int value_neuron = -1;
  std::vector<std::pair<double, double>> denorm;  // NormContinuous points (orig, norm)

  enum class Act {
    Logistic,
    Tanh,
    Identity,
    Rectifier,
    Threshold,
    Exponential,
    Reciprocal,
    Square,
    Gauss,
    Sine,
    Cosine,
    Elliott,
    Arctan
  };
  // PMML's name of each Act, in order; parsing maps names to Acts once.
  static constexpr const char* kActNames[] = {"logistic",    "tanh",       "identity", "rectifier", "threshold",
                                              "exponential", "reciprocal", "square",   "Gauss",     "sine",
                                              "cosine",      "Elliott",    "arctan"};

  static double Activate(Act f, double z, double threshold) {
    switch (f) {
      case Act::Logistic: return 1 / (1 + std::exp(-z));
      case Act::Tanh: return std::tanh(z);
      case Act::Identity: return z;
      case Act::Rectifier: return z > 0 ? z : 0;
      case Act::Threshold: return z > threshold ? 1 : 0;
      case Act::Exponential: return std::exp(z);
      case Act::Reciprocal: return 1 / z;
      case Act::Square: return z * z;
      case Act::Gauss: return std::exp(-z * z);
      case Act::Sine: return std::sin(z);
      case Act::Cosine: return std::cos(z);
      case Act::Elliott: return z / (1 + std::abs(z));
      case Act::Arctan: return 2 * std::atan(z) / M_PI;
    }
    return kNaN;
  }

  Result Score(double* env) const override {
    Result r;
    // Scratch per thread: Score runs concurrently and allocates nothing per row.
    thread_local std::vector<double> a;
    a.assign(activations, 0.0);
    for (size_t i = 0; i < inputs.size(); ++i) {
      a[i] = Eval(inputs[i], env);
      if (Missing(a[i])) return r;
    }
    for (const auto& layer : layers) {
      for (const auto& n : layer.neurons) {
        double z = n.bias;
        for (const auto& [from, w] : n.from) z += a[static_cast<size_t>(from)] * w;
        a[static_cast<size_t>(n.out)] = Activate(static_cast<Act>(layer.activation), z, layer.threshold);
      }
      if (layer.normalization == "softmax") {
        double mx = -kInf, sum = 0;
        for (const auto& n : layer.neurons) mx = std::max(mx, a[static_cast<size_t>(n.out)]);
        for (const auto& n : layer.neurons)
          sum += (a[static_cast<size_t>(n.out)] = std::exp(a[static_cast<size_t>(n.out)] - mx));
        for (const auto& n : layer.neurons) a[static_cast<size_t>(n.out)] /= sum;
      } else if (layer.normalization == "simplemax") {
        double sum = 0;
        for (const auto& n : layer.neurons) sum += a[static_cast<size_t>(n.out)];
        for (const auto& n : layer.neurons) a[static_cast<size_t>(n.out)] /= sum;
      }
    }
    if (classification) {
      r.probs.resize(class_neuron.size());
      for (size_t k = 0; k < class_neuron.size(); ++k)
        r.probs[k] = class_neuron[k] >= 0 ? a[static_cast<size_t>(class_neuron[k])] : 0.0;
      return r;
    }
    double v = a[static_cast<size_t>(value_neuron)];
    if (!denorm.empty()) {
      size_t i = 1;
      while (i + 1 < denorm.size() && v > denorm[i].second) ++i;
      const auto& p = denorm[i - 1];
      const auto& q = denorm[i];
      v = p.first + (v - p.second) * (q.first - p.first) / (q.second - p.second);
    }
    r.value = v;
    return r;
  }

  std::string Describe() const override {
    size_t neurons = 0;
    for (const auto& l : layers) neurons += l.neurons.size();
    return fmt::format("NeuralNetwork ({}), {} inputs, {} layers, {} neurons",
                       classification ? "classification" : "regression", inputs.size(), layers.size(), neurons);
  }
};

// -- MiningModel --

struct MiningModel : ModelNode {
  struct Segment {
    Predicate predicate;
    double weight = 1;
    std::unique_ptr<ModelNode> model;
  };
  std::vector<Segment> segments;
  std::string method;

  Result Score(double* env) const override {
    Result r;
    const size_t k = class_codes.size();
    double weights = 0;
    size_t count = 0;
    std::vector<double> values;
    std::vector<double> acc(k, 0);
    double best_max = -kInf;
    for (const auto& s : segments) {
      if (Test(s.predicate, env) != Tri::True) continue;
      Result sr = s.model->Evaluate(env);
      if (method == "modelChain" || method == "selectFirst") {
        r = sr;
        if (method == "selectFirst") return r;
        continue;
      }
      if (!sr.valid() && sr.probs.empty()) return Result{};  // a segment without a prediction
      ++count;
      weights += s.weight;
      if (!classification) {
        values.push_back(sr.value);
        r.value = (method == "weightedAverage" ? s.weight : 1.0) * sr.value + (count == 1 ? 0.0 : r.value);
        continue;
      }
      if (method == "majorityVote" || method == "weightedMajorityVote") {
        for (size_t c = 0; c < k; ++c) {
          if (class_codes[c] == sr.value) acc[c] += method == "weightedMajorityVote" ? s.weight : 1.0;
        }
      } else if (method == "max") {
        const double top = sr.probs.empty() ? 0 : *std::max_element(sr.probs.begin(), sr.probs.end());
        if (top > best_max) {
          best_max = top;
          acc = sr.probs;
        }
      } else {  // average, weightedAverage
        for (size_t c = 0; c < k && c < sr.probs.size(); ++c)
          acc[c] += (method == "weightedAverage" ? s.weight : 1.0) * sr.probs[c];
      }
    }
    if (method == "modelChain") return r;
    if (count == 0) return Result{};
    if (!classification) {
      if (method == "average") r.value /= static_cast<double>(count);
      if (method == "weightedAverage") r.value /= weights;
      if (method == "median") {
        std::sort(values.begin(), values.end());
        const size_t n = values.size();
        r.value = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
      }
      if (method == "max") r.value = *std::max_element(values.begin(), values.end());
      return r;
    }
    double total = 0;
    for (double v : acc) total += v;
    r.probs = acc;
    if (method == "average") {
      for (auto& p : r.probs) p /= static_cast<double>(count);
    } else if (method != "max" && total > 0) {
      for (auto& p : r.probs) p /= total;
    }
    return r;
  }

  std::string Describe() const override {
    return fmt::format("MiningModel ({}), {} segments, {}", classification ? "classification" : "regression",
                       segments.size(), method);
  }
};

}  // namespace internal
using namespace internal;  // NOLINT: this file is the implementation

// ---- the document ----

struct Document {
  std::vector<Field> fields;
  std::vector<std::pair<int, Expr>> globals;  // TransformationDictionary, in order
  std::unique_ptr<ModelNode> model;
  std::vector<int> inputs;  // active data fields, in input order
  // Fast path: an ensemble (average / majority) of split-only trees over the batch.
  const MiningModel* forest = nullptr;
  size_t width = 0;  // env size

  Result EvaluateRow(double* env) const {
    for (const auto& [field, expr] : globals) env[field] = Eval(expr, env);
    return model->Evaluate(env);
  }
};

namespace internal {

Result ModelNode::Evaluate(double* env) const {
  const ModelNode& m = *this;
  if (!ApplySchema(m, *fields, env)) return Result{};
  for (const auto& [field, expr] : m.locals) env[field] = Eval(expr, env);
  Result r = Finish(m, m.Score(env));
  for (const auto& o : m.outputs) {
    if (o.probability) {
      env[o.field] = o.class_index >= 0 && static_cast<size_t>(o.class_index) < r.probs.size()
                         ? r.probs[static_cast<size_t>(o.class_index)]
                         : kNaN;
    } else {
      env[o.field] = r.value;
    }
  }
  return r;
}

}  // namespace internal
using namespace internal;  // NOLINT: this file is the implementation

}  // namespace runnel::model::pmml

namespace runnel::model::pmml {
namespace internal {

// Comparisons happen in float32 precision (inputs arrive as float32): a threshold is
// rounded like the value it is compared with, so equal stays equal.
double AsFloat(double v) {
  return static_cast<double>(static_cast<float>(v));
}

constexpr int kMaxDepth = 400;  // nesting of nodes, predicates, expressions, segments

class Parser {
 public:
  Parser(std::string_view bytes, std::string source) : bytes_(bytes), source_(std::move(source)) {}

  std::unique_ptr<Document> Parse() {
    doc_ = std::make_unique<Document>();
    pugi::xml_parse_result ok =
        xml_.load_buffer(bytes_.data(), bytes_.size(), pugi::parse_default, pugi::encoding_auto);
    if (!ok) {
      throw Error(ErrorCode::Model,
                  fmt::format("{}:{}: malformed XML: {}", source_, LineAt(ok.offset), ok.description()));
    }
    pugi::xml_node root = xml_.document_element();
    if (std::string_view(root.name()) != "PMML") Fail(root, "the root element must be <PMML>");
    const std::string version = root.attribute("version").as_string();
    if (!version.starts_with("4.")) Fail(root, fmt::format("PMML version '{}' is not supported (4.x is)", version));
    scopes_.emplace_back();
    pugi::xml_node model;
    for (pugi::xml_node n : root.children()) {
      if (n.type() != pugi::node_element) continue;
      const std::string_view name = n.name();
      if (name == "Header") {
        auto app = n.child("Application");
        producer_ = fmt::format("{} {}", app.attribute("name").as_string(), app.attribute("version").as_string());
      } else if (name == "DataDictionary") {
        ParseDataDictionary(n);
      } else if (name == "TransformationDictionary") {
        ParseDerived(n, doc_->globals);
      } else if (name == "MiningBuildTask" || name == "Extension") {
      } else if (IsModel(name)) {
        if (model) Fail(n, "more than one model: only one is scored");
        model = n;
      } else {
        Fail(n, "unsupported element");
      }
    }
    if (!model)
      Fail(root,
           "no model element (RegressionModel, GeneralRegressionModel, TreeModel, NeuralNetwork, "
           "MiningModel)");
    doc_->model = ParseModel(model, 0);
    for (const auto& mf : doc_->model->schema) doc_->inputs.push_back(mf.field);
    doc_->width = doc_->fields.size();
    return std::move(doc_);
  }

  std::string producer_;

 private:
  static bool IsModel(std::string_view name) {
    return name == "RegressionModel" || name == "GeneralRegressionModel" || name == "TreeModel" ||
           name == "NeuralNetwork" || name == "MiningModel";
  }

  int LineAt(ptrdiff_t offset) const {
    int line = 1;
    for (ptrdiff_t i = 0; i < offset && i < static_cast<ptrdiff_t>(bytes_.size()); ++i)
      line += bytes_[static_cast<size_t>(i)] == '\n';
    return line;
  }

  [[noreturn]] void Fail(pugi::xml_node n, const std::string& what) const {
    throw Error(ErrorCode::Model, fmt::format("{}:{}: <{}>: {}", source_, LineAt(n.offset_debug()), n.name(), what));
  }

  std::string Text(pugi::xml_node n, const char* attr, bool required = true) const {
    pugi::xml_attribute a = n.attribute(attr);
    if (!a) {
      if (required) Fail(n, fmt::format("attribute '{}' is required", attr));
      return "";
    }
    return a.as_string();
  }

  double Number(pugi::xml_node n, const char* attr, std::optional<double> fallback = std::nullopt) const {
    pugi::xml_attribute a = n.attribute(attr);
    if (!a) {
      if (fallback) return *fallback;
      Fail(n, fmt::format("attribute '{}' is required", attr));
    }
    const char* text = a.as_string();
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    if (end == text || *end != '\0') Fail(n, fmt::format("attribute '{}' = '{}' is not a number", attr, text));
    return v;
  }

  int AddField(const std::string& name, pugi::xml_node at, bool categorical = false) {
    auto& scope = scopes_.back();
    if (scope.contains(name)) Fail(at, fmt::format("field '{}' is defined twice", name));
    Field f;
    f.name = name;
    f.categorical = categorical;
    doc_->fields.push_back(std::move(f));
    const int id = static_cast<int>(doc_->fields.size() - 1);
    scope[name] = id;
    return id;
  }

  int FieldId(pugi::xml_node at, const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (auto f = it->find(name); f != it->end()) return f->second;
    }
    Fail(at, fmt::format("unknown field '{}'", name));
  }

  const Field& FieldOf(int id) const { return doc_->fields[static_cast<size_t>(id)]; }

  // A value written for a field: its category code, or a number.
  double ValueFor(pugi::xml_node at, int field, const std::string& text) const {
    const Field& f = FieldOf(field);
    double v = f.categorical ? LabelCode(f.labels, text) : kNaN;
    if (!f.categorical) {
      char* end = nullptr;
      v = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0') Fail(at, fmt::format("'{}' is not a number (field '{}')", text, f.name));
    }
    if (Missing(v)) Fail(at, fmt::format("'{}' is not a category of field '{}'", text, f.name));
    return AsFloat(v);
  }

  void ParseDataDictionary(pugi::xml_node dict) {
    for (pugi::xml_node n : dict.children()) {
      if (n.type() != pugi::node_element) continue;
      if (std::string_view(n.name()) == "Extension" || std::string_view(n.name()) == "Taxonomy") continue;
      if (std::string_view(n.name()) != "DataField") Fail(n, "unsupported element in DataDictionary");
      const std::string optype = Text(n, "optype", false);
      const int id = AddField(Text(n, "name"), n, optype == "categorical" || optype == "ordinal");
      Field& f = doc_->fields[static_cast<size_t>(id)];
      for (pugi::xml_node v : n.children()) {
        const std::string_view kind = v.name();
        if (kind == "Value") {
          const std::string property = v.attribute("property").as_string("valid");
          if (property == "valid") f.labels.push_back(Text(v, "value"));
        } else if (kind == "Interval") {
          f.intervals.emplace_back(Number(v, "leftMargin", -kInf), Number(v, "rightMargin", kInf));
        } else if (kind != "Extension" && v.type() == pugi::node_element) {
          Fail(v, "unsupported element in DataField");
        }
      }
      for (const auto& label : f.labels) f.codes.push_back(AsFloat(LabelCode(f.labels, label)));
    }
  }

  void ParseDerived(pugi::xml_node parent, std::vector<std::pair<int, Expr>>& out) {
    for (pugi::xml_node n : parent.children()) {
      if (n.type() != pugi::node_element || std::string_view(n.name()) == "Extension") continue;
      if (std::string_view(n.name()) == "DefineFunction") Fail(n, "user-defined functions are not supported");
      if (std::string_view(n.name()) != "DerivedField") Fail(n, "unsupported element");
      Expr e = ParseExprChild(n, 0);
      const std::string optype = Text(n, "optype", false);
      out.emplace_back(AddField(Text(n, "name"), n, optype == "categorical"), std::move(e));
    }
  }

  Expr ParseExprChild(pugi::xml_node parent, int depth) {
    for (pugi::xml_node n : parent.children()) {
      if (n.type() == pugi::node_element && std::string_view(n.name()) != "Extension") return ParseExpr(n, depth);
    }
    Fail(parent, "an expression is required");
  }

  Expr ParseExpr(pugi::xml_node n, int depth) {
    if (depth > kMaxDepth) Fail(n, "expressions are nested too deeply");
    Expr e;
    const std::string_view kind = n.name();
    e.map_missing = Number(n, "mapMissingTo", kNaN);
    e.default_value = Number(n, "defaultValue", kNaN);
    if (kind == "Constant") {
      e.kind = Expr::Kind::Constant;
      const std::string text = n.child_value();
      char* end = nullptr;
      e.constant = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0') Fail(n, fmt::format("'{}' is not a number", text));
    } else if (kind == "FieldRef") {
      e.kind = Expr::Kind::FieldRef;
      e.field = FieldId(n, Text(n, "field"));
    } else if (kind == "NormContinuous") {
      e.kind = Expr::Kind::NormContinuous;
      e.field = FieldId(n, Text(n, "field"));
      const std::string outliers = n.attribute("outliers").as_string("asIs");
      e.outliers = outliers == "asMissingValues" ? 1 : outliers == "asExtremeValues" ? 2 : 0;
      for (pugi::xml_node ln : n.children("LinearNorm")) e.points.emplace_back(Number(ln, "orig"), Number(ln, "norm"));
      if (e.points.size() < 2) Fail(n, "at least two LinearNorm points are required");
      for (size_t i = 1; i < e.points.size(); ++i) {
        if (!(e.points[i].first > e.points[i - 1].first)) Fail(n, "LinearNorm 'orig' values must increase");
      }
    } else if (kind == "NormDiscrete") {
      e.kind = Expr::Kind::NormDiscrete;
      e.field = FieldId(n, Text(n, "field"));
      e.value = ValueFor(n, e.field, Text(n, "value"));
    } else if (kind == "Discretize") {
      e.kind = Expr::Kind::Discretize;
      e.field = FieldId(n, Text(n, "field"));
      for (pugi::xml_node b : n.children("DiscretizeBin")) {
        Expr::Bin bin;
        const char* value = b.attribute("binValue").as_string();
        char* end = nullptr;
        bin.bin = std::strtod(value, &end);
        if (*end != '\0' || end == value) Fail(b, fmt::format("binValue '{}' is not a number", value));
        pugi::xml_node iv = b.child("Interval");
        if (!iv) Fail(b, "an Interval is required");
        bin.left = Number(iv, "leftMargin", -kInf);
        bin.right = Number(iv, "rightMargin", kInf);
        const std::string closure = Text(iv, "closure");
        bin.left_closed = closure.starts_with("closed");
        bin.right_closed = closure.ends_with("Closed");
        e.bins.push_back(bin);
      }
    } else if (kind == "MapValues") {
      e.kind = Expr::Kind::MapValues;
      std::vector<std::pair<std::string, std::string>> columns;  // field column -> input field
      for (pugi::xml_node p : n.children("FieldColumnPair")) columns.emplace_back(Text(p, "column"), Text(p, "field"));
      if (columns.size() != 1) Fail(n, "only MapValues over one field is supported");
      e.field = FieldId(n, columns[0].second);
      const std::string out = Text(n, "outputColumn");
      pugi::xml_node table = n.child("InlineTable");
      if (!table) Fail(n, "an InlineTable is required");
      for (pugi::xml_node row : table.children("row")) {
        pugi::xml_node in = row.child(columns[0].first.c_str());
        pugi::xml_node o = row.child(out.c_str());
        if (!in || !o) Fail(row, "a row lacks its input or output column");
        char* end = nullptr;
        const std::string ov = o.child_value();
        const double outv = std::strtod(ov.c_str(), &end);
        if (ov.empty() || *end != '\0') Fail(o, fmt::format("'{}' is not a number", ov));
        e.map.emplace_back(ValueFor(in, e.field, in.child_value()), outv);
      }
    } else if (kind == "Apply") {
      e.kind = Expr::Kind::Apply;
      e.function = Text(n, "function");
      static const std::map<std::string, std::pair<size_t, size_t>> kArity = {{"+", {2, 2}},
                                                                              {"-", {2, 2}},
                                                                              {"*", {2, 2}},
                                                                              {"/", {2, 2}},
                                                                              {"min", {1, 1000}},
                                                                              {"max", {1, 1000}},
                                                                              {"sum", {1, 1000}},
                                                                              {"avg", {1, 1000}},
                                                                              {"product", {1, 1000}},
                                                                              {"log10", {1, 1}},
                                                                              {"ln", {1, 1}},
                                                                              {"sqrt", {1, 1}},
                                                                              {"abs", {1, 1}},
                                                                              {"exp", {1, 1}},
                                                                              {"pow", {2, 2}},
                                                                              {"threshold", {2, 2}},
                                                                              {"floor", {1, 1}},
                                                                              {"ceil", {1, 1}},
                                                                              {"round", {1, 1}},
                                                                              {"equal", {2, 2}},
                                                                              {"notEqual", {2, 2}},
                                                                              {"lessThan", {2, 2}},
                                                                              {"lessOrEqual", {2, 2}},
                                                                              {"greaterThan", {2, 2}},
                                                                              {"greaterOrEqual", {2, 2}},
                                                                              {"and", {1, 1000}},
                                                                              {"or", {1, 1000}},
                                                                              {"not", {1, 1}},
                                                                              {"isMissing", {1, 1}},
                                                                              {"isNotMissing", {1, 1}},
                                                                              {"if", {2, 3}}};
      auto arity = kArity.find(e.function);
      if (arity == kArity.end()) Fail(n, fmt::format("function '{}' is not supported", e.function));
      for (pugi::xml_node a : n.children()) {
        if (a.type() == pugi::node_element && std::string_view(a.name()) != "Extension")
          e.args.push_back(ParseExpr(a, depth + 1));
      }
      if (e.args.size() < arity->second.first || e.args.size() > arity->second.second)
        Fail(n, fmt::format("'{}' takes {}..{} arguments, got {}", e.function, arity->second.first,
                            arity->second.second, e.args.size()));
    } else {
      Fail(n, "unsupported expression");
    }
    return e;
  }

  Predicate ParsePredicate(pugi::xml_node n, int depth) {
    if (depth > kMaxDepth) Fail(n, "predicates are nested too deeply");
    Predicate p;
    const std::string_view kind = n.name();
    if (kind == "True") {
      p.kind = Predicate::Kind::True;
    } else if (kind == "False") {
      p.kind = Predicate::Kind::False;
    } else if (kind == "SimplePredicate") {
      p.kind = Predicate::Kind::Simple;
      p.field = FieldId(n, Text(n, "field"));
      static const std::map<std::string, Predicate::Op> kOps = {
          {"equal", Predicate::Op::Equal},         {"notEqual", Predicate::Op::NotEqual},
          {"lessThan", Predicate::Op::Less},       {"lessOrEqual", Predicate::Op::LessEq},
          {"greaterThan", Predicate::Op::Greater}, {"greaterOrEqual", Predicate::Op::GreaterEq},
          {"isMissing", Predicate::Op::IsMissing}, {"isNotMissing", Predicate::Op::IsNotMissing}};
      auto op = kOps.find(Text(n, "operator"));
      if (op == kOps.end()) Fail(n, fmt::format("unknown operator '{}'", Text(n, "operator")));
      p.op = op->second;
      if (p.op != Predicate::Op::IsMissing && p.op != Predicate::Op::IsNotMissing)
        p.value = ValueFor(n, p.field, Text(n, "value"));
    } else if (kind == "SimpleSetPredicate") {
      p.kind = Predicate::Kind::Set;
      p.field = FieldId(n, Text(n, "field"));
      const std::string op = Text(n, "booleanOperator");
      if (op != "isIn" && op != "isNotIn") Fail(n, fmt::format("unknown booleanOperator '{}'", op));
      p.is_in = op == "isIn";
      pugi::xml_node array = n.child("Array");
      if (!array) Fail(n, "an Array is required");
      // Space-separated; "quoted values" may hold spaces.
      const std::string text = array.child_value();
      size_t i = 0;
      while (i < text.size()) {
        if (std::isspace(static_cast<unsigned char>(text[i]))) {
          ++i;
          continue;
        }
        std::string item;
        if (text[i] == '"') {
          ++i;
          while (i < text.size() && text[i] != '"') {
            if (text[i] == '\\' && i + 1 < text.size()) ++i;
            item += text[i++];
          }
          ++i;
        } else {
          while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) item += text[i++];
        }
        p.set.push_back(ValueFor(array, p.field, item));
      }
    } else if (kind == "CompoundPredicate") {
      p.kind = Predicate::Kind::Compound;
      const std::string op = Text(n, "booleanOperator");
      if (op == "and")
        p.bool_op = Predicate::Bool::And;
      else if (op == "or")
        p.bool_op = Predicate::Bool::Or;
      else if (op == "xor")
        p.bool_op = Predicate::Bool::Xor;
      else if (op == "surrogate")
        p.bool_op = Predicate::Bool::Surrogate;
      else
        Fail(n, fmt::format("unknown booleanOperator '{}'", op));
      for (pugi::xml_node c : n.children()) {
        if (c.type() == pugi::node_element && std::string_view(c.name()) != "Extension")
          p.children.push_back(ParsePredicate(c, depth + 1));
      }
      if (p.children.size() < 2) Fail(n, "a CompoundPredicate needs at least two predicates");
    } else {
      Fail(n, "unsupported predicate");
    }
    return p;
  }

  static bool IsPredicate(std::string_view name) {
    return name == "True" || name == "False" || name == "SimplePredicate" || name == "SimpleSetPredicate" ||
           name == "CompoundPredicate";
  }

  Predicate PredicateOf(pugi::xml_node parent, int depth) {
    for (pugi::xml_node c : parent.children()) {
      if (c.type() == pugi::node_element && IsPredicate(c.name())) return ParsePredicate(c, depth);
    }
    Fail(parent, "a predicate is required");
  }

  // MiningSchema, LocalTransformations, Targets, Output: common to every model.
  void ParseCommon(pugi::xml_node n, ModelNode& m, const ModelNode* parent, size_t scope_of_parent) {
    m.fields = &doc_->fields;
    const std::string function = Text(n, "functionName");
    if (function != "classification" && function != "regression")
      Fail(n, fmt::format("functionName '{}' is not supported (classification or regression)", function));
    m.classification = function == "classification";
    pugi::xml_node schema = n.child("MiningSchema");
    if (!schema) Fail(n, "a MiningSchema is required");
    for (pugi::xml_node f : schema.children("MiningField")) {
      const std::string usage = f.attribute("usageType").as_string("active");
      const int id = FieldId(f, Text(f, "name"));
      if (usage == "target" || usage == "predicted") {
        m.target = id;
        continue;
      }
      if (usage != "active") continue;  // supplementary, group, order, frequencyWeight...
      MiningField mf;
      mf.field = id;
      if (f.attribute("missingValueReplacement"))
        mf.replacement = ValueFor(f, id, f.attribute("missingValueReplacement").as_string());
      const std::string invalid = f.attribute("invalidValueTreatment").as_string("returnInvalid");
      if (invalid == "asIs")
        mf.invalid = MiningField::Invalid::AsIs;
      else if (invalid == "asMissing")
        mf.invalid = MiningField::Invalid::AsMissing;
      else if (invalid != "returnInvalid")
        Fail(f, fmt::format("invalidValueTreatment '{}' is not supported", invalid));
      const std::string outliers = f.attribute("outliers").as_string("asIs");
      mf.outliers = outliers == "asMissingValues" ? 1 : outliers == "asExtremeValues" ? 2 : 0;
      mf.low = Number(f, "lowValue", -kInf);
      mf.high = Number(f, "highValue", kInf);
      m.schema.push_back(mf);
    }
    if (m.target < 0 && parent != nullptr) m.target = parent->target;
    if (m.classification) {
      if (m.target < 0) Fail(n, "a classification model needs a target field");
      const Field& t = FieldOf(m.target);
      if (t.codes.empty()) Fail(n, fmt::format("the target '{}' lists no categories (<Value>)", t.name));
      m.class_codes = t.codes;
    }
    if (pugi::xml_node local = n.child("LocalTransformations")) ParseDerived(local, m.locals);
    if (pugi::xml_node targets = n.child("Targets")) {
      for (pugi::xml_node t : targets.children("Target")) {
        m.target_spec.factor = Number(t, "rescaleFactor", 1.0);
        m.target_spec.constant = Number(t, "rescaleConstant", 0.0);
        m.target_spec.min = Number(t, "min", -kInf);
        m.target_spec.max = Number(t, "max", kInf);
        const std::string cast = t.attribute("castInteger").as_string("");
        if (cast == "round")
          m.target_spec.cast = TargetSpec::Cast::Round;
        else if (cast == "ceiling")
          m.target_spec.cast = TargetSpec::Cast::Ceiling;
        else if (cast == "floor")
          m.target_spec.cast = TargetSpec::Cast::Floor;
        else if (!cast.empty())
          Fail(t, fmt::format("castInteger '{}' is not supported", cast));
      }
    }
    if (pugi::xml_node output = n.child("Output")) {
      for (pugi::xml_node o : output.children("OutputField")) {
        OutputField of;
        const std::string feature = o.attribute("feature").as_string("predictedValue");
        if (feature == "probability") {
          of.probability = true;
          if (!m.classification) Fail(o, "a probability output needs a classification model");
          const double code = ValueFor(o, m.target, Text(o, "value"));
          for (size_t c = 0; c < m.class_codes.size(); ++c) {
            if (m.class_codes[c] == code) of.class_index = static_cast<int>(c);
          }
        } else if (feature != "predictedValue") {
          Fail(o, fmt::format("output feature '{}' is not supported (predictedValue, probability)", feature));
        }
        // Visible to later segments of a model chain: the parent's scope.
        auto& scope = scopes_[scope_of_parent];
        const std::string name = Text(o, "name");
        Field f;
        f.name = name;
        doc_->fields.push_back(f);
        scope[name] = of.field = static_cast<int>(doc_->fields.size() - 1);
        m.outputs.push_back(of);
      }
    }
  }

  int ClassIndex(const ModelNode& m, pugi::xml_node at, const std::string& label) const {
    const double code = ValueFor(at, m.target, label);
    for (size_t c = 0; c < m.class_codes.size(); ++c) {
      if (m.class_codes[c] == code) return static_cast<int>(c);
    }
    Fail(at, fmt::format("'{}' is not a category of the target", label));
  }

  std::unique_ptr<ModelNode> ParseModel(pugi::xml_node n, int depth, const ModelNode* parent = nullptr) {
    if (depth > 40) Fail(n, "models are nested too deeply");
    const std::string_view kind = n.name();
    const size_t parent_scope = scopes_.size() - 1;
    scopes_.emplace_back();
    std::unique_ptr<ModelNode> out;
    if (kind == "RegressionModel")
      out = ParseRegression(n, parent, parent_scope);
    else if (kind == "GeneralRegressionModel")
      out = ParseGeneralRegression(n, parent, parent_scope);
    else if (kind == "TreeModel")
      out = ParseTree(n, parent, parent_scope);
    else if (kind == "NeuralNetwork")
      out = ParseNeural(n, parent, parent_scope);
    else if (kind == "MiningModel")
      out = ParseMining(n, depth, parent, parent_scope);
    else
      Fail(n, "unsupported model");
    out->kind = std::string(kind);
    scopes_.pop_back();
    return out;
  }

  void OnlyChildren(pugi::xml_node n, std::initializer_list<std::string_view> allowed) const {
    static const std::set<std::string_view> kCommon = {
        "MiningSchema", "LocalTransformations", "Targets",          "Output",
        "Extension",    "ModelStats",           "ModelExplanation", "ModelVerification"};
    for (pugi::xml_node c : n.children()) {
      if (c.type() != pugi::node_element) continue;
      const std::string_view name = c.name();
      if (kCommon.contains(name) || std::find(allowed.begin(), allowed.end(), name) != allowed.end()) continue;
      Fail(c, fmt::format("unsupported element in <{}>", n.name()));
    }
  }

  std::unique_ptr<ModelNode> ParseRegression(pugi::xml_node n, const ModelNode* parent, size_t parent_scope) {
    auto m = std::make_unique<RegressionModel>();
    ParseCommon(n, *m, parent, parent_scope);
    OnlyChildren(n, {"RegressionTable"});
    m->normalization = n.attribute("normalizationMethod").as_string("none");
    static const std::set<std::string> kMethods = {"none",    "softmax", "simplemax", "logit", "probit",
                                                   "cloglog", "loglog",  "cauchit",   "exp"};
    if (!kMethods.contains(m->normalization))
      Fail(n, fmt::format("normalizationMethod '{}' is not supported", m->normalization));
    for (pugi::xml_node t : n.children("RegressionTable")) {
      RegressionModel::Table table;
      table.intercept = Number(t, "intercept", 0.0);
      if (m->classification) table.class_index = ClassIndex(*m, t, Text(t, "targetCategory"));
      for (pugi::xml_node p : t.children()) {
        if (p.type() != pugi::node_element) continue;
        const std::string_view name = p.name();
        RegressionModel::Term term;
        term.coefficient = Number(p, "coefficient");
        if (name == "NumericPredictor") {
          term.factors.emplace_back(FieldId(p, Text(p, "name")), Number(p, "exponent", 1.0));
        } else if (name == "CategoricalPredictor") {
          term.categorical_field = FieldId(p, Text(p, "name"));
          term.category = ValueFor(p, term.categorical_field, Text(p, "value"));
        } else if (name == "PredictorTerm") {
          for (pugi::xml_node f : p.children("FieldRef")) term.factors.emplace_back(FieldId(f, Text(f, "field")), 1.0);
          if (term.factors.empty()) Fail(p, "a PredictorTerm needs FieldRefs");
        } else if (name != "Extension") {
          Fail(p, "unsupported element in RegressionTable");
        } else {
          continue;
        }
        table.terms.push_back(std::move(term));
      }
      m->tables.push_back(std::move(table));
    }
    if (m->tables.empty()) Fail(n, "no RegressionTable");
    if (m->classification) {
      // Categories without a table score 0 (the reference category).
      std::vector<bool> seen(m->class_codes.size(), false);
      for (const auto& t : m->tables) seen[static_cast<size_t>(t.class_index)] = true;
      for (size_t c = 0; c < seen.size(); ++c) {
        if (!seen[c]) {
          RegressionModel::Table zero;
          zero.class_index = static_cast<int>(c);
          m->tables.push_back(zero);
        }
      }
    } else if (m->tables.size() != 1) {
      Fail(n, "a regression needs exactly one RegressionTable");
    }
    return m;
  }

  std::unique_ptr<ModelNode> ParseGeneralRegression(pugi::xml_node n, const ModelNode* parent, size_t parent_scope) {
    auto m = std::make_unique<GeneralRegression>();
    ParseCommon(n, *m, parent, parent_scope);
    OnlyChildren(n, {"ParameterList", "FactorList", "CovariateList", "PPMatrix", "PCovMatrix", "ParamMatrix",
                     "EventValues", "BaseCumHazardTables"});
    m->model_type = Text(n, "modelType");
    if (m->model_type != "regression" && m->model_type != "generalLinear" && m->model_type != "generalizedLinear" &&
        m->model_type != "multinomialLogistic") {
      Fail(n, fmt::format("modelType '{}' is not supported (regression, generalizedLinear, multinomialLogistic)",
                          m->model_type));
    }
    if (m->model_type == "generalizedLinear") {
      m->link = Text(n, "linkFunction");
      static const std::set<std::string> kLinks = {"identity", "log",     "logit",   "probit", "cloglog",
                                                   "loglog",   "cauchit", "inverse", "power"};
      if (!kLinks.contains(m->link)) Fail(n, fmt::format("linkFunction '{}' is not supported", m->link));
      m->link_parameter = Number(n, "linkParameter", 1.0);
    }
    m->offset = Number(n, "offsetValue", 0.0);
    std::map<std::string, size_t> params;
    for (pugi::xml_node p : n.child("ParameterList").children("Parameter")) {
      params.emplace(Text(p, "name"), params.size());
    }
    std::set<int> factors;
    for (pugi::xml_node p : n.child("FactorList").children("Predictor")) factors.insert(FieldId(p, Text(p, "name")));
    m->params.resize(params.size());
    for (pugi::xml_node c : n.child("PPMatrix").children("PPCell")) {
      auto p = params.find(Text(c, "parameterName"));
      if (p == params.end()) Fail(c, fmt::format("unknown parameter '{}'", Text(c, "parameterName")));
      const int field = FieldId(c, Text(c, "predictorName"));
      const bool factor = factors.contains(field);
      m->params[p->second].push_back(
          {field, factor, factor ? ValueFor(c, field, Text(c, "value")) : Number(c, "value")});
    }
    const size_t groups = m->model_type == "multinomialLogistic" ? m->class_codes.size() : 1;
    if (m->model_type == "multinomialLogistic" && !m->classification)
      Fail(n, "multinomialLogistic needs functionName=\"classification\"");
    m->betas.assign(groups, std::vector<double>(params.size(), 0.0));
    for (pugi::xml_node c : n.child("ParamMatrix").children("PCell")) {
      auto p = params.find(Text(c, "parameterName"));
      if (p == params.end()) Fail(c, fmt::format("unknown parameter '{}'", Text(c, "parameterName")));
      size_t k = 0;
      if (groups > 1) k = static_cast<size_t>(ClassIndex(*m, c, Text(c, "targetCategory")));
      m->betas[k][p->second] = Number(c, "beta");
    }
    if (m->classification && groups == 1 && m->class_codes.size() != 2)
      Fail(n, "a generalizedLinear classification needs exactly two categories");
    return m;
  }

  void FillTreeNode(TreeModel& t, size_t index, pugi::xml_node n, int depth) {
    if (depth > kMaxDepth) Fail(n, "the tree is deeper than 400 levels");
    t.nodes[index].predicate = PredicateOf(n, 0);
    const size_t classes = t.class_codes.size();
    std::vector<double> counts(classes, 0);
    std::vector<double> given(classes, kNaN);
    bool any = false;
    for (pugi::xml_node d : n.children("ScoreDistribution")) {
      if (!t.classification) break;
      const int c = ClassIndex(t, d, Text(d, "value"));
      counts[static_cast<size_t>(c)] = Number(d, "recordCount");
      if (d.attribute("probability")) given[static_cast<size_t>(c)] = Number(d, "probability");
      any = true;
    }
    if (any) {
      double total = 0;
      for (double c : counts) total += c;
      t.nodes[index].prob_offset = static_cast<int>(t.probs.size());
      for (size_t c = 0; c < classes; ++c)
        t.probs.push_back(!Missing(given[c]) ? given[c] : total > 0 ? counts[c] / total : 0.0);
    }
    if (n.attribute("score")) {
      t.nodes[index].score = t.classification ? t.class_codes[static_cast<size_t>(ClassIndex(t, n, Text(n, "score")))]
                                              : Number(n, "score");
    } else if (any) {
      size_t best = 0;
      for (size_t c = 1; c < classes; ++c) {
        if (t.probs[static_cast<size_t>(t.nodes[index].prob_offset) + c] >
            t.probs[static_cast<size_t>(t.nodes[index].prob_offset) + best])
          best = c;
      }
      t.nodes[index].score = t.class_codes[best];
    }
    std::vector<pugi::xml_node> kids;
    for (pugi::xml_node c : n.children()) {
      const std::string_view name = c.name();
      if (c.type() != pugi::node_element) continue;
      if (name == "Node") {
        kids.push_back(c);
      } else if (!IsPredicate(name) && name != "ScoreDistribution" && name != "Extension" && name != "Partition") {
        Fail(c, "unsupported element in <Node>");
      }
    }
    const size_t first = t.nodes.size();
    t.nodes.resize(first + kids.size());
    t.nodes[index].first_child = static_cast<int>(first);
    t.nodes[index].child_count = static_cast<int>(kids.size());
    const std::string default_child = n.attribute("defaultChild").as_string("");
    for (size_t k = 0; k < kids.size(); ++k) {
      if (!default_child.empty() && default_child == kids[k].attribute("id").as_string())
        t.nodes[index].default_child = static_cast<int>(first + k);
      FillTreeNode(t, first + k, kids[k], depth + 1);
    }
    // The common binary split: (x <= v) then (x > v) on one field.
    if (kids.size() == 2) {
      const Predicate& a = t.nodes[first].predicate;
      const Predicate& b = t.nodes[first + 1].predicate;
      if (a.kind == Predicate::Kind::Simple && a.op == Predicate::Op::LessEq &&
          ((b.kind == Predicate::Kind::Simple && b.op == Predicate::Op::Greater && b.field == a.field &&
            b.value == a.value) ||
           b.kind == Predicate::Kind::True)) {
        t.nodes[index].split = true;
        t.nodes[index].split_field = a.field;
        t.nodes[index].threshold = a.value;
      }
    }
  }

  std::unique_ptr<ModelNode> ParseTree(pugi::xml_node n, const ModelNode* parent, size_t parent_scope) {
    auto t = std::make_unique<TreeModel>();
    ParseCommon(n, *t, parent, parent_scope);
    OnlyChildren(n, {"Node"});
    const std::string missing = n.attribute("missingValueStrategy").as_string("none");
    if (missing == "lastPrediction")
      t->missing = TreeModel::Missing::LastPrediction;
    else if (missing == "nullPrediction")
      t->missing = TreeModel::Missing::NullPrediction;
    else if (missing == "defaultChild")
      t->missing = TreeModel::Missing::DefaultChild;
    else if (missing != "none")
      Fail(n, fmt::format("missingValueStrategy '{}' is not supported", missing));
    const std::string no_true = n.attribute("noTrueChildStrategy").as_string("returnNullPrediction");
    if (no_true != "returnNullPrediction" && no_true != "returnLastPrediction")
      Fail(n, fmt::format("noTrueChildStrategy '{}' is not supported", no_true));
    t->no_true_child_last = no_true == "returnLastPrediction";
    pugi::xml_node root = n.child("Node");
    if (!root) Fail(n, "a TreeModel needs a root <Node>");
    t->nodes.resize(1);
    FillTreeNode(*t, 0, root, 0);
    return t;
  }

  std::unique_ptr<ModelNode> ParseNeural(pugi::xml_node n, const ModelNode* parent, size_t parent_scope) {
    auto m = std::make_unique<NeuralNetwork>();
    ParseCommon(n, *m, parent, parent_scope);
    OnlyChildren(n, {"NeuralInputs", "NeuralLayer", "NeuralOutputs"});
    static const std::set<std::string> kActivations = {
        "logistic", "tanh",  "identity", "rectifier", "threshold", "exponential", "reciprocal",
        "square",   "Gauss", "sine",     "cosine",    "Elliott",   "arctan"};
    const std::string network_activation = Text(n, "activationFunction");
    if (!kActivations.contains(network_activation))
      Fail(n, fmt::format("activationFunction '{}' is not supported", network_activation));
    const double network_threshold = Number(n, "threshold", 0.0);
    const std::string network_norm = n.attribute("normalizationMethod").as_string("none");
    std::map<std::string, int> ids;
    for (pugi::xml_node in : n.child("NeuralInputs").children("NeuralInput")) {
      pugi::xml_node derived = in.child("DerivedField");
      if (!derived) Fail(in, "a NeuralInput needs a DerivedField");
      const std::string id = Text(in, "id");
      if (!ids.emplace(id, static_cast<int>(m->inputs.size())).second)
        Fail(in, fmt::format("neuron id '{}' repeats", id));
      m->inputs.push_back(ParseExprChild(derived, 0));
    }
    int next = static_cast<int>(m->inputs.size());
    for (pugi::xml_node l : n.children("NeuralLayer")) {
      NeuralNetwork::Layer layer;
      const std::string activation = l.attribute("activationFunction").as_string(network_activation.c_str());
      if (!kActivations.contains(activation))
        Fail(l, fmt::format("activationFunction '{}' is not supported", activation));
      for (size_t k = 0; k < std::size(NeuralNetwork::kActNames); ++k) {
        if (activation == NeuralNetwork::kActNames[k]) layer.activation = static_cast<int>(k);
      }
      layer.threshold = Number(l, "threshold", network_threshold);
      layer.normalization = l.attribute("normalizationMethod").as_string(network_norm.c_str());
      if (layer.normalization != "none" && layer.normalization != "softmax" && layer.normalization != "simplemax")
        Fail(l, fmt::format("normalizationMethod '{}' is not supported", layer.normalization));
      for (pugi::xml_node ne : l.children("Neuron")) {
        NeuralNetwork::Neuron neuron;
        neuron.bias = Number(ne, "bias", 0.0);
        for (pugi::xml_node c : ne.children("Con")) {
          auto from = ids.find(Text(c, "from"));
          if (from == ids.end()) Fail(c, fmt::format("connection from unknown neuron '{}'", Text(c, "from")));
          neuron.from.emplace_back(from->second, Number(c, "weight"));
        }
        neuron.out = next++;
        const std::string id = Text(ne, "id");
        if (!ids.emplace(id, neuron.out).second) Fail(ne, fmt::format("neuron id '{}' repeats", id));
        layer.neurons.push_back(std::move(neuron));
      }
      m->layers.push_back(std::move(layer));
    }
    m->activations = static_cast<size_t>(next);
    if (m->layers.empty()) Fail(n, "no NeuralLayer");
    m->class_neuron.assign(m->class_codes.size(), -1);
    for (pugi::xml_node o : n.child("NeuralOutputs").children("NeuralOutput")) {
      auto neuron = ids.find(Text(o, "outputNeuron"));
      if (neuron == ids.end()) Fail(o, fmt::format("unknown output neuron '{}'", Text(o, "outputNeuron")));
      pugi::xml_node derived = o.child("DerivedField");
      pugi::xml_node e;
      for (pugi::xml_node c : derived.children()) {
        if (c.type() == pugi::node_element) e = c;
      }
      if (!e) Fail(o, "a NeuralOutput needs a DerivedField with an expression");
      const std::string_view kind = e.name();
      if (m->classification && kind == "NormDiscrete") {
        m->class_neuron[static_cast<size_t>(ClassIndex(*m, e, Text(e, "value")))] = neuron->second;
      } else if (!m->classification && kind == "FieldRef") {
        m->value_neuron = neuron->second;
      } else if (!m->classification && kind == "NormContinuous") {
        m->value_neuron = neuron->second;
        for (pugi::xml_node ln : e.children("LinearNorm"))
          m->denorm.emplace_back(Number(ln, "orig"), Number(ln, "norm"));
        if (m->denorm.size() < 2) Fail(e, "at least two LinearNorm points are required");
      } else {
        Fail(e,
             "unsupported NeuralOutput expression (NormDiscrete for classes, FieldRef or NormContinuous for values)");
      }
    }
    if (!m->classification && m->value_neuron < 0) Fail(n, "no NeuralOutput for the target");
    if (m->classification && std::all_of(m->class_neuron.begin(), m->class_neuron.end(), [](int v) { return v < 0; }))
      Fail(n, "no NeuralOutput for any class");
    return m;
  }

  std::unique_ptr<ModelNode> ParseMining(pugi::xml_node n, int depth, const ModelNode* parent, size_t parent_scope) {
    auto m = std::make_unique<MiningModel>();
    ParseCommon(n, *m, parent, parent_scope);
    OnlyChildren(n, {"Segmentation"});
    pugi::xml_node seg = n.child("Segmentation");
    if (!seg) Fail(n, "a MiningModel needs a Segmentation");
    m->method = Text(seg, "multipleModelMethod");
    static const std::set<std::string> kRegression = {"average", "weightedAverage", "median",    "max",
                                                      "sum",     "selectFirst",     "modelChain"};
    static const std::set<std::string> kClassification = {
        "majorityVote", "weightedMajorityVote", "average", "weightedAverage", "max", "selectFirst", "modelChain"};
    if (!(m->classification ? kClassification : kRegression).contains(m->method))
      Fail(seg, fmt::format("multipleModelMethod '{}' is not supported for {}", m->method,
                            m->classification ? "classification" : "regression"));
    for (pugi::xml_node s : seg.children("Segment")) {
      MiningModel::Segment segment;
      segment.predicate = PredicateOf(s, 0);
      segment.weight = Number(s, "weight", 1.0);
      pugi::xml_node inner;
      for (pugi::xml_node c : s.children()) {
        if (c.type() == pugi::node_element && IsModel(c.name())) inner = c;
      }
      if (!inner) Fail(s, "a Segment needs a model");
      segment.model = ParseModel(inner, depth + 1, m.get());
      if (m->method != "modelChain" && segment.model->classification != m->classification)
        Fail(inner, "a segment's functionName differs from its MiningModel's");
      m->segments.push_back(std::move(segment));
    }
    if (m->segments.empty()) Fail(seg, "no Segment");
    return m;
  }

  std::string_view bytes_;
  std::string source_;
  pugi::xml_document xml_;
  std::unique_ptr<Document> doc_;
  std::vector<std::map<std::string, int>> scopes_;
};

}  // namespace internal
using namespace internal;  // NOLINT: this file is the implementation

// ---- PmmlModel ----

PmmlModel::~PmmlModel() = default;

std::shared_ptr<const PmmlModel> PmmlModel::Load(std::string_view bytes, const std::string& source) {
  Parser parser(bytes, source);
  auto doc = parser.Parse();
  std::shared_ptr<PmmlModel> model(new PmmlModel());
  model->producer_ = parser.producer_.empty() ? "PMML" : parser.producer_;
  const ModelNode& top = *doc->model;
  for (int id : doc->inputs) model->input_names_.push_back(doc->fields[static_cast<size_t>(id)].name);
  const std::string target = top.target >= 0 ? doc->fields[static_cast<size_t>(top.target)].name : "predicted";
  model->output_names_.push_back(target);
  model->classification_ = top.classification;
  if (top.classification) {
    model->class_labels_ = doc->fields[static_cast<size_t>(top.target)].labels;
    for (const auto& label : model->class_labels_) model->output_names_.push_back("probability_" + label);
  }
  // The batch fast path: an average of split-only trees, nothing else per row.
  if (const auto* mining = dynamic_cast<const MiningModel*>(doc->model.get());
      mining != nullptr && mining->classification && mining->method == "average" && doc->globals.empty() &&
      mining->locals.empty()) {
    bool plain = true;
    auto plain_schema = [&](const ModelNode& m) {
      for (const auto& mf : m.schema) {
        const Field& f = doc->fields[static_cast<size_t>(mf.field)];
        if (!Missing(mf.replacement) || mf.outliers != 0 || !f.intervals.empty() || (f.categorical && !f.codes.empty()))
          return false;
      }
      return true;
    };
    plain = plain_schema(*mining);
    for (const auto& s : mining->segments) {
      const auto* tree = dynamic_cast<const TreeModel*>(s.model.get());
      plain = plain && tree != nullptr && s.predicate.kind == Predicate::Kind::True && tree->locals.empty() &&
              tree->outputs.empty() && plain_schema(*tree) && tree->class_codes == mining->class_codes;
      // Every node a row can end in must carry probabilities: the batch path averages
      // them (with these strategies a row ends in a leaf or nowhere).
      if (plain) {
        const bool leaves_only = tree->missing == TreeModel::Missing::None && !tree->no_true_child_last;
        for (const auto& node : tree->nodes)
          plain = plain && ((node.child_count > 0 && leaves_only) || node.prob_offset >= 0);
      }
    }
    if (plain) doc->forest = mining;
  }
  model->doc_ = std::move(doc);
  return model;
}

std::vector<std::string> PmmlModel::Describe() const {
  std::vector<std::string> lines;
  std::function<void(const ModelNode&, int)> walk = [&](const ModelNode& m, int indent) {
    lines.push_back(std::string(static_cast<size_t>(indent) * 2, ' ') + m.Describe());
    if (const auto* mining = dynamic_cast<const MiningModel*>(&m)) {
      size_t shown = 0;
      for (const auto& s : mining->segments) {
        if (++shown > 3) {
          lines.push_back(std::string(static_cast<size_t>(indent + 1) * 2, ' ') +
                          fmt::format("... {} more segments", mining->segments.size() - 3));
          break;
        }
        walk(*s.model, indent + 1);
      }
    }
  };
  walk(*doc_->model, 0);
  lines.push_back(fmt::format("inputs: {}", fmt::join(input_names_, ", ")));
  lines.push_back(fmt::format("outputs: {}", fmt::join(output_names_, ", ")));
  return lines;
}

void PmmlModel::ScoreRow(std::span<const double> input, std::span<double> output) const {
  thread_local std::vector<double> env;
  env.assign(doc_->width, kNaN);
  for (size_t i = 0; i < doc_->inputs.size(); ++i) env[static_cast<size_t>(doc_->inputs[i])] = AsFloat(input[i]);
  Result r = doc_->EvaluateRow(env.data());
  output[0] = r.value;
  if (classification_) {
    for (size_t c = 0; c < class_labels_.size(); ++c)
      output[1 + c] = r.valid() && c < r.probs.size() ? r.probs[c] : kNaN;
  }
}

void PmmlModel::Score(std::span<const float> input, size_t rows, std::span<float> output) const {
  const size_t in = doc_->inputs.size();
  const size_t out = output_names_.size();
  const size_t width = doc_->width;
  std::vector<double> env(width);
  if (doc_->forest == nullptr) {
    std::vector<double> row(in), result(out);
    for (size_t r = 0; r < rows; ++r) {
      for (size_t i = 0; i < in; ++i) row[i] = input[r * in + i];
      ScoreRow(row, result);
      for (size_t o = 0; o < out; ++o) output[r * out + o] = static_cast<float>(result[o]);
    }
    return;
  }
  // Forest: tree by tree over the whole batch, so each tree's nodes stay in cache.
  const MiningModel& forest = *doc_->forest;
  const size_t classes = class_labels_.size();
  std::vector<double> envs(rows * width, kNaN);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < in; ++i)
      envs[r * width + static_cast<size_t>(doc_->inputs[i])] = static_cast<double>(input[r * in + i]);
  }
  std::vector<double> acc(rows * classes, 0.0);
  std::vector<char> failed(rows, 0);
  for (const auto& segment : forest.segments) {
    const auto& tree = static_cast<const TreeModel&>(*segment.model);
    for (size_t r = 0; r < rows; ++r) {
      const int leaf = tree.Walk(&envs[r * width]);
      const int offset = leaf >= 0 ? tree.nodes[static_cast<size_t>(leaf)].prob_offset : -1;
      if (offset < 0) {
        failed[r] = 1;
        continue;
      }
      double* a = &acc[r * classes];
      const double* p = &tree.probs[static_cast<size_t>(offset)];
      for (size_t c = 0; c < classes; ++c) a[c] += p[c];
    }
  }
  const double n = static_cast<double>(forest.segments.size());
  for (size_t r = 0; r < rows; ++r) {
    float* o = &output[r * out];
    if (failed[r]) {
      for (size_t k = 0; k < out; ++k) o[k] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    size_t best = 0;
    for (size_t c = 0; c < classes; ++c) {
      const double p = acc[r * classes + c] / n;
      o[1 + c] = static_cast<float>(p);
      if (p > acc[r * classes + best] / n) best = c;
    }
    o[0] = static_cast<float>(forest.class_codes[best]);
  }
}

}  // namespace runnel::model::pmml
