// PostgreSQL array literals ('{1,2,NULL}') for set-based statements: a batch travels
// as one parameter per column, e.g. `UPDATE t SET y = v.y FROM unnest($1::bigint[],
// $2::float8[]) AS v(key, y) WHERE t.key = v.key`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace runnel::postgres {

std::string ArrayLiteral(const std::vector<int64_t>& values);
// NaN and infinities are written as PostgreSQL spells them; nullopt is NULL.
std::string ArrayLiteral(const std::vector<std::optional<double>>& values);
// Every element quoted and escaped; nullopt is NULL.
std::string ArrayLiteral(const std::vector<std::optional<std::string>>& values);

}  // namespace runnel::postgres
