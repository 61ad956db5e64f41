// Tensors of the general runtime (ONNX graphs beyond the dense [batch, width] fast
// path of model/graph.hpp): any rank, dynamic dimensions, eight element types.
//
// Thread safety: a Tensor is a value; distinct tensors may be used from distinct
// threads, one tensor from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "runnel/core/error.hpp"

namespace runnel::tensor {

// Element types, numbered as ONNX's TensorProto.DataType numbers them.
enum class DataType : int {
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,
  kBool = 9,
  kDouble = 11,
};

// "float", "int64", ...; "type N" for a number that is not a DataType.
std::string DataTypeName(int type);
// Whether ONNX's element type number `type` is one of DataType's.
bool IsSupportedType(int type);
size_t ElementSize(DataType type);  // 0 for strings

using Shape = std::vector<int64_t>;

// Elements of `shape` (1 for a scalar). Throws Error(Model) for a negative
// dimension or more than kMaxElements.
size_t ElementCount(const Shape& shape);
// The most elements one tensor may hold (2^26, 512 MiB of doubles): a bound every
// loader and operator checks before it allocates.
inline constexpr size_t kMaxElements = size_t{1} << 26;

std::string ShapeText(const Shape& shape);  // "[2, 3]"

// The DataType of C++ type T.
template <typename T>
constexpr DataType TypeOf() {
  if constexpr (std::is_same_v<T, float>) return DataType::kFloat;
  if constexpr (std::is_same_v<T, double>) return DataType::kDouble;
  if constexpr (std::is_same_v<T, int64_t>) return DataType::kInt64;
  if constexpr (std::is_same_v<T, int32_t>) return DataType::kInt32;
  if constexpr (std::is_same_v<T, int8_t>) return DataType::kInt8;
  if constexpr (std::is_same_v<T, uint8_t>) return DataType::kUint8;
  if constexpr (std::is_same_v<T, bool>) return DataType::kBool;
  return DataType::kString;
}

// A model reached something the runtime does not implement (an operator, an
// attribute value, an element type): "unsupported: ...". Never a wrong answer.
class UnsupportedError : public Error {
 public:
  explicit UnsupportedError(const std::string& what) : Error(ErrorCode::Model, "unsupported: " + what) {}
};

// While it lives, no tensor made on this thread may take more than `max_bytes` (a
// Session's budget: a hostile graph is stopped before it allocates, not after).
// Nests; the previous limit comes back on destruction.
class ScopedTensorLimit {
 public:
  explicit ScopedTensorLimit(size_t max_bytes);
  ~ScopedTensorLimit();
  ScopedTensorLimit(const ScopedTensorLimit&) = delete;
  ScopedTensorLimit& operator=(const ScopedTensorLimit&) = delete;

 private:
  size_t previous_;
};

// Allocates without value-initializing: a resize leaves trivial elements as they are.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using std::allocator<T>::allocator;
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// Buffers a Session's values no longer need, for the next tensors made while it runs
// (its memory plan, graph.hpp): while a ScopedBufferPool names it on a thread, a
// numeric tensor of at least kMinBytes made or copied there takes a pooled buffer that
// fits, so that in steady state a run allocates nothing for its values.
// Thread safety: none; a Session's own, used by the thread running it.
class BufferPool {
 public:
  using Bytes = std::vector<std::byte, DefaultInitAllocator<std::byte>>;
  static constexpr size_t kMinBytes = 1024;  // smaller buffers are left to malloc

  // Holds at most `max_bytes` of buffers; a buffer beyond that is freed.
  explicit BufferPool(size_t max_bytes) : max_bytes_(max_bytes) {}
  // A pooled buffer of capacity at least `bytes` and at most twice that (best fit),
  // resized to `bytes` (contents unspecified); else a new one, counted as a miss.
  Bytes Take(size_t bytes);
  void Give(Bytes bytes);
  size_t misses() const { return misses_; }  // buffers of >= kMinBytes allocated anew

 private:
  std::multimap<size_t, Bytes> free_;  // by capacity
  size_t pooled_ = 0;
  size_t max_bytes_;
  size_t misses_ = 0;
};

// While it lives, numeric tensors made on this thread draw on `pool` (nullptr: none).
// Nests; the previous pool comes back on destruction.
class ScopedBufferPool {
 public:
  explicit ScopedBufferPool(BufferPool* pool);
  ~ScopedBufferPool();
  ScopedBufferPool(const ScopedBufferPool&) = delete;
  ScopedBufferPool& operator=(const ScopedBufferPool&) = delete;

 private:
  BufferPool* previous_;
};

// A kernel's scratch floats for one call: from this thread's BufferPool while a
// Session runs (and given back to it when destroyed), else from the heap. Contents
// unspecified.
class ScratchFloats {
 public:
  explicit ScratchFloats(size_t count);
  ~ScratchFloats();
  ScratchFloats(const ScratchFloats&) = delete;
  ScratchFloats& operator=(const ScratchFloats&) = delete;
  float* data() { return reinterpret_cast<float*>(bytes_.data()); }

 private:
  BufferPool* pool_;
  BufferPool::Bytes bytes_;
};

class Tensor {
 public:
  Tensor() = default;
  // Copies take their buffer as new tensors do (from this thread's BufferPool).
  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  ~Tensor() = default;
  // Zero-filled (empty strings). Throws as ElementCount does, and Error(Model) past
  // this thread's ScopedTensorLimit.
  Tensor(DataType type, Shape shape);
  // The same, but numeric elements are left unspecified: for kernels that write every
  // element of their output (no zero-fill pass over a large tensor).
  static Tensor Uninitialized(DataType type, Shape shape);

  template <typename T>
  static Tensor Of(DataType type, Shape shape, std::span<const T> values) {
    Tensor t(type, std::move(shape));
    auto out = t.data<T>();
    for (size_t i = 0; i < out.size() && i < values.size(); ++i) out[i] = values[i];
    return t;
  }

  DataType type() const { return type_; }
  const Shape& shape() const { return shape_; }
  size_t rank() const { return shape_.size(); }
  size_t size() const { return count_; }
  // Dimension `axis`; Error(Model) past the rank (kernels read dimensions of hostile
  // inputs).
  int64_t dim(size_t axis) const {
    if (axis >= shape_.size()) ThrowNoAxis(axis);
    return shape_[axis];
  }

  // The elements as T, which must be the C++ type of type() (float, double, int64_t,
  // int32_t, int8_t, uint8_t, bool): checked, Error(Model) otherwise, so that a kernel
  // mixing up its inputs' types fails instead of reading past a buffer.
  template <typename T>
  std::span<T> data() {
    CheckType(TypeOf<T>());
    return {reinterpret_cast<T*>(bytes_.data()), count_};
  }
  template <typename T>
  std::span<const T> data() const {
    CheckType(TypeOf<T>());
    return {reinterpret_cast<const T*>(bytes_.data()), count_};
  }
  std::vector<std::string>& strings() { return strings_; }
  const std::vector<std::string>& strings() const { return strings_; }
  std::span<std::byte> bytes() { return bytes_; }
  std::span<const std::byte> bytes() const { return bytes_; }

  // Same elements, another shape of as many elements. Throws Error(Model) otherwise.
  void Reshape(Shape shape);

  // Gives up its numeric buffer (for a BufferPool) and becomes an empty tensor.
  BufferPool::Bytes ReleaseBytes();

 private:
  void CheckType(DataType wanted) const;
  [[noreturn]] void ThrowNoAxis(size_t axis) const;

  DataType type_ = DataType::kFloat;
  Shape shape_;
  size_t count_ = 0;
  Tensor(DataType type, Shape shape, bool zero);

  std::vector<std::byte, DefaultInitAllocator<std::byte>> bytes_;  // numeric elements, native byte order
  std::vector<std::string> strings_;
};

// Calls f(T{}) with T the C++ type of a numeric (non-string) DataType. Throws
// UnsupportedError for strings.
template <typename F>
decltype(auto) VisitNumeric(DataType type, F&& f) {
  switch (type) {
    case DataType::kFloat: return f(float{});
    case DataType::kDouble: return f(double{});
    case DataType::kInt64: return f(int64_t{});
    case DataType::kInt32: return f(int32_t{});
    case DataType::kInt8: return f(int8_t{});
    case DataType::kUint8: return f(uint8_t{});
    case DataType::kBool: return f(bool{});
    case DataType::kString: break;
  }
  throw UnsupportedError("string elements here");
}

// The element at `index` as a double / int64 (numeric tensors). Error(Model) past the
// end, and for a float too large for an int64.
double ValueAt(const Tensor& t, size_t index);
int64_t IntAt(const Tensor& t, size_t index);
// The elements of an integer tensor (shape inputs: Reshape, Slice, axes), as int64.
std::vector<int64_t> Ints(const Tensor& t);

}  // namespace runnel::tensor
