#include "runnel/pipeline/filter.hpp"

#include <fmt/format.h>

#include <cctype>

#include "runnel/core/error.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::map<std::string, std::string>& columns, int first_param)
      : text_(text), columns_(columns), next_param_(first_param) {}

  CompiledFilter Parse() {
    CompiledFilter out;
    SkipSpace();
    if (pos_ == text_.size()) {
      out.sql = "true";
      return out;
    }
    while (true) {
      std::string cond = Condition(out.params);
      out.sql += out.sql.empty() ? cond : " AND " + cond;
      SkipSpace();
      if (pos_ == text_.size()) break;
      if (!Keyword("and")) Fail("expected 'and' or the end of the filter");
    }
    return out;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const {
    throw Error(ErrorCode::InvalidInput, fmt::format("filter at offset {}: {}", pos_, what));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  std::string Word() {
    SkipSpace();
    const size_t start = pos_;
    while (pos_ < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }

  bool Keyword(std::string_view word) {
    const size_t save = pos_;
    std::string got = Word();
    for (auto& c : got) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (got == word) return true;
    pos_ = save;
    return false;
  }

  std::string Condition(std::vector<std::string>& params) {
    SkipSpace();
    const size_t at = pos_;
    std::string name = Word();
    if (name.empty()) Fail("expected a column name");
    std::string ref, type;
    if (name == "status" || name == "model_version") {
      ref = "r." + name;
      type = "text";
    } else if (auto it = columns_.find(name); it != columns_.end()) {
      ref = "s." + postgres::QuoteIdentifier(name);
      type = it->second;
    } else {
      pos_ = at;
      Fail(fmt::format("unknown column '{}'", name));
    }
    if (Keyword("is")) {
      const bool negated = Keyword("not");
      if (!Keyword("null")) Fail("expected 'null' after 'is'");
      return fmt::format("{} IS {}NULL", ref, negated ? "NOT " : "");
    }
    SkipSpace();
    std::string op;
    for (std::string_view candidate : {"<=", ">=", "!=", "<>", "=", "<", ">"}) {
      if (text_.substr(pos_).starts_with(candidate)) {
        op = candidate;
        pos_ += candidate.size();
        break;
      }
    }
    if (op.empty()) Fail("expected one of = != <> < <= > >= or 'is'");
    if (op == "!=") op = "<>";
    params.push_back(Literal());
    return fmt::format("{} {} ${}::{}", ref, op, next_param_++, type);
  }

  std::string Literal() {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == '\'') {
      std::string value;
      ++pos_;
      while (true) {
        if (pos_ >= text_.size()) Fail("unterminated text literal");
        if (text_[pos_] == '\'') {
          if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '\'') {
            value += '\'';
            pos_ += 2;
            continue;
          }
          ++pos_;
          return value;
        }
        value += text_[pos_++];
      }
    }
    const size_t start = pos_;
    if (pos_ < text_.size() && (text_[pos_] == '-' || text_[pos_] == '+')) ++pos_;
    while (pos_ < text_.size() &&
           (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.' || text_[pos_] == '_')) {
      ++pos_;
    }
    std::string value(text_.substr(start, pos_ - start));
    if (value.empty()) Fail("expected a number, 'text', true or false");
    std::string lower = value;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "true" || lower == "false") return lower;
    // Numbers only: anything else would need quotes.
    const bool numeric = value.find_first_not_of("+-.0123456789eE") == std::string::npos &&
                         value.find_first_of("0123456789") != std::string::npos;
    if (!numeric) {
      pos_ = start;
      Fail(fmt::format("'{}' is not a number: quote text values", value));
    }
    return value;
  }

  std::string_view text_;
  const std::map<std::string, std::string>& columns_;
  int next_param_;
  size_t pos_ = 0;
};

}  // namespace

CompiledFilter CompileFilter(std::string_view text, const std::map<std::string, std::string>& columns,
                             int first_param) {
  if (text.size() > 4096) throw Error(ErrorCode::InvalidInput, "filter is longer than 4096 characters");
  return Parser(text, columns, first_param).Parse();
}

}  // namespace runnel::pipeline
