#include "runnel/features/features.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>

#include "cursor.hpp"
#include "runnel/core/error.hpp"

namespace runnel::features {

enum class ExprOp {
  Number,
  Input,
  Derived,
  Neg,
  Add,
  Sub,
  Mul,
  Div,
  Ln,
  Log10,
  Exp,
  Sqrt,
  Abs,
  Pow,
  Min,
  Max,
  Clip,
  BoxCox
};

struct ExpressionNode {
  ExprOp op = ExprOp::Number;
  double number = 0;
  size_t index = 0;  // Input: position in input_columns; Derived: position in derived
  std::vector<std::unique_ptr<ExpressionNode>> args;
  std::string text;  // the source of this sub-expression, for messages
};

namespace {

using NodePtr = std::unique_ptr<ExpressionNode>;

struct FunctionInfo {
  ExprOp op;
  size_t min_args;
  size_t max_args;
};

const std::map<std::string, FunctionInfo, std::less<>>& Functions() {
  static const std::map<std::string, FunctionInfo, std::less<>> kFunctions = {
      {"ln", {ExprOp::Ln, 1, 1}},          {"log10", {ExprOp::Log10, 1, 1}}, {"exp", {ExprOp::Exp, 1, 1}},
      {"sqrt", {ExprOp::Sqrt, 1, 1}},      {"abs", {ExprOp::Abs, 1, 1}},     {"pow", {ExprOp::Pow, 2, 2}},
      {"min", {ExprOp::Min, 2, 64}},       {"max", {ExprOp::Max, 2, 64}},    {"clip", {ExprOp::Clip, 3, 3}},
      {"box_cox", {ExprOp::BoxCox, 2, 2}},
  };
  return kFunctions;
}

class Parser : Cursor {
 public:
  Parser(std::string_view text, std::string context, const std::map<std::string, size_t, std::less<>>& inputs,
         const std::map<std::string, size_t, std::less<>>& derived)
      : Cursor(text, std::move(context)), inputs_(inputs), derived_(derived) {}

  NodePtr ParseAll() {
    CheckLength();
    NodePtr node = Expr();
    Skip();
    if (pos_ != text_.size()) Fail(fmt::format("unexpected '{}'", text_[pos_]));
    return node;
  }

  // Parses "name(args)" at the top level for one_hot; returns false when it is not one.
  bool TryOneHot(NodePtr& argument, size_t& count) {
    CheckLength();
    Skip();
    if (text_.substr(pos_, 7) != "one_hot") return false;
    size_t save = pos_;
    pos_ += 7;
    Skip();
    if (pos_ >= text_.size() || text_[pos_] != '(') {
      pos_ = save;
      return false;
    }
    ++pos_;
    argument = Expr();
    Expect(',');
    NodePtr n = Expr();
    Expect(')');
    Skip();
    if (pos_ != text_.size()) Fail("one_hot(...) must be the whole feature");
    if (n->op != ExprOp::Number || n->number < 1 || n->number > 4096 || n->number != std::floor(n->number)) {
      Fail("one_hot's second argument must be a whole number of categories (1..4096)");
    }
    count = static_cast<size_t>(n->number);
    return true;
  }

 private:
  // A chain of operators nests a level per operator, and each node keeps its text:
  // the nodes are bounded too, so no expression costs unbounded memory or stack.
  NodePtr Make(ExprOp op, size_t start) {
    if (++nodes_ > kMaxNodes) Fail(fmt::format("more than {} operations in one expression", kMaxNodes));
    auto node = std::make_unique<ExpressionNode>();
    node->op = op;
    node->text = std::string(text_.substr(start, pos_ - start));
    return node;
  }
  NodePtr Binary(ExprOp op, NodePtr lhs, NodePtr rhs, size_t start) {
    auto node = Make(op, start);
    node->args.push_back(std::move(lhs));
    node->args.push_back(std::move(rhs));
    return node;
  }

  NodePtr Expr() {
    if (++depth_ > 200) Fail("expression nested too deeply");
    Skip();
    size_t start = pos_;
    NodePtr lhs = Term();
    for (;;) {
      Skip();
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) {
        ExprOp op = text_[pos_] == '+' ? ExprOp::Add : ExprOp::Sub;
        ++pos_;
        NodePtr rhs = Term();
        lhs = Binary(op, std::move(lhs), std::move(rhs), start);
      } else {
        --depth_;
        return lhs;
      }
    }
  }

  NodePtr Term() {
    Skip();
    size_t start = pos_;
    NodePtr lhs = Unary();
    for (;;) {
      Skip();
      if (pos_ < text_.size() && (text_[pos_] == '*' || text_[pos_] == '/')) {
        ExprOp op = text_[pos_] == '*' ? ExprOp::Mul : ExprOp::Div;
        ++pos_;
        NodePtr rhs = Unary();
        lhs = Binary(op, std::move(lhs), std::move(rhs), start);
      } else {
        return lhs;
      }
    }
  }

  NodePtr Unary() {
    Skip();
    size_t start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '-') {
      if (++depth_ > 200) Fail("expression nested too deeply");
      ++pos_;
      NodePtr operand = Unary();
      --depth_;
      if (operand->op == ExprOp::Number) {
        operand->number = -operand->number;
        operand->text = std::string(text_.substr(start, pos_ - start));
        return operand;
      }
      auto node = Make(ExprOp::Neg, start);
      node->args.push_back(std::move(operand));
      return node;
    }
    return Primary();
  }

  NodePtr Primary() {
    Skip();
    size_t start = pos_;
    if (pos_ >= text_.size()) Fail("unexpected end of expression");
    char c = text_[pos_];
    if (c == '(') {
      ++pos_;
      NodePtr inner = Expr();
      Expect(')');
      return inner;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      double value = 0;
      auto [ptr, ec] = std::from_chars(text_.data() + pos_, text_.data() + text_.size(), value);
      if (ec != std::errc()) Fail("malformed number");
      pos_ = static_cast<size_t>(ptr - text_.data());
      auto node = Make(ExprOp::Number, start);
      node->number = value;
      return node;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_'))
        ++pos_;
      std::string_view name = text_.substr(start, pos_ - start);
      Skip();
      if (pos_ < text_.size() && text_[pos_] == '(') {
        auto fn = Functions().find(name);
        if (fn == Functions().end()) {
          pos_ = start;
          Fail(name == "one_hot" ? "one_hot(...) must be a whole feature" : fmt::format("unknown function '{}'", name));
        }
        ++pos_;
        auto node = std::make_unique<ExpressionNode>();
        node->op = fn->second.op;
        Skip();
        if (pos_ < text_.size() && text_[pos_] != ')') {
          for (;;) {
            node->args.push_back(Expr());
            Skip();
            if (pos_ < text_.size() && text_[pos_] == ',') {
              ++pos_;
              continue;
            }
            break;
          }
        }
        Expect(')');
        if (node->args.size() < fn->second.min_args || node->args.size() > fn->second.max_args) {
          Fail(fmt::format("{} takes {} argument(s), got {}", name,
                           fn->second.min_args == fn->second.max_args ? std::to_string(fn->second.min_args)
                                                                      : fmt::format("{} or more", fn->second.min_args),
                           node->args.size()));
        }
        node->text = std::string(text_.substr(start, pos_ - start));
        return node;
      }
      auto node = Make(ExprOp::Input, start);
      if (auto it = derived_.find(name); it != derived_.end()) {
        node->op = ExprOp::Derived;
        node->index = it->second;
      } else if (auto input = inputs_.find(name); input != inputs_.end()) {
        node->index = input->second;
      } else {
        pos_ = start;
        Fail(fmt::format("unknown name '{}' (not an input column or an earlier derived feature)", name));
      }
      return node;
    }
    Fail(fmt::format("unexpected '{}'", c));
  }

  const std::map<std::string, size_t, std::less<>>& inputs_;
  const std::map<std::string, size_t, std::less<>>& derived_;
  size_t nodes_ = 0;
  static constexpr size_t kMaxNodes = 1000;
};

struct FeatureEntry {
  std::string text;
  NodePtr expression;  // the value, or one_hot's argument
  size_t one_hot = 0;  // number of columns when this is one_hot(x, n)
};

}  // namespace

struct FeatureProgram::Compiled {
  std::vector<NodePtr> derived;
  std::vector<FeatureEntry> features;
};

namespace {

struct EvalContext {
  const ColumnBatch* batch;
  const std::vector<size_t>* input_index;  // input position -> batch column
  const std::vector<std::vector<double>>* derived;
  std::vector<std::string>* errors;
  const std::string* feature;
  bool missing_as_nan;

  void Fail(size_t row, const std::string& what) const {
    if ((*errors)[row].empty()) (*errors)[row] = fmt::format("feature '{}': {}", *feature, what);
  }
};

void Eval(const ExpressionNode& node, const EvalContext& ctx, std::vector<double>& out) {
  const size_t rows = ctx.batch->rows;
  out.resize(rows);
  switch (node.op) {
    case ExprOp::Number: std::fill(out.begin(), out.end(), node.number); return;
    case ExprOp::Input: {
      const size_t index = (*ctx.input_index)[node.index];
      const auto& column = ctx.batch->values[index];
      std::copy(column.begin(), column.end(), out.begin());
      if (ctx.missing_as_nan) {
        const auto& nulls = ctx.batch->nulls[index];
        for (size_t r = 0; r < rows; ++r) {
          if (nulls[r]) out[r] = std::numeric_limits<double>::quiet_NaN();
        }
      }
      return;
    }
    case ExprOp::Derived: {
      const auto& column = (*ctx.derived)[node.index];
      std::copy(column.begin(), column.end(), out.begin());
      return;
    }
    default: break;
  }
  std::vector<std::vector<double>> args(node.args.size());
  for (size_t i = 0; i < node.args.size(); ++i) Eval(*node.args[i], ctx, args[i]);
  const auto& a = args[0];
  auto domain = [&](size_t r, const char* fn, const char* rule) {
    if (ctx.missing_as_nan && std::isnan(a[r])) return;  // missing in, missing out
    ctx.Fail(r, fmt::format("{} of {} value {} in {}", fn, rule, a[r], node.text));
  };
  switch (node.op) {
    case ExprOp::Neg:
      for (size_t r = 0; r < rows; ++r) out[r] = -a[r];
      break;
    case ExprOp::Add:
      for (size_t r = 0; r < rows; ++r) out[r] = a[r] + args[1][r];
      break;
    case ExprOp::Sub:
      for (size_t r = 0; r < rows; ++r) out[r] = a[r] - args[1][r];
      break;
    case ExprOp::Mul:
      for (size_t r = 0; r < rows; ++r) out[r] = a[r] * args[1][r];
      break;
    case ExprOp::Div:
      for (size_t r = 0; r < rows; ++r) {
        if (args[1][r] == 0) ctx.Fail(r, fmt::format("division by zero in {}", node.text));
        out[r] = a[r] / args[1][r];
      }
      break;
    case ExprOp::Ln:
      for (size_t r = 0; r < rows; ++r) {
        if (!(a[r] > 0)) domain(r, "ln", "non-positive");
        out[r] = std::log(a[r]);
      }
      break;
    case ExprOp::Log10:
      for (size_t r = 0; r < rows; ++r) {
        if (!(a[r] > 0)) domain(r, "log10", "non-positive");
        out[r] = std::log10(a[r]);
      }
      break;
    case ExprOp::Exp:
      for (size_t r = 0; r < rows; ++r) out[r] = std::exp(a[r]);
      break;
    case ExprOp::Sqrt:
      for (size_t r = 0; r < rows; ++r) {
        if (a[r] < 0) domain(r, "sqrt", "negative");
        out[r] = std::sqrt(a[r]);
      }
      break;
    case ExprOp::Abs:
      for (size_t r = 0; r < rows; ++r) out[r] = std::abs(a[r]);
      break;
    case ExprOp::Pow:
      for (size_t r = 0; r < rows; ++r) out[r] = std::pow(a[r], args[1][r]);
      break;
    case ExprOp::Min:
    case ExprOp::Max:
      for (size_t r = 0; r < rows; ++r) {
        double v = a[r];
        for (size_t i = 1; i < args.size(); ++i)
          v = node.op == ExprOp::Min ? std::min(v, args[i][r]) : std::max(v, args[i][r]);
        out[r] = v;
      }
      break;
    case ExprOp::Clip:
      for (size_t r = 0; r < rows; ++r) out[r] = std::min(std::max(a[r], args[1][r]), args[2][r]);
      break;
    case ExprOp::BoxCox:
      for (size_t r = 0; r < rows; ++r) {
        if (!(a[r] > 0)) domain(r, "box_cox", "non-positive");
        const double lambda = args[1][r];
        out[r] = lambda == 0 ? std::log(a[r]) : (std::pow(a[r], lambda) - 1.0) / lambda;
      }
      break;
    default: break;
  }
}

}  // namespace

FeatureProgram::FeatureProgram(FeatureProgram&&) noexcept = default;
FeatureProgram& FeatureProgram::operator=(FeatureProgram&&) noexcept = default;
FeatureProgram::~FeatureProgram() = default;

FeatureProgram FeatureProgram::Compile(const FeatureSpec& spec, const std::string& context) {
  FeatureProgram program;
  program.spec_ = spec;
  program.compiled_ = std::make_unique<Compiled>();
  std::map<std::string, size_t, std::less<>> inputs, derived;
  for (size_t i = 0; i < spec.input_columns.size(); ++i) {
    if (!inputs.emplace(spec.input_columns[i], i).second) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: input column '{}' is listed twice", context, spec.input_columns[i]));
    }
  }
  for (size_t i = 0; i < spec.derived.size(); ++i) {
    const auto& d = spec.derived[i];
    if (inputs.contains(d.name) || derived.contains(d.name)) {
      throw Error(ErrorCode::InvalidInput, fmt::format("{}: derived feature '{}' reuses a name", context, d.name));
    }
    Parser parser(d.expression, fmt::format("{}: derived feature '{}'", context, d.name), inputs, derived);
    program.compiled_->derived.push_back(parser.ParseAll());
    derived.emplace(d.name, i);  // later expressions may refer to it
  }
  if (spec.features.empty() && spec.text_features.empty())
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: no features are listed", context));
  for (const auto& column : spec.text_columns) {
    if (inputs.contains(column) || std::count(spec.text_columns.begin(), spec.text_columns.end(), column) > 1)
      throw Error(ErrorCode::InvalidInput, fmt::format("{}: text column '{}' is listed twice", context, column));
  }
  program.text_ = TextProgram::Compile(spec.text_features, spec.text_columns, context);
  for (size_t i = 0; i < spec.features.size(); ++i) {
    FeatureEntry entry;
    entry.text = spec.features[i];
    Parser parser(entry.text, fmt::format("{}: feature {}", context, i + 1), inputs, derived);
    if (!parser.TryOneHot(entry.expression, entry.one_hot)) entry.expression = parser.ParseAll();
    program.width_ += entry.one_hot > 0 ? entry.one_hot : 1;
    program.compiled_->features.push_back(std::move(entry));
  }
  if (!spec.means.empty() || !spec.scales.empty()) {
    if (spec.means.size() != program.width_ || spec.scales.size() != program.width_) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: scaling has {} means and {} scales, the features have {} columns", context,
                              spec.means.size(), spec.scales.size(), program.width_));
    }
    for (size_t i = 0; i < spec.scales.size(); ++i) {
      if (spec.scales[i] == 0 || !std::isfinite(spec.scales[i]) || !std::isfinite(spec.means[i])) {
        throw Error(ErrorCode::InvalidInput,
                    fmt::format("{}: scaling of feature column {} is not usable", context, i + 1));
      }
    }
  }
  return program;
}

std::optional<size_t> FeatureProgram::DerivedIndex(std::string_view name) const {
  for (size_t i = 0; i < spec_.derived.size(); ++i) {
    if (spec_.derived[i].name == name) return i;
  }
  return std::nullopt;
}

void FeatureProgram::Evaluate(const ColumnBatch& batch, FeatureOutput& out) const {
  const size_t rows = batch.rows;
  out.rows = rows;
  out.width = width_;
  out.errors.assign(rows, std::string());
  out.matrix.assign(rows * width_, 0.0f);
  out.derived.resize(spec_.derived.size());
  text_.Evaluate(batch, out.texts, out.errors);

  std::vector<size_t> input_index(spec_.input_columns.size());
  for (size_t i = 0; i < spec_.input_columns.size(); ++i) {
    auto column = batch.Find(spec_.input_columns[i]);
    if (!column)
      throw Error(ErrorCode::InvalidInput, fmt::format("the batch lacks input column '{}'", spec_.input_columns[i]));
    input_index[i] = *column;
    const auto& values = batch.values[*column];
    const auto& nulls = batch.nulls[*column];
    for (size_t r = 0; r < rows; ++r) {
      if (!out.errors[r].empty()) continue;
      if (spec_.missing_as_nan && (nulls[r] || std::isnan(values[r]))) continue;  // missing
      if (nulls[r]) {
        out.errors[r] = fmt::format("column '{}' is NULL", spec_.input_columns[i]);
      } else if (!std::isfinite(values[r])) {
        out.errors[r] = fmt::format("column '{}' is not a finite number ({})", spec_.input_columns[i], values[r]);
      }
    }
  }

  std::string feature_name;
  EvalContext ctx{&batch, &input_index, &out.derived, &out.errors, &feature_name, spec_.missing_as_nan};
  auto check_finite = [&](const std::vector<double>& values) {
    for (size_t r = 0; r < rows; ++r) {
      if (spec_.missing_as_nan && std::isnan(values[r])) continue;  // missing, for the model
      if (!std::isfinite(values[r])) ctx.Fail(r, fmt::format("result is not finite ({})", values[r]));
    }
  };
  for (size_t d = 0; d < compiled_->derived.size(); ++d) {
    feature_name = spec_.derived[d].name;
    Eval(*compiled_->derived[d], ctx, out.derived[d]);
    check_finite(out.derived[d]);
  }
  std::vector<double> column;
  size_t col = 0;
  const bool scaled = !spec_.means.empty();
  for (const auto& entry : compiled_->features) {
    feature_name = entry.text;
    Eval(*entry.expression, ctx, column);
    if (entry.one_hot > 0) {
      for (size_t r = 0; r < rows; ++r) {
        const double code = column[r];
        if (!(code >= 0 && code < static_cast<double>(entry.one_hot)) || code != std::floor(code)) {
          ctx.Fail(r, fmt::format("category {} is outside 0..{}", code, entry.one_hot - 1));
          continue;
        }
        for (size_t k = 0; k < entry.one_hot; ++k) {
          double v = static_cast<size_t>(code) == k ? 1.0 : 0.0;
          if (scaled) v = (v - spec_.means[col + k]) / spec_.scales[col + k];
          out.matrix[r * width_ + col + k] = static_cast<float>(v);
        }
      }
      col += entry.one_hot;
      continue;
    }
    check_finite(column);
    for (size_t r = 0; r < rows; ++r) {
      double v = column[r];
      if (scaled) v = (v - spec_.means[col]) / spec_.scales[col];
      out.matrix[r * width_ + col] = static_cast<float>(v);
    }
    ++col;
  }
}

}  // namespace runnel::features
