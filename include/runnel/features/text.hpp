// Text features: expressions over text columns that feed a model's string inputs
// (a TF-IDF pipeline, a tokenizer). Parsed once, evaluated per batch.
//
// Grammar:   expr := term ('||' term)*
//            term := 'literal' | name | lower(expr) | upper(expr) | trim(expr)
//                  | concat(expr, ...) | coalesce(expr, ...)
// Literals are in single quotes; '' inside one is a quote. NULLs behave as in
// PostgreSQL: `a || b` is NULL when either is, concat() skips NULL arguments,
// coalesce() is its first non-NULL argument, lower/upper/trim of NULL is NULL. A text
// feature that is NULL for a row fails that row (naming the feature); wrap columns
// that may be NULL in coalesce(col, '') or concat(). lower/upper map case by Unicode
// code point; trim removes leading and trailing whitespace.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runnel/core/batch.hpp"

namespace runnel::features {

struct TextNode;  // defined in the implementation

class TextProgram {
 public:
  // Parses every expression; names must be among `columns`. Throws
  // Error(InvalidInput) naming `context`, the feature and the position.
  static TextProgram Compile(const std::vector<std::string>& expressions, const std::vector<std::string>& columns,
                             const std::string& context);

  TextProgram();
  TextProgram(TextProgram&&) noexcept;
  TextProgram& operator=(TextProgram&&) noexcept;
  ~TextProgram();

  size_t width() const { return expressions_.size(); }

  // Row r's text feature f at texts[r * width() + f]. A row whose feature is NULL
  // gets an error in `errors` (unless it has one already) and an empty text.
  // Precondition: `batch` holds the text columns; errors.size() == batch.rows.
  // Thread safety: const and reentrant.
  void Evaluate(const ColumnBatch& batch, std::vector<std::string>& texts, std::vector<std::string>& errors) const;

 private:
  std::vector<std::string> columns_;  // the text columns read, by name
  std::vector<std::string> expressions_;
  std::vector<std::unique_ptr<TextNode>> roots_;
};

}  // namespace runnel::features
