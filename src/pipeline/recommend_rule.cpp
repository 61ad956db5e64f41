#include "runnel/pipeline/recommend_rule.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <utility>

namespace runnel::pipeline {

std::optional<RuleColumnKind> ColumnKindFor(std::string_view sql_type) {
  if (sql_type == "smallint" || sql_type == "integer") return RuleColumnKind::kInteger;
  if (sql_type == "bigint") return RuleColumnKind::kBigint;
  if (sql_type == "real") return RuleColumnKind::kFloat4;
  if (sql_type == "double precision") return RuleColumnKind::kFloat8;
  return std::nullopt;
}

enum class NodeKind : uint8_t { kProduct, kRequest, kConstant, kCompare, kIsNull, kAnd, kOr, kNot, kTrue, kFalse };
enum class CompareOp : uint8_t { kEq, kNe, kLt, kLe, kGt, kGe };

struct RecommendRule::Node {
  NodeKind kind;
  CompareOp op = CompareOp::kEq;
  bool negate = false;  // kIsNull: IS NOT NULL
  size_t a = 0, b = 0;  // children (nodes_ indices)
  size_t column = 0;    // kProduct / kRequest
  double constant = 0;  // kConstant
};

namespace {

struct Unsupported {
  std::string why;
};

// A decimal literal whose double is a whole number although the literal is not one
// (3.00000000000000001): compared with an integer column it would decide differently
// from PostgreSQL's exact numeric comparison.
bool RoundsOntoWholeNumber(std::string_view text, double value) {
  if (value != std::trunc(value)) return false;
  std::string digits;
  int64_t point = -1, exponent = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.') {
      point = static_cast<int64_t>(digits.size());
    } else if (c == 'e' || c == 'E') {
      const size_t at = i + 1 < text.size() && text[i + 1] == '+' ? i + 2 : i + 1;
      if (std::from_chars(text.data() + at, text.data() + text.size(), exponent).ec != std::errc() ||
          exponent > 100000 || exponent < -100000) {
        return true;  // beyond any double's digits: treat as risky
      }
      break;
    } else {
      digits += c;
    }
  }
  if (point < 0) point = static_cast<int64_t>(digits.size());
  // Digits at positions >= point + exponent are fractional: all must be zero.
  const int64_t first_fraction = std::max<int64_t>(0, point + exponent);
  for (size_t i = static_cast<size_t>(std::min<int64_t>(first_fraction, static_cast<int64_t>(digits.size())));
       i < digits.size(); ++i) {
    if (digits[i] != '0') return true;
  }
  return false;
}

}  // namespace

class RecommendRule::Parser {
 public:
  Parser(std::string_view text, RecommendRule& rule) : text_(text), rule_(rule) {}

  void ParseAll() {
    const size_t root = Or();
    Skip();
    if (pos_ != text_.size()) Reject(fmt::format("'{}' at position {}", text_.substr(pos_, 12), pos_ + 1));
    if (root != rule_.nodes_.size() - 1) Reject("internal: root is not last");
  }

 private:
  enum class Side { kProduct, kRequest, kConstant };
  struct Operand {
    size_t node;
    Side side;
  };

  [[noreturn]] static void Reject(std::string why) { throw Unsupported{std::move(why)}; }

  void Skip() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  static bool IdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
  static bool IdentChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$'; }

  // A keyword at the cursor (case-insensitive, whole word); consumed when it matches.
  bool Keyword(std::string_view word) {
    Skip();
    if (text_.size() - pos_ < word.size()) return false;
    for (size_t i = 0; i < word.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(text_[pos_ + i])) != word[i]) return false;
    }
    if (pos_ + word.size() < text_.size() && IdentChar(text_[pos_ + word.size()])) return false;
    pos_ += word.size();
    return true;
  }

  size_t Add(Node node) {
    // Evaluation recurses once per level: a bounded tree keeps it off the stack's edge.
    if (rule_.nodes_.size() >= 1000) Reject("more than 1,000 terms");
    rule_.nodes_.push_back(node);
    return rule_.nodes_.size() - 1;
  }

  void Enter() {
    if (++depth_ > 100) Reject("nested too deeply");
  }

  size_t Or() {
    Enter();
    size_t lhs = And();
    while (Keyword("or")) lhs = Add({.kind = NodeKind::kOr, .a = lhs, .b = And()});
    --depth_;
    return lhs;
  }

  size_t And() {
    size_t lhs = Not();
    while (Keyword("and")) lhs = Add({.kind = NodeKind::kAnd, .a = lhs, .b = Not()});
    return lhs;
  }

  size_t Not() {
    Enter();
    size_t result;
    Skip();
    if (Keyword("not")) {
      result = Add({.kind = NodeKind::kNot, .a = Not()});
    } else if (pos_ < text_.size() && text_[pos_] == '(') {
      ++pos_;
      result = Or();
      Skip();
      if (pos_ >= text_.size() || text_[pos_] != ')') Reject(fmt::format("expected ')' at position {}", pos_ + 1));
      ++pos_;
    } else if (Keyword("true")) {
      result = Add({.kind = NodeKind::kTrue});
    } else if (Keyword("false")) {
      result = Add({.kind = NodeKind::kFalse});
    } else {
      result = Predicate();
    }
    --depth_;
    return result;
  }

  size_t Predicate() {
    const Operand lhs = ParseOperand();
    if (Keyword("is")) {
      const bool negate = Keyword("not");
      if (!Keyword("null")) Reject(fmt::format("IS without NULL at position {}", pos_ + 1));
      if (lhs.side == Side::kConstant) Reject("a literal IS NULL");
      return Add({.kind = NodeKind::kIsNull, .negate = negate, .a = lhs.node});
    }
    Skip();
    // Two-character spellings first: "<=" is not "<" followed by "=".
    static constexpr std::pair<std::string_view, CompareOp> kOperators[] = {
        {"<>", CompareOp::kNe}, {"!=", CompareOp::kNe}, {"<=", CompareOp::kLe}, {">=", CompareOp::kGe},
        {"=", CompareOp::kEq},  {"<", CompareOp::kLt},  {">", CompareOp::kGt}};
    const std::string_view rest = text_.substr(pos_);
    const auto* found = std::find_if(std::begin(kOperators), std::end(kOperators),
                                     [&](const auto& candidate) { return rest.starts_with(candidate.first); });
    if (found == std::end(kOperators)) Reject(fmt::format("expected a comparison at position {}", pos_ + 1));
    const CompareOp op = found->second;
    pos_ += found->first.size();
    // "<=>", "<<", "=>" and the like are other PostgreSQL operators.
    if (pos_ < text_.size() && std::string_view("<>=!~@#%^&|`?+-*/").find(text_[pos_]) != std::string_view::npos) {
      Reject(fmt::format("operator at position {}", pos_));
    }
    const Operand rhs = ParseOperand();
    if (lhs.side == Side::kConstant && rhs.side == Side::kConstant) Reject("a comparison of two literals");
    return Add({.kind = NodeKind::kCompare, .op = op, .a = lhs.node, .b = rhs.node});
  }

  Operand ParseOperand() {
    Skip();
    if (pos_ >= text_.size()) Reject("unexpected end");
    const char c = text_[pos_];
    if (c == '-' || c == '.' || std::isdigit(static_cast<unsigned char>(c))) return Number();
    if (!IdentStart(c) && c != '"') Reject(fmt::format("'{}' at position {}", c, pos_ + 1));
    const size_t start = pos_;
    const std::string alias = Identifier();
    Skip();
    if (pos_ >= text_.size() || text_[pos_] != '.') {
      Reject(fmt::format("'{}' at position {} is not a p.column or r.column", alias, start + 1));
    }
    ++pos_;
    Skip();
    const std::string column = Identifier();
    Skip();
    if (pos_ < text_.size() && (text_[pos_] == '(' || text_[pos_] == '.' || text_[pos_] == ':' || text_[pos_] == '[')) {
      Reject(fmt::format("'{}' at position {}", text_[pos_], pos_ + 1));  // calls, casts, subscripts
    }
    if (alias != "p" && alias != "r") Reject(fmt::format("'{}.{}': only p and r are known here", alias, column));
    const bool product = alias == "p";
    auto& names = product ? rule_.product_columns_ : rule_.request_columns_;
    auto it = std::find(names.begin(), names.end(), column);
    if (it == names.end()) it = names.insert(names.end(), column);
    const size_t index = static_cast<size_t>(it - names.begin());
    return {Add({.kind = product ? NodeKind::kProduct : NodeKind::kRequest, .column = index}),
            product ? Side::kProduct : Side::kRequest};
  }

  std::string Identifier() {
    Skip();
    if (pos_ < text_.size() && text_[pos_] == '"') {
      std::string name;
      for (++pos_; pos_ < text_.size(); ++pos_) {
        if (text_[pos_] == '"') {
          if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '"') {
            name += '"';
            ++pos_;
          } else {
            ++pos_;
            if (name.empty()) Reject("an empty quoted identifier");
            return name;
          }
        } else {
          name += text_[pos_];
        }
      }
      Reject("an unterminated quoted identifier");
    }
    if (pos_ >= text_.size() || !IdentStart(text_[pos_]))
      Reject(fmt::format("expected a name at position {}", pos_ + 1));
    std::string name;
    while (pos_ < text_.size() && IdentChar(text_[pos_])) {
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(text_[pos_])));
      ++pos_;
    }
    static constexpr std::string_view kReserved[] = {"and", "or", "not", "is", "null", "true", "false"};
    if (std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved)) {
      Reject(fmt::format("keyword '{}' where a name belongs", name));
    }
    return name;
  }

  Operand Number() {
    const size_t start = pos_;
    bool negative = false;
    if (text_[pos_] == '-') {
      negative = true;
      ++pos_;
      Skip();
    }
    const size_t digits_at = pos_;
    bool decimal = false;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      decimal = true;
      ++pos_;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      decimal = true;
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      const size_t exponent_at = pos_;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      if (pos_ == exponent_at) Reject(fmt::format("a malformed number at position {}", start + 1));
    }
    const std::string_view literal = text_.substr(digits_at, pos_ - digits_at);
    if (literal.empty() || literal == "." || literal.starts_with(".e") || literal.starts_with(".E")) {
      Reject(fmt::format("a malformed number at position {}", start + 1));
    }
    if (pos_ < text_.size() && (IdentChar(text_[pos_]) || text_[pos_] == '.')) {
      Reject(fmt::format("a malformed number at position {}", start + 1));
    }
    double value = 0;
    auto [ptr, ec] = std::from_chars(literal.data(), literal.data() + literal.size(), value);
    if (ec != std::errc() || ptr != literal.data() + literal.size() || !std::isfinite(value)) {
      Reject(fmt::format("number '{}' out of range", literal));
    }
    // Whole-number literals are integers in SQL: exact as doubles below 2^53.
    if (!decimal && value >= 9007199254740992.0) Reject(fmt::format("integer '{}' beyond 2^53", literal));
    if (decimal && RoundsOntoWholeNumber(literal, value)) {
      Reject(fmt::format("number '{}' has more digits than a double keeps", literal));
    }
    return {Add({.kind = NodeKind::kConstant, .constant = negative ? -value : value}), Side::kConstant};
  }

  std::string_view text_;
  RecommendRule& rule_;
  size_t pos_ = 0;
  int depth_ = 0;
};

RecommendRule::RecommendRule() = default;
RecommendRule::RecommendRule(RecommendRule&&) noexcept = default;
RecommendRule& RecommendRule::operator=(RecommendRule&&) noexcept = default;
RecommendRule::~RecommendRule() = default;

std::optional<RecommendRule> RecommendRule::Parse(std::string_view where, std::string* why_not) {
  RecommendRule rule;
  try {
    Parser(where, rule).ParseAll();
  } catch (const Unsupported& unsupported) {
    if (why_not != nullptr) *why_not = unsupported.why;
    return std::nullopt;
  }
  return rule;
}

namespace {

// PostgreSQL's float8 ordering: NaN equals NaN and sorts above every other value.
inline int CompareFloat8(double a, double b) {
  if (std::isnan(a)) return std::isnan(b) ? 0 : 1;
  if (std::isnan(b)) return -1;
  return a < b ? -1 : (a > b ? 1 : 0);
}

}  // namespace

RecommendRule::Truth RecommendRule::Evaluate(size_t index, RuleValues product, RuleValues request) const {
  const Node& node = nodes_[index];
  // An operand's value; *null set for NULL. (Called per product and request: no optional.)
  auto operand = [&](size_t at, bool* null) -> double {
    const Node& o = nodes_[at];
    if (o.kind == NodeKind::kProduct) {
      *null = product.null[o.column] != 0;
      return product.value[o.column];
    }
    if (o.kind == NodeKind::kRequest) {
      *null = request.null[o.column] != 0;
      return request.value[o.column];
    }
    *null = false;
    return o.constant;
  };
  switch (node.kind) {
    case NodeKind::kTrue: return Truth::kTrue;
    case NodeKind::kFalse: return Truth::kFalse;
    case NodeKind::kIsNull: {
      bool null = false;
      operand(node.a, &null);
      return null != node.negate ? Truth::kTrue : Truth::kFalse;
    }
    case NodeKind::kCompare: {
      bool a_null = false, b_null = false;
      const double a = operand(node.a, &a_null);
      const double b = operand(node.b, &b_null);
      if (a_null || b_null) return Truth::kNull;
      const int c = CompareFloat8(a, b);
      bool holds = false;
      switch (node.op) {
        case CompareOp::kEq: holds = c == 0; break;
        case CompareOp::kNe: holds = c != 0; break;
        case CompareOp::kLt: holds = c < 0; break;
        case CompareOp::kLe: holds = c <= 0; break;
        case CompareOp::kGt: holds = c > 0; break;
        case CompareOp::kGe: holds = c >= 0; break;
      }
      return holds ? Truth::kTrue : Truth::kFalse;
    }
    case NodeKind::kNot: {
      const Truth a = Evaluate(node.a, product, request);
      return a == Truth::kNull ? a : (a == Truth::kTrue ? Truth::kFalse : Truth::kTrue);
    }
    case NodeKind::kAnd: {
      const Truth a = Evaluate(node.a, product, request);
      if (a == Truth::kFalse) return a;
      const Truth b = Evaluate(node.b, product, request);
      return b == Truth::kFalse ? b : (a == Truth::kNull || b == Truth::kNull ? Truth::kNull : Truth::kTrue);
    }
    case NodeKind::kOr: {
      const Truth a = Evaluate(node.a, product, request);
      if (a == Truth::kTrue) return a;
      const Truth b = Evaluate(node.b, product, request);
      return b == Truth::kTrue ? b : (a == Truth::kNull || b == Truth::kNull ? Truth::kNull : Truth::kFalse);
    }
    default: return Truth::kNull;  // an operand is never a root: Parse builds only predicates above them
  }
}

bool RecommendRule::Matches(RuleValues product, RuleValues request) const {
  return Evaluate(nodes_.size() - 1, product, request) == Truth::kTrue;
}

}  // namespace runnel::pipeline
