// libFuzzer target: PMML documents (model/pmml). Load, and when it loads, score a few
// rows including missing values: no crash, no hang, no leak on any bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "runnel/core/error.hpp"
#include "runnel/model/pmml.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto model =
        runnel::model::pmml::PmmlModel::Load(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.pmml");
    const size_t in = model->input_names().size();
    const size_t out = model->output_names().size();
    if (in > 1000) return 0;
    std::vector<float> input;
    for (size_t r = 0; r < 3; ++r) {
      for (size_t c = 0; c < in; ++c)
        input.push_back(r == 2 && c == 0 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(r * 3 + c));
    }
    std::vector<float> output(3 * out);
    model->Score(input, 3, output);
  } catch (const runnel::Error&) {
  }
  return 0;
}
