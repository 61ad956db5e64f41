// libFuzzer target: arbitrary bytes through the TensorFlow GraphDef loader, then one prediction.
// A runnel::Error is the expected outcome for bad input; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_common.hpp"
#include "loaders.hpp"
#include "runnel/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto loaded = runnel::model::LoadTfGraph(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.pb");
    auto model = std::make_shared<const runnel::model::Model>(std::move(loaded.graph), std::move(loaded.info));
    runnel::fuzz::Exercise(model);
  } catch (const runnel::Error&) {
  }
  return 0;
}
