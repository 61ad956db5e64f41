// Compiled with -ffast-math -fopenmp-simd (src/CMakeLists.txt), which is what lets GCC
// call libmvec's vector functions for these loops; nothing else lives in this file, so
// fast-math changes nothing elsewhere. Each loop only applies the function. Exp comes
// from SLEEF on AVX-512 when the library is there: its 16-lane expf is 1.15-1.25x
// libmvec's (erf and tanh are 3.4-3.6x and 2.2x faster with libmvec; `make
// bench-vector-math`, docs/performance.md).
#include "vector_math.hpp"

#include <cmath>

#if defined(RUNNEL_HAVE_SLEEF) && defined(__AVX512F__)
#include <immintrin.h>
#include <sleef.h>
#define RUNNEL_SLEEF_EXP 1
#endif

namespace runnel::tensor {

void ExpInPlace(std::span<float> x) {
  float* p = x.data();
  const size_t n = x.size();
  size_t i = 0;
#ifdef RUNNEL_SLEEF_EXP
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(p + i, Sleef_expf16_u10avx512f(_mm512_loadu_ps(p + i)));
#endif
#pragma omp simd
  for (size_t j = i; j < n; ++j) p[j] = std::exp(p[j]);
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
