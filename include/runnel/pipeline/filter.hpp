// Row filters that users write (batch jobs' "where", request listings): a safe,
// small language compiled to parameterised SQL, never pasted into a statement.
//
// Grammar:  filter := cond ('and' cond)*       (empty: every row)
//           cond   := name op literal | name 'is' ['not'] 'null'
//           op     := '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
//           literal:= number | 'single-quoted text' ('' escapes a quote) | true | false
// Names are the source table's columns, or `status` / `model_version` (the request's
// result: status is NULL for a row never scored). Keywords are case-insensitive.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::pipeline {

struct CompiledFilter {
  std::string sql;                  // "true" or conditions over s.<column> / r.<field>
  std::vector<std::string> params;  // text values for $first..; the SQL casts them
};

// `columns`: the source table's columns and their SQL types (e.g. "integer"). Source
// columns are referenced as s."name", result fields as r.status / r.model_version;
// parameters are numbered from `first_param`. Throws Error(InvalidInput) naming the
// offset and the problem.
CompiledFilter CompileFilter(std::string_view text, const std::map<std::string, std::string>& columns, int first_param);

}  // namespace runnel::pipeline
