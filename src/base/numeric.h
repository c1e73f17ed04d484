// sickle/base/numeric.h — scalar conversions between the storage formats sickle reads.
// These are the specification; SIMD kernels must agree with them bit for bit (conversions)
// or within a stated bound (arithmetic).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace sickle {

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN preserved (as torch does).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(float(mant), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; overflow -> inf.
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (absu >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  if (absu < 0x38800000u) {                       // subnormal or zero in f16
    float a;
    std::memcpy(&a, &absu, 4);
    float scaled = a * 16777216.0f;                 // / 2^-24
    uint32_t m = uint32_t(std::nearbyint(scaled));  // ties-to-even (default mode)
    return sign | uint16_t(m);
  }
  uint32_t exp = ((absu >> 23) - 112) << 10;
  uint32_t mant = (absu >> 13) & 0x3ff;
  uint32_t rest = absu & 0x1fff;
  uint32_t h = exp | mant;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h += 1;
  return sign | uint16_t(h);
}

// OCP fp8 e4m3fn (as torch.float8_e4m3fn): bias 7, no inf, 0x7f/0xff = NaN, max 448.
inline float fp8_e4m3_to_f32(uint8_t v) {
  uint32_t sign = v >> 7, exp = (v >> 3) & 0xf, mant = v & 7;
  float r;
  if (exp == 0xf && mant == 7) {
    r = NAN;
  } else if (exp == 0) {
    r = std::ldexp(float(mant), -9);  // mant/8 * 2^-6
  } else {
    r = std::ldexp(1.0f + float(mant) / 8.0f, int(exp) - 7);
  }
  return sign ? -r : r;
}

// Nearest fp8 e4m3fn value (ties to even), saturating at +-448. Used by synth and tests.
uint8_t f32_to_fp8_e4m3(float f);

}  // namespace sickle
