// The recommendation rule ([recommend].where) evaluated by Runnel itself, for rules
// inside a subset whose PostgreSQL semantics it reproduces exactly; any other rule is
// left to PostgreSQL (the worker then evaluates it in SQL, per request).
//
// Subset:  rule   := or
//          or     := and ('OR' and)*
//          and    := not ('AND' not)*
//          not    := 'NOT' not | '(' rule ')' | 'TRUE' | 'FALSE'
//                  | operand op operand | operand 'IS' ['NOT'] 'NULL'
//          op     := '=' | '<>' | '!=' | '<' | '<=' | '>' | '>='
//          operand:= p.column | r.column | ['-'] number
// p is the catalogue's row, r the request's; identifiers are folded to lower case
// unless double-quoted, keywords are case-insensitive. NULLs follow SQL's three-valued
// logic and a product is recommended when the rule is true.
//
// Why this reproduces PostgreSQL: the columns compared must be smallint, integer,
// bigint (values below 2^53), real or double precision, and for every mix of these
// (and of numeric literals) PostgreSQL's operator resolution compares the two values
// exactly, integers as integers and anything with a float as float8 (real widened,
// never narrowed). So comparing the exact values as doubles, with PostgreSQL's
// ordering of NaN (equal to itself, above every number), gives the same answer. Two
// cases would not: a comparison of two literals (numeric arithmetic) and a decimal
// literal whose double rounds to a whole number it is not (3.00000000000000001);
// neither is accepted.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::pipeline {

// A column type inside the subset, from its SQL name (format_type: "integer", "real",
// "double precision", ...); nullopt for any other type.
enum class RuleColumnKind { kInteger, kBigint, kFloat4, kFloat8 };
std::optional<RuleColumnKind> ColumnKindFor(std::string_view sql_type);

// One side's values for one evaluation: value[i] for the i-th column of that side
// (product_columns() / request_columns()), null[i] when it is NULL.
struct RuleValues {
  const double* value;
  const uint8_t* null;
};

class RecommendRule {
 public:
  // Parses `where`. Returns nullopt, with the reason in *why_not when given, for text
  // outside the subset (including malformed SQL: PostgreSQL reports that). Never
  // throws on any input.
  static std::optional<RecommendRule> Parse(std::string_view where, std::string* why_not = nullptr);

  RecommendRule(RecommendRule&&) noexcept;
  RecommendRule& operator=(RecommendRule&&) noexcept;
  ~RecommendRule();

  // Distinct column names read from p and from r, in first-use order.
  const std::vector<std::string>& product_columns() const { return product_columns_; }
  const std::vector<std::string>& request_columns() const { return request_columns_; }

  // Whether the rule is true for one product and one request. The values must be
  // those of the columns' SQL values converted exactly to double (see above).
  // Thread-safe (const, no state).
  bool Matches(RuleValues product, RuleValues request) const;

 private:
  struct Node;
  class Parser;
  RecommendRule();
  enum class Truth : uint8_t { kFalse, kTrue, kNull };
  Truth Evaluate(size_t node, RuleValues product, RuleValues request) const;
  std::vector<Node> nodes_;  // a tree; children before parents, the root last
  std::vector<std::string> product_columns_, request_columns_;
};

}  // namespace runnel::pipeline
