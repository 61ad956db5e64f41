// libFuzzer target: tree ensembles, XGBoost JSON and ONNX ai.onnx.ml
// (model/xgboost_loader.cpp, model/onnx_trees.cpp, model/trees.cpp), through the same
// entry as the registry. Load, and when it loads, score a few rows including missing
// values: no crash, no endless walk, no leak on any bytes.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto model = runnel::model::LoadModelFromBytes(std::string_view(reinterpret_cast<const char*>(data), size),
                                                   "fuzz.model", "v");
    if (model->trees() == nullptr || model->input_width() > 1000) return 0;
    std::vector<float> input;
    for (size_t r = 0; r < 3; ++r) {
      for (size_t c = 0; c < model->input_width(); ++c)
        input.push_back(r == 2 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(r * 3 + c) - 2.5f);
    }
    runnel::model::ModelSession session(model);
    session.Predict(input, 3);
  } catch (const runnel::Error&) {
  }
  return 0;
}
