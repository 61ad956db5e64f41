#include "runnel/features/text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include "cursor.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/unicode.hpp"

namespace runnel::features {

enum class TextOp { kLiteral, kColumn, kConcatNullable, kConcat, kCoalesce, kLower, kUpper, kTrim };

struct TextNode {
  TextOp op = TextOp::kLiteral;
  std::string literal;  // kLiteral
  size_t column = 0;    // kColumn: index into the program's columns
  std::vector<std::unique_ptr<TextNode>> args;
};

namespace {

using TextPtr = std::unique_ptr<TextNode>;

class TextParser : Cursor {
 public:
  TextParser(std::string_view text, std::string context, const std::vector<std::string>& columns)
      : Cursor(text, std::move(context)), columns_(columns) {}

  TextPtr ParseAll() {
    CheckLength();
    TextPtr node = Expr();
    Skip();
    if (pos_ != text_.size()) Fail(fmt::format("unexpected '{}'", text_[pos_]));
    return node;
  }

 private:
  TextPtr Expr() {
    if (++depth_ > 200) Fail("expression nested too deeply");
    TextPtr lhs = Term();
    int terms = 1;
    while (Accept("||")) {
      // Each || nests the chain one level deeper: bounded like any nesting.
      if (++terms > 200) Fail("more than 200 terms joined by ||");
      auto node = std::make_unique<TextNode>();
      node->op = TextOp::kConcatNullable;
      node->args.push_back(std::move(lhs));
      node->args.push_back(Term());
      lhs = std::move(node);
    }
    --depth_;
    return lhs;
  }

  TextPtr Literal() {
    auto node = std::make_unique<TextNode>();
    ++pos_;  // the opening quote
    for (;;) {
      if (pos_ >= text_.size()) Fail("unterminated string literal");
      if (text_[pos_] == '\'') {
        if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '\'') {
          node->literal += '\'';
          pos_ += 2;
          continue;
        }
        ++pos_;
        return node;
      }
      node->literal += text_[pos_++];
    }
  }

  std::string Name() {
    const size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) ++pos_;
    if (pos_ == start) Fail("expected a text column, a 'literal' or a function");
    return std::string(text_.substr(start, pos_ - start));
  }

  TextPtr Term() {
    Skip();
    if (pos_ < text_.size() && text_[pos_] == '\'') return Literal();
    const size_t start = pos_;
    const std::string name = Name();
    if (Accept("(")) return Call(name, start);
    const auto it = std::find(columns_.begin(), columns_.end(), name);
    if (it == columns_.end()) {
      pos_ = start;
      Fail(fmt::format("'{}' is not a text column ([source] text_columns)", name));
    }
    auto node = std::make_unique<TextNode>();
    node->op = TextOp::kColumn;
    node->column = static_cast<size_t>(it - columns_.begin());
    return node;
  }

  TextPtr Call(const std::string& name, size_t start) {
    auto node = std::make_unique<TextNode>();
    size_t min_args = 1, max_args = 1;
    if (name == "lower") {
      node->op = TextOp::kLower;
    } else if (name == "upper") {
      node->op = TextOp::kUpper;
    } else if (name == "trim") {
      node->op = TextOp::kTrim;
    } else if (name == "concat" || name == "coalesce") {
      node->op = name == "concat" ? TextOp::kConcat : TextOp::kCoalesce;
      max_args = 64;
    } else {
      pos_ = start;
      Fail(fmt::format("unknown text function '{}' (lower, upper, trim, concat, coalesce)", name));
    }
    do {
      node->args.push_back(Expr());
    } while (node->args.size() < max_args && Accept(","));
    Expect(')');
    if (node->args.size() < min_args) Fail(fmt::format("{} takes at least {} argument", name, min_args));
    return node;
  }

  const std::vector<std::string>& columns_;
};

std::string Trimmed(const std::string& s) {
  size_t begin = 0, end = s.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(s[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(s[end - 1]))) --end;
  return s.substr(begin, end - begin);
}

struct TextRow {
  const ColumnBatch* batch;
  const std::vector<size_t>* columns;  // program column -> batch text column
  size_t row;
};

std::optional<std::string> EvalText(const TextNode& node, const TextRow& at) {
  switch (node.op) {
    case TextOp::kLiteral: return node.literal;
    case TextOp::kColumn: {
      const size_t c = (*at.columns)[node.column];
      if (at.batch->text_nulls[c][at.row]) return std::nullopt;
      return at.batch->texts[c][at.row];
    }
    case TextOp::kConcatNullable: {
      auto lhs = EvalText(*node.args[0], at);
      if (!lhs) return std::nullopt;
      auto rhs = EvalText(*node.args[1], at);
      if (!rhs) return std::nullopt;
      return *lhs + *rhs;
    }
    case TextOp::kConcat: {
      std::string out;
      for (const auto& arg : node.args) out += EvalText(*arg, at).value_or("");
      return out;
    }
    case TextOp::kCoalesce:
      for (const auto& arg : node.args) {
        if (auto v = EvalText(*arg, at)) return v;
      }
      return std::nullopt;
    case TextOp::kLower:
    case TextOp::kUpper:
    case TextOp::kTrim: {
      auto v = EvalText(*node.args[0], at);
      if (!v) return std::nullopt;
      return node.op == TextOp::kTrim
                 ? Trimmed(*v)
                 : MapCase(*v, node.op == TextOp::kUpper ? CaseMapping::kUpper : CaseMapping::kLower);
    }
  }
  return std::nullopt;
}

}  // namespace

TextProgram::TextProgram() = default;
TextProgram::TextProgram(TextProgram&&) noexcept = default;
TextProgram& TextProgram::operator=(TextProgram&&) noexcept = default;
TextProgram::~TextProgram() = default;

TextProgram TextProgram::Compile(const std::vector<std::string>& expressions, const std::vector<std::string>& columns,
                                 const std::string& context) {
  TextProgram program;
  program.columns_ = columns;
  for (size_t i = 0; i < expressions.size(); ++i) {
    TextParser parser(expressions[i], fmt::format("{}: text feature {}", context, i + 1), columns);
    program.roots_.push_back(parser.ParseAll());
    program.expressions_.push_back(expressions[i]);
  }
  return program;
}

void TextProgram::Evaluate(const ColumnBatch& batch, std::vector<std::string>& texts,
                           std::vector<std::string>& errors) const {
  std::vector<size_t> index;
  for (const auto& name : columns_) {
    const auto c = batch.FindText(name);
    if (!c) throw Error(ErrorCode::InvalidInput, fmt::format("the batch lacks text column '{}'", name));
    index.push_back(*c);
  }
  const size_t width = roots_.size();
  texts.assign(batch.rows * width, std::string());
  for (size_t r = 0; r < batch.rows; ++r) {
    for (size_t f = 0; f < width; ++f) {
      auto v = EvalText(*roots_[f], TextRow{&batch, &index, r});
      if (v) {
        texts[r * width + f] = std::move(*v);
      } else if (errors[r].empty()) {
        errors[r] = fmt::format("text feature '{}' is NULL", expressions_[f]);
      }
    }
  }
}

}  // namespace runnel::features
