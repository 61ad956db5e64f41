// Shared by the fuzz targets: run a loaded model once so execution is fuzzed too.
#pragma once

#include <memory>
#include <vector>

#include "runnel/model/model.hpp"

namespace runnel::fuzz {

inline void Exercise(const std::shared_ptr<const model::Model>& model) {
  if (model->input_width() > (1u << 16)) return;  // keep each run cheap
  model::ModelSession session(model);
  std::vector<float> input(model->input_width() * 3, 0.5f);
  session.Predict(input, 3);
}

}  // namespace runnel::fuzz
