// What the expression parsers (features.cpp: numbers, text.cpp: text) share: the
// text, the position in it, and errors that name the file, the feature and the
// position.
#pragma once

#include <fmt/format.h>

#include <cctype>
#include <string>
#include <string_view>

#include "runnel/core/error.hpp"

namespace runnel::features {

class Cursor {
 protected:
  Cursor(std::string_view text, std::string context) : text_(text), context_(std::move(context)) {}

  // Each node of a parsed expression keeps its text for messages: the text is bounded
  // so that no expression costs unbounded memory.
  static constexpr size_t kMaxExpressionLength = 10000;

  [[noreturn]] void Fail(const std::string& what) const {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: {} at position {} in '{}'", context_, what, pos_ + 1, text_));
  }
  void CheckLength() const {
    if (text_.size() > kMaxExpressionLength)
      Fail(fmt::format("expression longer than {} characters", kMaxExpressionLength));
  }
  void Skip() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  // Consumes `token` after any whitespace when it comes next.
  bool Accept(std::string_view token) {
    Skip();
    if (text_.substr(pos_, token.size()) != token) return false;
    pos_ += token.size();
    return true;
  }
  void Expect(char c) {
    if (!Accept(std::string_view(&c, 1))) Fail(fmt::format("expected '{}'", c));
  }

  std::string_view text_;
  std::string context_;
  size_t pos_ = 0;
  int depth_ = 0;  // nesting so far (bounded by each parser)
};

}  // namespace runnel::features
