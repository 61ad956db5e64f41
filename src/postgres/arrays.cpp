#include "runnel/postgres/arrays.hpp"

#include <fmt/format.h>

#include <cmath>

namespace runnel::postgres {

std::string ArrayLiteral(const std::vector<int64_t>& values) {
  return fmt::format("{{{}}}", fmt::join(values, ","));
}

std::string ArrayLiteral(const std::vector<std::optional<double>>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    const auto& v = values[i];
    if (!v) {
      out += "NULL";
    } else if (std::isnan(*v)) {
      out += "NaN";
    } else if (std::isinf(*v)) {
      out += *v > 0 ? "Infinity" : "-Infinity";
    } else {
      fmt::format_to(std::back_inserter(out), "{}", *v);
    }
  }
  return out + "}";
}

std::string ArrayLiteral(const std::vector<std::optional<std::string>>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    if (!values[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

}  // namespace runnel::postgres
