#include "base/numeric.h"

namespace sickle {

// Round-to-nearest-even by integer arithmetic on the f32 bits (the same trick as f32_to_bf16):
// e4m3fn keeps 3 mantissa bits and exponent bias 7, so for normal results the code is the top
// 12 bits of the rounded f32 (sign cleared) minus the bias difference (127 - 7) << 3. A carry
// out of the mantissa lands in the exponent, which is the right answer. Values below the
// smallest normal (2^-6) are multiples of 2^-9: round a * 2^9 to the nearest even integer.
// Tests check it against an exhaustive nearest-code search (numeric_test / encodings_test).
uint8_t f32_to_fp8_e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;  // saturate (as torch's saturating cast used by quantizers)
  if (a < 0.015625f) {
    float m = std::nearbyint(a * 512.0f);  // default rounding mode: ties to even
    return sign | uint8_t(m);              // m == 8 is 2^-6, the smallest normal: code 0x08
  }
  uint32_t u;
  std::memcpy(&u, &a, 4);
  u += 0x7ffffu + ((u >> 20) & 1u);
  uint32_t code = (u >> 20) - ((127u - 7u) << 3);
  if (code > 0x7e) code = 0x7e;
  return sign | uint8_t(code);
}

}  // namespace sickle
