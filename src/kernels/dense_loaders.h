// sickle/kernels/dense_loaders.h — scalar element access for the dense (f32/bf16/f16/fp8)
// kernels' tails; shared by the SIMD files (no ISA flags needed here).
#pragma once

#include <cstdint>

#include "base/numeric.h"
#include "io/weights.h"

namespace sickle {

// Column block size of an fp8 weight as a shift, or -1 when it is not a power of two >= 16
// (then the SIMD tables fall back to the scalar kernel for that weight).
inline int fp8_col_shift(const WeightView& w) {
  for (int s = 4; s < 31; ++s)
    if ((int64_t(1) << s) == w.block_cols) return s;
  return -1;
}

}  // namespace sickle
