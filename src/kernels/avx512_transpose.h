// sickle/kernels/avx512_transpose.h — the 16 x 16 transpose of 32-bit words in zmm registers,
// shared by the AVX-512, AVX512_BF16 and AMX tables. Include only from translation units built
// with AVX-512 (CMake: *_avx512*.cpp, *_amx.cpp); internal linkage, so each of them keeps the
// copy compiled for its own target flags (an inline function shared across those units could be
// linked from the unit with the most features).
#pragma once

#include <immintrin.h>

namespace sickle {
namespace {

// out[c] = column c of the 16 x 16 matrix of 32-bit words in rows r[0..15]: pairs of rows
// interleaved, then quads, then the 128-bit lanes gathered across registers.
[[maybe_unused]] inline void transpose16(const __m512i r[16], __m512i out[16]) {
  __m512i t[16], u[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // u[4i + k], 128-bit lane L: column 4L + k of rows 4i..4i+3
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512i x0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88),
                  x1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xdd);
    const __m512i y0 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x88);
    const __m512i y1 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xdd);
    out[k] = _mm512_shuffle_i32x4(x0, y0, 0x88);
    out[8 + k] = _mm512_shuffle_i32x4(x0, y0, 0xdd);
    out[4 + k] = _mm512_shuffle_i32x4(x1, y1, 0x88);
    out[12 + k] = _mm512_shuffle_i32x4(x1, y1, 0xdd);
  }
}

// In place: r[j] becomes column j.
[[maybe_unused]] inline void transpose16(__m512i r[16]) {
  __m512i out[16];
  transpose16(r, out);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = out[i];
}

}  // namespace
}  // namespace sickle
