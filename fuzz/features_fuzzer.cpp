// libFuzzer target: feature expressions. Each input line is an expression: the first
// becomes a derived feature, all of them features; compiled, then evaluated on a
// small batch including NULLs, zeros and negatives.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runnel/core/error.hpp"
#include "runnel/features/features.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  runnel::features::FeatureSpec spec;
  spec.input_columns = {"a", "b", "c"};
  size_t start = 0;
  while (start <= text.size() && spec.features.size() < 16) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    spec.features.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (spec.features.size() > 1) spec.derived.push_back({"d", spec.features.front()});
  try {
    auto program = runnel::features::FeatureProgram::Compile(spec, "fuzz.toml");
    runnel::ColumnBatch batch;
    batch.Reset(spec.input_columns, 4);
    const double values[4][3] = {{1, 2, 3}, {0, -1, 0.5}, {1e300, -1e-300, 7}, {4, 5, 6}};
    for (size_t r = 0; r < 4; ++r) {
      for (size_t c = 0; c < 3; ++c) {
        if (!(r == 3 && c == 1)) batch.Set(c, r, values[r][c]);  // one NULL
      }
    }
    runnel::features::FeatureOutput out;
    program.Evaluate(batch, out);
  } catch (const runnel::Error&) {
  }
  return 0;
}
