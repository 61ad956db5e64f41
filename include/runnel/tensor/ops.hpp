// The operator table: which kernel runs an ONNX operator at a given opset. Kernels are
// plain reference implementations (src/tensor/ops_*.cpp), one file per family.
#pragma once

#include <string_view>

#include "runnel/tensor/graph.hpp"

namespace runnel::tensor {

// The kernel for `op` of `domain` ("" or "ai.onnx") at `opset`, or null when the
// runtime has none (or the operator changed meaning past what it implements).
Kernel FindKernel(std::string_view domain, std::string_view op, int opset);
// What that kernel prepares at load, or null when it prepares nothing.
Prepare FindPrepare(std::string_view domain, std::string_view op, int opset);

}  // namespace runnel::tensor
