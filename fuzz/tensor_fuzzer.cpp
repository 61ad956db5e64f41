// libFuzzer target: arbitrary bytes as an ONNX model of the tensor runtime (then one
// run on zero inputs of the declared shapes, when they are all known and small), as
// an ONNX tensor and as a .npy file. A runnel::Error is the expected outcome for bad input; anything
// else (a crash, a leak, undefined behaviour, unbounded memory) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runnel/core/error.hpp"
#include "runnel/tensor/graph.hpp"
#include "runnel/tensor/onnx_import.hpp"
#include "runnel/tensor/tensor_files.hpp"

namespace {

using runnel::tensor::Tensor;

// Zero inputs of the declared types and shapes, or false when one is not fully known
// or would be large.
bool ZeroInputs(const runnel::tensor::Graph& graph, std::vector<Tensor>& inputs) {
  for (const auto& info : graph.input_info) {
    if (!info.type || !info.has_shape) return false;
    runnel::tensor::Shape shape;
    int64_t count = 1;
    for (const auto& d : info.dims) {
      if (!d || *d < 0 || *d > 64) return false;
      count *= *d;
      shape.push_back(*d);
    }
    if (count > 4096) return false;
    inputs.emplace_back(*info.type, std::move(shape));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    auto graph = runnel::tensor::LoadOnnxGraph(bytes, "fuzz.onnx");
    std::vector<Tensor> inputs;
    if (ZeroInputs(*graph, inputs)) {
      runnel::tensor::Session session(graph, size_t{16} << 20);  // keeps each run short
      session.Run(std::move(inputs));
    }
  } catch (const runnel::Error&) {
  }
  try {
    runnel::tensor::LoadOnnxTensor(bytes, "fuzz.pb");
  } catch (const runnel::Error&) {
  }
  try {
    const auto t = runnel::tensor::LoadNpy(bytes, "fuzz.npy");
    runnel::tensor::SaveNpy(t);
  } catch (const runnel::Error&) {
  }
  return 0;
}
