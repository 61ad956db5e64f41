// The tensor runtime's array exp, erf and tanh (src/tensor/vector_math.cpp: glibc's
// libmvec through -ffast-math and `omp simd`; exp from SLEEF itself since this bench
// showed it faster, when built with libsleef on AVX-512) beside SLEEF's (Debian's libsleef 3.5,
// the AVX-512 16-lane functions with 1.0-ulp bounds, `Sleef_*f16_u10`), as issue #17
// asks: one core, arrays of 65,536 floats over each function's working range, the two
// alternating three times each; and each one's largest error in ulps against the
// double-precision std:: function over the same inputs. Run by `make
// bench-vector-math` (bench/vector_math_bench.sh); results go to docs/performance.md.
#include <fmt/format.h>
#include <immintrin.h>
#include <sleef.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

#include "vector_math.hpp"

namespace {

constexpr size_t kCount = 1 << 16;

struct Function {
  const char* name;
  float low, high;                    // the inputs' range
  void (*ours)(std::span<float>);     // in place
  decltype(&Sleef_expf16_u10) sleef;  // 16 lanes
  double (*reference)(double);
};

void SleefInPlace(decltype(&Sleef_expf16_u10) f, std::span<float> x) {
  for (size_t i = 0; i + 16 <= x.size(); i += 16) _mm512_storeu_ps(x.data() + i, f(_mm512_loadu_ps(x.data() + i)));
}

// Millions of floats per second over `rounds` passes (each from a fresh copy).
double Rate(const std::function<void(std::span<float>)>& apply, const std::vector<float>& in, int rounds) {
  std::vector<float> buffer(in.size());
  double seconds = 0;
  for (int r = 0; r < rounds; ++r) {
    std::copy(in.begin(), in.end(), buffer.begin());
    const auto start = std::chrono::steady_clock::now();
    apply(buffer);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return static_cast<double>(in.size()) * rounds / seconds / 1e6;
}

// Distance in representable floats between `got` and the correctly rounded `want`.
int64_t Ulps(float got, double want) {
  const float w = static_cast<float>(want);
  if (std::isnan(got) || std::isnan(w)) return std::isnan(got) == std::isnan(w) ? 0 : INT64_MAX;
  const auto key = [](float f) {
    const auto bits = std::bit_cast<int32_t>(f);
    return bits < 0 ? static_cast<int64_t>(INT32_MIN) - bits : static_cast<int64_t>(bits);
  };
  return std::abs(key(got) - key(w));
}

int64_t MaxUlps(const std::function<void(std::span<float>)>& apply, const std::vector<float>& in,
                double (*reference)(double)) {
  std::vector<float> out(in);
  apply(out);
  int64_t worst = 0;
  for (size_t i = 0; i < in.size(); ++i) worst = std::max(worst, Ulps(out[i], reference(in[i])));
  return worst;
}

}  // namespace

int main() {
  const Function functions[] = {
      {"exp", -20.0f, 20.0f, runnel::tensor::ExpInPlace, Sleef_expf16_u10, [](double x) { return std::exp(x); }},
      {"erf", -4.0f, 4.0f, runnel::tensor::ErfInPlace, Sleef_erff16_u10, [](double x) { return std::erf(x); }},
      {"tanh", -6.0f, 6.0f, runnel::tensor::TanhInPlace, Sleef_tanhf16_u10, [](double x) { return std::tanh(x); }},
  };
  std::mt19937 rng(1);
  for (const auto& f : functions) {
    std::uniform_real_distribution<float> dist(f.low, f.high);
    std::vector<float> in(kCount);
    for (auto& v : in) v = dist(rng);
    const auto ours = [&](std::span<float> x) { f.ours(x); };
    const auto sleef = [&](std::span<float> x) { SleefInPlace(f.sleef, x); };
    Rate(ours, in, 200);  // warm up both
    Rate(sleef, in, 200);
    std::vector<double> a, b;
    for (int pass = 0; pass < 3; ++pass) {
      a.push_back(Rate(ours, in, 2000));
      b.push_back(Rate(sleef, in, 2000));
    }
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    fmt::print(
        "{:<5} over [{}, {}]: runnel {:.0f}-{:.0f} M/s, max {} ulp; SLEEF u10 {:.0f}-{:.0f} M/s, "
        "max {} ulp; runnel / SLEEF {:.2f}\n",
        f.name, f.low, f.high, a.front(), a.back(), MaxUlps(ours, in, f.reference), b.front(), b.back(),
        MaxUlps(sleef, in, f.reference), a[1] / b[1]);
  }
}
