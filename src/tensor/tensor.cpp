#include "runnel/tensor/tensor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>

namespace runnel::tensor {

std::string DataTypeName(int type) {
  switch (type) {
    case 1: return "float";
    case 2: return "uint8";
    case 3: return "int8";
    case 4: return "uint16";
    case 5: return "int16";
    case 6: return "int32";
    case 7: return "int64";
    case 8: return "string";
    case 9: return "bool";
    case 10: return "float16";
    case 11: return "double";
    case 12: return "uint32";
    case 13: return "uint64";
    case 16: return "bfloat16";
    default: return fmt::format("type {}", type);
  }
}

bool IsSupportedType(int type) {
  switch (type) {
    case 1:
    case 2:
    case 3:
    case 6:
    case 7:
    case 8:
    case 9:
    case 11: return true;
    default: return false;
  }
}

size_t ElementSize(DataType type) {
  switch (type) {
    case DataType::kFloat:
    case DataType::kInt32: return 4;
    case DataType::kDouble:
    case DataType::kInt64: return 8;
    case DataType::kInt8:
    case DataType::kUint8:
    case DataType::kBool: return 1;
    case DataType::kString: return 0;
  }
  return 0;
}

size_t ElementCount(const Shape& shape) {
  // The product of the non-zero dimensions is bounded too, so that no product of
  // dimensions overflows anywhere, even in a tensor with a zero dimension.
  size_t count = 1;
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorCode::Model, fmt::format("shape {} has a negative dimension", ShapeText(shape)));
    if (d == 0) {
      empty = true;
      continue;
    }
    if (count > kMaxElements / static_cast<size_t>(d)) {
      throw Error(ErrorCode::Model, fmt::format("shape {} holds more than {} elements, the most a tensor may",
                                                ShapeText(shape), kMaxElements));
    }
    count *= static_cast<size_t>(d);
  }
  return empty ? 0 : count;
}

std::string ShapeText(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

namespace {
thread_local size_t t_max_tensor_bytes = SIZE_MAX;
thread_local BufferPool* t_buffer_pool = nullptr;

// `bytes` bytes from the heap (contents unspecified).
BufferPool::Bytes HeapBytes(size_t bytes) {
  BufferPool::Bytes out;
  out.resize(bytes);
  return out;
}

// `bytes` bytes (contents unspecified), from this thread's pool when there is one.
BufferPool::Bytes NewBytes(size_t bytes) {
  if (t_buffer_pool != nullptr && bytes >= BufferPool::kMinBytes) return t_buffer_pool->Take(bytes);
  return HeapBytes(bytes);
}
}  // namespace

BufferPool::Bytes BufferPool::Take(size_t bytes) {
  auto it = free_.lower_bound(bytes);
  if (it != free_.end() && it->first / 2 <= bytes) {
    Bytes out = std::move(it->second);
    pooled_ -= it->first;
    free_.erase(it);
    out.resize(bytes);
    return out;
  }
  ++misses_;
  return HeapBytes(bytes);
}

void BufferPool::Give(Bytes bytes) {
  const size_t capacity = bytes.capacity();
  if (capacity < kMinBytes || capacity > max_bytes_) return;  // freed here
  // Full: the smallest buffers go first (left from smaller batches, they fit fewer
  // requests than the one given back).
  while (pooled_ + capacity > max_bytes_) {
    pooled_ -= free_.begin()->first;
    free_.erase(free_.begin());
  }
  pooled_ += capacity;
  free_.emplace(capacity, std::move(bytes));
}

ScopedBufferPool::ScopedBufferPool(BufferPool* pool) : previous_(t_buffer_pool) {
  t_buffer_pool = pool;
}

ScopedBufferPool::~ScopedBufferPool() {
  t_buffer_pool = previous_;
}

ScratchFloats::ScratchFloats(size_t count) : pool_(t_buffer_pool), bytes_(NewBytes(count * sizeof(float))) {}

ScratchFloats::~ScratchFloats() {
  if (pool_ != nullptr) pool_->Give(std::move(bytes_));
}

Tensor::Tensor(const Tensor& other)
    : type_(other.type_), shape_(other.shape_), count_(other.count_), strings_(other.strings_) {
  bytes_ = NewBytes(other.bytes_.size());
  if (!other.bytes_.empty()) std::memcpy(bytes_.data(), other.bytes_.data(), other.bytes_.size());
}

Tensor& Tensor::operator=(const Tensor& other) {
  if (this != &other) *this = Tensor(other);
  return *this;
}

BufferPool::Bytes Tensor::ReleaseBytes() {
  BufferPool::Bytes out = std::move(bytes_);
  *this = Tensor();
  return out;
}

ScopedTensorLimit::ScopedTensorLimit(size_t max_bytes) : previous_(t_max_tensor_bytes) {
  t_max_tensor_bytes = std::min(previous_, max_bytes);
}

ScopedTensorLimit::~ScopedTensorLimit() {
  t_max_tensor_bytes = previous_;
}

Tensor::Tensor(DataType type, Shape shape) : Tensor(type, std::move(shape), true) {}

Tensor Tensor::Uninitialized(DataType type, Shape shape) {
  return Tensor(type, std::move(shape), false);
}

Tensor::Tensor(DataType type, Shape shape, bool zero)
    : type_(type), shape_(std::move(shape)), count_(ElementCount(shape_)) {
  const size_t bytes = count_ * std::max<size_t>(ElementSize(type_), sizeof(std::string) / 4);
  if (bytes > t_max_tensor_bytes) {
    throw Error(ErrorCode::Model, fmt::format("a tensor of shape {} ({} bytes) exceeds the memory budget of {} bytes",
                                              ShapeText(shape_), bytes, t_max_tensor_bytes));
  }
  if (type_ == DataType::kString) {
    strings_.resize(count_);
  } else {
    bytes_ = NewBytes(count_ * ElementSize(type_));
    if (zero) std::fill(bytes_.begin(), bytes_.end(), std::byte{0});
  }
}

void Tensor::CheckType(DataType wanted) const {
  if (wanted != type_) {
    throw Error(ErrorCode::Model, fmt::format("{} elements read as {}", DataTypeName(static_cast<int>(type_)),
                                              DataTypeName(static_cast<int>(wanted))));
  }
}

void Tensor::ThrowNoAxis(size_t axis) const {
  throw Error(ErrorCode::Model, fmt::format("axis {} of a tensor of shape {}", axis, ShapeText(shape_)));
}

void Tensor::Reshape(Shape shape) {
  const size_t count = ElementCount(shape);
  if (count != count_) {
    throw Error(ErrorCode::Model, fmt::format("cannot reshape {} elements of shape {} to {}", count_, ShapeText(shape_),
                                              ShapeText(shape)));
  }
  shape_ = std::move(shape);
}

double ValueAt(const Tensor& t, size_t index) {
  if (index >= t.size()) {
    throw Error(ErrorCode::Model, fmt::format("element {} of a tensor of shape {}", index, ShapeText(t.shape())));
  }
  return VisitNumeric(t.type(), [&](auto zero) { return static_cast<double>(t.data<decltype(zero)>()[index]); });
}

int64_t IntAt(const Tensor& t, size_t index) {
  if (index >= t.size()) {
    throw Error(ErrorCode::Model, fmt::format("element {} of a tensor of shape {}", index, ShapeText(t.shape())));
  }
  return VisitNumeric(t.type(), [&](auto zero) -> int64_t {
    using T = decltype(zero);
    const T v = t.data<T>()[index];
    if constexpr (std::is_floating_point_v<T>) {
      if (!(v > -9.2e18 && v < 9.2e18)) throw Error(ErrorCode::Model, fmt::format("{} is not an integer", v));
    }
    return static_cast<int64_t>(v);
  });
}

std::vector<int64_t> Ints(const Tensor& t) {
  if (t.type() != DataType::kInt64 && t.type() != DataType::kInt32) {
    throw Error(ErrorCode::Model,
                fmt::format("expected an integer tensor, got {}", DataTypeName(static_cast<int>(t.type()))));
  }
  std::vector<int64_t> out(t.size());
  for (size_t i = 0; i < t.size(); ++i) out[i] = IntAt(t, i);
  return out;
}

}  // namespace runnel::tensor
