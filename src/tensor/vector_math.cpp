// Compiled with -ffast-math -fopenmp-simd (src/CMakeLists.txt), which is what lets GCC
// call libmvec's vector functions for these loops; nothing else lives in this file, so
// fast-math changes nothing elsewhere. Each loop only applies the function.
#include "vector_math.hpp"

#include <cmath>

namespace runnel::tensor {

void ExpInPlace(std::span<float> x) {
  float* p = x.data();
  const size_t n = x.size();
#pragma omp simd
  for (size_t i = 0; i < n; ++i) p[i] = std::exp(p[i]);
}

void ErfInPlace(std::span<float> x) {
  float* p = x.data();
  const size_t n = x.size();
#pragma omp simd
  for (size_t i = 0; i < n; ++i) p[i] = std::erf(p[i]);
}

void TanhInPlace(std::span<float> x) {
  float* p = x.data();
  const size_t n = x.size();
#pragma omp simd
  for (size_t i = 0; i < n; ++i) p[i] = std::tanh(p[i]);
}

}  // namespace runnel::tensor
