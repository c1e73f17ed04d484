// AVX-512 + AVX512_BF16 kernel table: the AVX-512 table, plus bf16 weights against activations
// rounded to bf16 on VDPBF16PS (Zen 4 and later, Cooper Lake, Sapphire Rapids). Compiled with
// -mavx512bf16 (CMake: *_avx512bf16.cpp); only called when cpu_features().avx512bf16.
//
// VDPBF16PS (Intel SDM vol. 2, "VDPBF16PS"): each f32 lane adds the two products of its pair of
// bf16 elements, one after the other, rounding to nearest even, denormal inputs and outputs
// flushed to zero. A product of two bf16s is exact in f32, so apart from those flushes the
// result is the f32 sum of the scalar twin's products (linear_scalar on the rounded x) in
// another order: the same bound as the f32 kernels. Per instruction it does 32 multiply-adds,
// twice an f32 FMA's, and the weights need no widening.
#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

#include "kernels/avx512.h"
#include "kernels/avx512_transpose.h"
#include "kernels/dispatch.h"

namespace sickle {

namespace {

inline __m512 dp(__m512 acc, __m512i w, __m512i x) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(w), reinterpret_cast<__m512bh>(x));
}

// ---------------------------------------------------------------- few tokens: dot-product tiles

// R weight rows x T tokens, 32 columns (16 pairs) per step; cols % 32 == 0. With `prefetch`
// (decode: every row read once) each line of this tile's rows prefetches the same line of the
// next R rows, as the f32 kernels' dense_tile does.
template <int R, int T>
void dot_tile(const uint16_t* w, int64_t ldw, int64_t r, int64_t cols, const uint32_t* xp, int64_t ldp,
              float* y, int64_t ldy, bool prefetch) {
  __m512 acc[R][T];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) acc[i][j] = _mm512_setzero_ps();
  const uint16_t* wr = w + r * ldw;
  for (int64_t c = 0; c < cols; c += 32) {
    if (prefetch)
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(wr + (R + i) * ldw + c), _MM_HINT_T0);
    __m512i wv[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = _mm512_loadu_si512(wr + i * ldw + c);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      const __m512i xv = _mm512_loadu_si512(xp + j * ldp + c / 2);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = dp(acc[i][j], wv[i], xv);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) y[j * ldy + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

using DotTileFn = void (*)(const uint16_t*, int64_t, int64_t, int64_t, const uint32_t*, int64_t, float*,
                           int64_t, bool);
constexpr int kDotTokens = 4;

template <int R, int... T>
constexpr std::array<DotTileFn, sizeof...(T)> dot_tiles_r(std::integer_sequence<int, T...>) {
  return {dot_tile<R, T + 1>...};
}
constexpr std::array<std::array<DotTileFn, kDotTokens>, 4> kDotTiles = {
    dot_tiles_r<1>(std::make_integer_sequence<int, kDotTokens>{}),
    dot_tiles_r<2>(std::make_integer_sequence<int, kDotTokens>{}),
    dot_tiles_r<3>(std::make_integer_sequence<int, kDotTokens>{}),
    dot_tiles_r<4>(std::make_integer_sequence<int, kDotTokens>{})};

void dot_run(const uint16_t* w, int64_t ldw, int64_t cols, const uint32_t* xp, int64_t ldp, int64_t n,
             int64_t r0, int64_t r1, float* y, int64_t ldy) {
  // Rows in L2-sized chunks with the token tiles inside, so each chunk streams from memory once.
  const int64_t row_chunk = cols <= 2048 ? 64 : 16;
  const bool prefetch = n <= kDotTokens;
  for (int64_t rc = r0; rc < r1; rc += row_chunk) {
    const int64_t rc1 = rc + row_chunk < r1 ? rc + row_chunk : r1;
    for (int64_t t0 = 0; t0 < n; t0 += kDotTokens) {
      const int nt = int(n - t0 < kDotTokens ? n - t0 : kDotTokens);
      for (int64_t r = rc; r < rc1; r += 4) {
        const int nr = int(rc1 - r < 4 ? rc1 - r : 4);
        kDotTiles[size_t(nr - 1)][size_t(nt - 1)](w, ldw, r, cols, xp + t0 * ldp, ldp, y + t0 * ldy, ldy,
                                                  prefetch);
      }
    }
  }
}

// ---------------------------------------------------------------- many tokens: outer products

// A panel of 32 weight rows x kPanelCols columns in VNNI order: panel[j * 32 + i] = the bf16
// pair (2j, 2j + 1) of row i (as stored: one 32-bit word), rows past the matrix zero. Every tile
// of kOuterTokens tokens then runs 2 x NT accumulators over it: per pair two loads from L1 and NT
// broadcast words feed 2 NT VDPBF16PS. Outputs keep their partial sums in y between panels.
// 256 pairs x 32 rows x 4 bytes = 32 KiB, in L1 with the tiles' activations. Half as wide, the
// partial sums in y make twice the round trips: kernels_bench bf16acts_gemm/2048x2048/n256,
// 2 threads, interleaved: 390-408 GFLOP/s at 256 columns, 435-442 at 512 (128: 340-367).
constexpr int64_t kPanelCols = 512;
constexpr int kOuterTokens = 14;     // 28 accumulators + 2 panel registers + a broadcast
constexpr int64_t kOuterMinTokens = 32;

template <int NT>
void outer_tile(const uint32_t* panel, int64_t np, const uint32_t* xp, int64_t ldp, float* y, int64_t ldy,
                int mr, bool add) {
  const int m0 = mr < 16 ? mr : 16, m1 = mr - 16;
  const __mmask16 k0 = __mmask16((1u << m0) - 1), k1 = m1 <= 0 ? 0 : __mmask16((1u << m1) - 1);
  __m512 a0[NT], a1[NT];
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) {
    float* yj = y + j * ldy;
    a0[j] = add ? _mm512_maskz_loadu_ps(k0, yj) : _mm512_setzero_ps();
    a1[j] = add ? _mm512_maskz_loadu_ps(k1, yj + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < np; ++p) {
    const __m512i w0 = _mm512_load_si512(panel + p * 32), w1 = _mm512_load_si512(panel + p * 32 + 16);
#pragma GCC unroll 16
    for (int j = 0; j < NT; ++j) {
      const __m512i xb = _mm512_set1_epi32(int(xp[j * ldp + p]));
      a0[j] = dp(a0[j], w0, xb);
      a1[j] = dp(a1[j], w1, xb);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) {
    float* yj = y + j * ldy;
    _mm512_mask_storeu_ps(yj, k0, a0[j]);
    _mm512_mask_storeu_ps(yj + 16, k1, a1[j]);
  }
}

using OuterTileFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, int, bool);
template <int... J>
constexpr std::array<OuterTileFn, sizeof...(J)> outer_tiles(std::integer_sequence<int, J...>) {
  return {outer_tile<J + 1>...};
}
constexpr auto kOuterTiles = outer_tiles(std::make_integer_sequence<int, kOuterTokens>{});

void outer_run(const uint16_t* w, int64_t ldw, int64_t cols, const uint32_t* xp, int64_t ldp, int64_t n,
               int64_t r0, int64_t r1, float* y, int64_t ldy) {
  alignas(64) uint32_t panel[kPanelCols / 2 * 32];
  for (int64_t rb = r0; rb < r1; rb += 32) {
    const int mr = int(r1 - rb < 32 ? r1 - rb : 32);
    for (int64_t kb = 0; kb < cols; kb += kPanelCols) {
      const int64_t kc = cols - kb < kPanelCols ? cols - kb : kPanelCols;  // a multiple of 32
      for (int h = 0; h < 2; ++h)
        for (int64_t c = 0; c < kc; c += 32) {  // 16 rows x 16 pairs -> 16 pairs x 16 rows
          __m512i rows[16], cols16[16];
          for (int i = 0; i < 16; ++i) {
            const int row = h * 16 + i;
            rows[i] = row < mr ? _mm512_loadu_si512(w + (rb + row) * ldw + kb + c) : _mm512_setzero_si512();
          }
          transpose16(rows, cols16);
          for (int j = 0; j < 16; ++j) _mm512_store_si512(panel + (c / 2 + j) * 32 + h * 16, cols16[j]);
        }
      for (int64_t t0 = 0; t0 < n; t0 += kOuterTokens) {
        const int nt = int(n - t0 < kOuterTokens ? n - t0 : kOuterTokens);
        kOuterTiles[size_t(nt - 1)](panel, kc / 2, xp + t0 * ldp + kb / 2, ldp, y + t0 * ldy + rb, ldy, mr,
                                    kb > 0);
      }
    }
  }
}

// bf16 weight w (cols % 32 == 0) rows [r0, r1) against n tokens of bf16 pairs xp [n, ldp].
void linear_bf16_dot_avx512bf16(const WeightView& w, const uint32_t* xp, int64_t ldp, int64_t n, int64_t r0,
                                int64_t r1, float* y, int64_t ldy) {
  const auto* wp = static_cast<const uint16_t*>(w.data);
  if (n >= kOuterMinTokens) return outer_run(wp, w.cols, w.cols, xp, ldp, n, r0, r1, y, ldy);
  dot_run(wp, w.cols, w.cols, xp, ldp, n, r0, r1, y, ldy);
}

}  // namespace

using namespace avx512;

constinit const KernelTable kAvx512Bf16Kernels = {
    .name = "avx512bf16",
    .quantize_acts = quantize_acts_avx512,
    .linear_int4 = linear_int4_avx512,
    .linear_dense = linear_dense_avx512,
    .dot = dot_avx512,
    .axpy = axpy_avx512,
    .silu_mul = silu_mul_avx512,
    .gemm_nn = gemm_nn_avx512,
    .gemm_nt = gemm_nt_avx512,
    .gemv_n = gemv_n_avx512,
    .gemv_t = gemv_t_avx512,
    .gemm_nn_bf16 = gemm_nn_bf16_avx512,
    .softmax = softmax_avx512,
    .linear_bf16_dot = linear_bf16_dot_avx512bf16,
};

}  // namespace sickle
