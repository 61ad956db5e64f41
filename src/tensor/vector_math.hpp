// Float math over whole arrays, vectorized with glibc's libmvec (AVX2/AVX-512 expf,
// erff, tanhf: within 4 ulp of the scalar functions, special values alike). The
// scalar std:: functions are the reference they are tested against (tensor_test).
#pragma once

#include <span>

namespace runnel::tensor {

void ExpInPlace(std::span<float> x);
void ErfInPlace(std::span<float> x);
void TanhInPlace(std::span<float> x);

}  // namespace runnel::tensor
