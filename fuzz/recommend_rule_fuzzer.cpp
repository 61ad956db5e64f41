// libFuzzer target: the recommendation rules Runnel evaluates itself
// (pipeline/recommend_rule.hpp). Any text either parses or is left to PostgreSQL,
// never crashes; a parsed rule evaluates over any values, NaN and NULL included.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "runnel/pipeline/recommend_rule.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string why;
  auto rule = runnel::pipeline::RecommendRule::Parse(text, &why);
  if (!rule) {
    if (why.empty()) std::abort();  // a refusal always says why
    return 0;
  }
  // Values drawn from the input's bytes: NULLs, NaN, infinities and ordinary numbers.
  const double kinds[] = {0.0,
                          -0.0,
                          1.0,
                          -1.0,
                          0.5,
                          std::numeric_limits<double>::quiet_NaN(),
                          std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity()};
  auto fill = [&](size_t n, std::vector<double>& values, std::vector<uint8_t>& nulls, size_t salt) {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t byte = size > 0 ? data[(i + salt) % size] : 0;
      values.push_back(kinds[byte % 8]);
      nulls.push_back(byte % 11 == 0 ? 1 : 0);
    }
  };
  std::vector<double> pv, rv;
  std::vector<uint8_t> pn, rn;
  fill(rule->product_columns().size(), pv, pn, 0);
  fill(rule->request_columns().size(), rv, rn, 7);
  (void)rule->Matches({pv.data(), pn.data()}, {rv.data(), rn.data()});
  return 0;
}
