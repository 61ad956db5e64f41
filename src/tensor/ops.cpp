#include "runnel/tensor/ops.hpp"

#include <algorithm>

#include "kernels.hpp"

namespace runnel::tensor {

namespace {

const std::vector<KernelEntry>& Table() {
  static const std::vector<KernelEntry> table = [] {
    std::vector<KernelEntry> t;
    AddElementwiseKernels(t);
    AddShapeKernels(t);
    AddReduceKernels(t);
    AddMatrixKernels(t);
    AddConvKernels(t);
    AddIndexKernels(t);
    AddMlKernels(t);
    AddTextKernels(t);
    AddTreeKernels(t);
    return t;
  }();
  return table;
}

// The entry with the latest `since` not past the model's opset.
const KernelEntry* FindEntry(std::string_view domain, std::string_view op, int opset) {
  if (domain == "ai.onnx") domain = "";
  const KernelEntry* best = nullptr;
  for (const auto& e : Table()) {
    if (e.op != op || e.domain != domain || e.since > opset) continue;
    if (best == nullptr || e.since > best->since) best = &e;
  }
  return best;
}

}  // namespace

Kernel FindKernel(std::string_view domain, std::string_view op, int opset) {
  const KernelEntry* e = FindEntry(domain, op, opset);
  return e != nullptr ? e->kernel : nullptr;
}

Prepare FindPrepare(std::string_view domain, std::string_view op, int opset) {
  const KernelEntry* e = FindEntry(domain, op, opset);
  return e != nullptr ? e->prepare : nullptr;
}

size_t NormalizeAxis(int64_t axis, size_t rank) {
  const auto r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r)
    throw Error(ErrorCode::Model, fmt::format("axis {} is out of range for rank {}", axis, rank));
  return static_cast<size_t>(axis < 0 ? axis + r : axis);
}

Shape BroadcastShapes(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t x = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t y = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (x != y && x != 1 && y != 1) {
      throw Error(ErrorCode::Model, fmt::format("shapes {} and {} do not broadcast", ShapeText(a), ShapeText(b)));
    }
    out[i] = x == 1 ? y : x;
  }
  return out;
}

std::vector<size_t> Strides(const Shape& shape) {
  std::vector<size_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * static_cast<size_t>(shape[i]);
  return strides;
}

InnerRuns SplitInnerRuns(const Shape& out, const std::vector<std::vector<size_t>>& strides) {
  InnerRuns runs;
  runs.step.assign(strides.size(), true);
  std::vector<bool> decided(strides.size(), false);
  size_t axis = out.size();
  for (; axis > 0; --axis) {
    const size_t d = axis - 1;
    if (out[d] == 1) continue;
    bool fits = true;
    for (size_t k = 0; k < strides.size() && fits; ++k) {
      const bool step = decided[k] ? runs.step[k] : strides[k][d] != 0;
      fits = strides[k][d] == (step ? runs.inner : 0);
    }
    if (!fits) break;
    for (size_t k = 0; k < strides.size(); ++k) {
      if (!decided[k]) runs.step[k] = strides[k][d] != 0;
      decided[k] = true;
    }
    runs.inner *= static_cast<size_t>(out[d]);
  }
  runs.outer.assign(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(axis));
  for (const auto& s : strides)
    runs.outer_strides.emplace_back(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(axis));
  return runs;
}

std::vector<size_t> BroadcastStrides(const Shape& shape, const Shape& out) {
  const auto own = Strides(shape);
  std::vector<size_t> strides(out.size(), 0);
  const size_t offset = out.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i) strides[offset + i] = shape[i] == 1 ? 0 : own[i];
  return strides;
}

void CopyElement(const Tensor& src, size_t from, Tensor& dst, size_t to) {
  if (src.type() == DataType::kString) {
    dst.strings()[to] = src.strings()[from];
    return;
  }
  const size_t w = ElementSize(src.type());
  std::copy_n(src.bytes().data() + from * w, w, dst.bytes().data() + to * w);
}

const Tensor& Required(const Node& node, std::span<const Tensor* const> inputs, size_t i) {
  if (i >= inputs.size() || inputs[i] == nullptr) {
    throw Error(ErrorCode::Model, fmt::format("{} needs input {}", node.op, i));
  }
  return *inputs[i];
}

}  // namespace runnel::tensor
