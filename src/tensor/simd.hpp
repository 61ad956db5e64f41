// 16-float registers for the float kernels that vectorize by hand (gemm.cpp's
// micro-kernel, ops_conv.cpp's layer norm): one zmm register with AVX-512, two ymm
// with AVX2; GCC and Clang lower the vector extension to what the target has. Loads
// and stores are unaligned.
#pragma once

#include <cstring>

namespace runnel::tensor::simd {

typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));

inline V16 Load(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, V16 v) {
  std::memcpy(p, &v, sizeof(v));
}
// Every lane f. Not `V16{} + f`: adding zero is not the identity for -0.0, so GCC
// keeps a scalar add before each broadcast, and then broadcasts from a register (an
// extra shuffle-port µop per broadcast on Intel, on the port of the second FMA unit)
// instead of from memory.
inline V16 Broadcast(float f) {
  return V16{f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f};
}
// The sum of the lanes as a tree of halves (a chain of 15 dependent adds is 60 cycles).
inline float HorizontalSum(V16 v) {
  const V8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

}  // namespace runnel::tensor::simd
