// libFuzzer target: feature expressions. Each input line is an expression: the first
// becomes a derived feature, all of them features (or, when the input starts with
// "t:", text features over text columns s and t); compiled, then evaluated on a small
// batch including NULLs, zeros, negatives, non-ASCII and malformed UTF-8 text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runnel/core/error.hpp"
#include "runnel/features/features.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  runnel::features::FeatureSpec spec;
  spec.input_columns = {"a", "b", "c"};
  spec.text_columns = {"s", "t"};
  const bool texts = text.starts_with("t:");
  auto& lines = texts ? spec.text_features : spec.features;
  size_t start = texts ? 2 : 0;
  while (start <= text.size() && lines.size() < 16) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (!texts && spec.features.size() > 1) spec.derived.push_back({"d", spec.features.front()});
  try {
    auto program = runnel::features::FeatureProgram::Compile(spec, "fuzz.toml");
    runnel::ColumnBatch batch;
    batch.Reset(spec.input_columns, 4, spec.text_columns);
    const char* strings[4][2] = {{"Disk FULL", "İstanbul ß"}, {"", nullptr}, {"bad \xff\xfe", "x"}, {nullptr, "ok"}};
    for (size_t r = 0; r < 4; ++r) {
      for (size_t c = 0; c < 2; ++c) {
        if (strings[r][c] == nullptr) continue;  // NULL
        batch.texts[c][r] = strings[r][c];
        batch.text_nulls[c][r] = 0;
      }
    }
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
