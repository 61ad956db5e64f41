// Float math over whole arrays, vectorized with glibc's libmvec (AVX2/AVX-512 expf,
// erff, tanhf; expf from SLEEF on AVX-512 when built with it, which is faster there:
// within 4 ulp of the scalar functions, special values alike). The scalar std::
// functions are the reference they are tested against (tensor_test).
//
// Reductions keep kLanes interleaved partial results that the compiler holds in one
// vector register: a plain loop's single accumulator is a chain of dependent adds, four
// cycles each (a softmax row or a layer norm's mean cost ~4n cycles that way). The sum
// is then taken in another order than a plain loop's; tensor_test holds them to it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>

namespace runnel::tensor {

void ExpInPlace(std::span<float> x);
void ErfInPlace(std::span<float> x);
void TanhInPlace(std::span<float> x);

// The sum of x[0..n) accumulated in Acc.
template <typename Acc, typename T>
Acc SumLanes(const T* x, size_t n) {
  constexpr size_t kLanes = 32 / sizeof(Acc);
  Acc part[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) part[l] += static_cast<Acc>(x[i + l]);
  }
  Acc sum = 0;
  for (size_t l = 0; l < kLanes; ++l) sum += part[l];
  for (; i < n; ++i) sum += static_cast<Acc>(x[i]);
  return sum;
}

// The sum of (x[k] - mean)² accumulated in Acc.
template <typename Acc, typename T>
Acc SquaredDeviationLanes(const T* x, size_t n, Acc mean) {
  constexpr size_t kLanes = 32 / sizeof(Acc);
  Acc part[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) {
      const Acc d = static_cast<Acc>(x[i + l]) - mean;
      part[l] += d * d;
    }
  }
  Acc sum = 0;
  for (size_t l = 0; l < kLanes; ++l) sum += part[l];
  for (; i < n; ++i) {
    const Acc d = static_cast<Acc>(x[i]) - mean;
    sum += d * d;
  }
  return sum;
}

// The largest of x[0..n), n > 0; NaNs are passed over (as `v > max ? v : max` does)
// unless every element is one.
template <typename T>
T MaxLanes(const T* x, size_t n) {
  constexpr size_t kLanes = 32 / sizeof(T);
  T part[kLanes];
  std::fill(part, part + kLanes, x[0]);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t l = 0; l < kLanes; ++l) part[l] = x[i + l] > part[l] ? x[i + l] : part[l];
  }
  T max = part[0];
  for (size_t l = 1; l < kLanes; ++l) max = part[l] > max ? part[l] : max;
  for (; i < n; ++i) max = x[i] > max ? x[i] : max;
  return max;
}

}  // namespace runnel::tensor
