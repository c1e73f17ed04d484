// AVX-512 (F/BW/VL) + VNNI kernel table. Compiled with -mavx512* (CMake: *_avx512.cpp);
// only called when kernel_table() found the features at run time.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "base/numeric.h"
#include "kernels/avx512.h"
#include "kernels/avx512_transpose.h"
#include "kernels/dispatch.h"
#include "kernels/generic.h"
#include "kernels/simd_dense.h"
#include "runtime/scratch.h"

namespace sickle {

// Everything here has external linkage in sickle::avx512 (the table's entries are declared in
// kernels/avx512.h for the AMX table); nothing outside this file uses the helpers.
namespace avx512 {

// ---------------------------------------------------------------- activation quantization

// quantize_acts_generic with vectors, value for value: amax = max |x| over the block, id =
// 127 / amax, q = round-to-nearest-even(x * id) (cvtps under the default MXCSR rounding = the
// generic nearbyint), d = amax / 127; a non-finite value makes the block's d (and m) NaN.
void quantize_acts_avx512(const float* x, int64_t ldx, int64_t t0, int64_t t1, QuantizedActs& qa) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t t = t0; t < t1; ++t) {
    const float* xt = x + t * ldx;
    int8_t* q = qa.q + t * qa.q_stride();
    float* d = qa.d + t * qa.dm_stride();
    float* m = qa.m + t * qa.dm_stride();
    for (int64_t b = 0; b < qa.n_blocks_padded; ++b) {
      int8_t* qe = q + (b / 4) * 128 + (b % 4) * 16;
      if (b >= qa.n_blocks) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qe), _mm_setzero_si128());
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qe + 64), _mm_setzero_si128());
        _mm_storeu_ps(d + 4 * b, _mm_setzero_ps());
        _mm_storeu_ps(m + 4 * b, _mm_setzero_ps());
        continue;
      }
      const __m512 x0 = _mm512_loadu_ps(xt + b * 32), x1 = _mm512_loadu_ps(xt + b * 32 + 16);
      // fpclass 0x99: QNaN | +Inf | -Inf | SNaN.
      const bool finite = (_mm512_fpclass_ps_mask(x0, 0x99) | _mm512_fpclass_ps_mask(x1, 0x99)) == 0;
      float db = NAN, sumf = 0;
      __m128i e8 = _mm_setzero_si128(), o8 = _mm_setzero_si128();
      if (finite) {
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
        db = amax / 127.0f;
        const __m512 id = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
        const __m512i v0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, id)),
                      v1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, id));
        e8 = _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(v0, even, v1));
        o8 = _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(v0, odd, v1));
        sumf = float(_mm512_reduce_add_epi32(_mm512_add_epi32(v0, v1)));
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qe), e8);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qe + 64), o8);
      _mm_storeu_ps(d + 4 * b, _mm_set1_ps(db));
      _mm_storeu_ps(m + 4 * b, _mm_set1_ps(2.0f * db * sumf));
    }
  }
}

// ---------------------------------------------------------------- int4 x int8 (VNNI)

// Decode streams each weight row once from memory; the kernels prefetch this many bytes ahead
// of what they consume (rows are contiguous, so this runs on into the next rows; past the
// matrix end a prefetch is a harmless no-op). A fixed distance, not "the next rows": at 1024
// or 2048 columns the next pair is only 1-2 KiB on, too close to hide the latency. Measured,
// 2 threads, cold 1024-row int4 matrices (a sweep of 2-12 KiB, T0 vs NTA): 2048 columns 36 ->
// 42 GB/s, 1024 columns 32 -> 42-45, 7168 columns (the next pair is 7 KiB on) 40 -> 41.
constexpr int64_t kInt4PrefetchBytes = 8192;

// One weight row against T tokens. Per step of 4 blocks (128 values, 64 weight bytes): the low
// nibbles are the even-indexed values, the high nibbles the odd ones; vpdpbusd multiplies the
// unsigned nibble (q + 8) by the signed int8 activation and the -8 offset comes back through
// m = 8 d sum(q) (see QuantizedActs). Lane i of the int32 result belongs to block i / 4.
template <int T>
inline void int4_row(const uint8_t* wr, const uint16_t* sr, int64_t nb, const QuantizedActs& qa, int64_t t0,
                     float* y, int64_t ldy, bool add) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  // vpermw index: the high 16 bits of int32 lane L take bf16 scale L / 4 (low bits masked to 0).
  alignas(64) static const uint16_t kIdx[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1,
                                                0, 2, 0, 2, 0, 2, 0, 2, 0, 3, 0, 3, 0, 3, 0, 3};
  const __m512i sidx = _mm512_load_si512(kIdx);
  const int64_t qs = qa.q_stride(), ds = qa.dm_stride();
  const int8_t* q0 = qa.q + t0 * qs;
  const float* d0 = qa.d + t0 * ds;
  const float* mm0 = qa.m + t0 * ds;
  __m512 acc[T];
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  auto step = [&](__m512i wv, __m128i s4, int64_t g) {
    __m512i lo = _mm512_and_si512(wv, m4);
    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m4);
    __m512 ws =
        _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, sidx, _mm512_castsi128_si512(s4)));
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const int8_t* q = q0 + t * qs + g * 32;
      __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_load_si512(q));
      i = _mm512_dpbusd_epi32(i, hi, _mm512_load_si512(q + 64));
      __m512 f = _mm512_fmsub_ps(_mm512_load_ps(d0 + t * ds + g * 4), _mm512_cvtepi32_ps(i),
                                 _mm512_load_ps(mm0 + t * ds + g * 4));
      acc[t] = _mm512_fmadd_ps(ws, f, acc[t]);
    }
  };
  int64_t g = 0;
  for (; g + 4 <= nb; g += 4) {
    _mm_prefetch(reinterpret_cast<const char*>(wr + kInt4PrefetchBytes + g * 16), _MM_HINT_T0);
    step(_mm512_loadu_si512(wr + g * 16), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sr + g)), g);
  }
  if (g < nb) {  // 1-3 blocks left: masked loads (the activations are zero-padded)
    int rem = int(nb - g);
    __mmask64 wk = (uint64_t(1) << (rem * 16)) - 1;
    step(_mm512_maskz_loadu_epi8(wk, wr + g * 16), _mm_maskz_loadu_epi16(__mmask8((1u << rem) - 1), sr + g),
         g);
  }
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) y[t * ldy] = _mm512_reduce_add_ps(acc[t]) + (add ? y[t * ldy] : 0.0f);
}

// Two weight rows against T tokens: each activation load (q even/odd, d, m) feeds both rows,
// halving the loads per multiply-add of int4_row (prefill is bound by them, not by vpdpbusd).
template <int T>
inline void int4_rows2(const uint8_t* wr0, const uint8_t* wr1, const uint16_t* sr0, const uint16_t* sr1,
                       int64_t nb, const QuantizedActs& qa, int64_t t0, float* y, int64_t ldy, bool add) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  alignas(64) static const uint16_t kIdx[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1,
                                                0, 2, 0, 2, 0, 2, 0, 2, 0, 3, 0, 3, 0, 3, 0, 3};
  const __m512i sidx = _mm512_load_si512(kIdx);
  const int64_t qs = qa.q_stride(), ds = qa.dm_stride();
  const int8_t* q0 = qa.q + t0 * qs;
  const float* d0 = qa.d + t0 * ds;
  const float* mm0 = qa.m + t0 * ds;
  __m512 acc0[T], acc1[T];
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) acc0[t] = acc1[t] = _mm512_setzero_ps();
  auto step = [&](__m512i w0, __m512i w1, __m128i s0, __m128i s1, int64_t g) {
    __m512i lo0 = _mm512_and_si512(w0, m4), hi0 = _mm512_and_si512(_mm512_srli_epi16(w0, 4), m4);
    __m512i lo1 = _mm512_and_si512(w1, m4), hi1 = _mm512_and_si512(_mm512_srli_epi16(w1, 4), m4);
    __m512 ws0 =
        _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, sidx, _mm512_castsi128_si512(s0)));
    __m512 ws1 =
        _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, sidx, _mm512_castsi128_si512(s1)));
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const int8_t* q = q0 + t * qs + g * 32;
      __m512i xe = _mm512_load_si512(q), xo = _mm512_load_si512(q + 64);
      __m512 d = _mm512_load_ps(d0 + t * ds + g * 4), m = _mm512_load_ps(mm0 + t * ds + g * 4);
      __m512i i0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo0, xe), hi0, xo);
      __m512i i1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo1, xe), hi1, xo);
      acc0[t] = _mm512_fmadd_ps(ws0, _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(i0), m), acc0[t]);
      acc1[t] = _mm512_fmadd_ps(ws1, _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(i1), m), acc1[t]);
    }
  };
  // Two lines per step, kInt4PrefetchBytes ahead: in decode the pair is two whole adjacent
  // rows (wr1 = wr0 + nb 16), one contiguous stream with the pairs after it.
  int64_t g = 0;
  for (; g + 4 <= nb; g += 4) {
    _mm_prefetch(reinterpret_cast<const char*>(wr0 + kInt4PrefetchBytes + g * 32), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(wr0 + kInt4PrefetchBytes + g * 32 + 64), _MM_HINT_T0);
    step(_mm512_loadu_si512(wr0 + g * 16), _mm512_loadu_si512(wr1 + g * 16),
         _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sr0 + g)),
         _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sr1 + g)), g);
  }
  if (g < nb) {
    int rem = int(nb - g);
    __mmask64 wk = (uint64_t(1) << (rem * 16)) - 1;
    __mmask8 sk = __mmask8((1u << rem) - 1);
    step(_mm512_maskz_loadu_epi8(wk, wr0 + g * 16), _mm512_maskz_loadu_epi8(wk, wr1 + g * 16),
         _mm_maskz_loadu_epi16(sk, sr0 + g), _mm_maskz_loadu_epi16(sk, sr1 + g), g);
  }
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    y[t * ldy] = _mm512_reduce_add_ps(acc0[t]) + (add ? y[t * ldy] : 0.0f);
    y[t * ldy + 1] = _mm512_reduce_add_ps(acc1[t]) + (add ? y[t * ldy + 1] : 0.0f);
  }
}

using Int4Rows2Fn = void (*)(const uint8_t*, const uint8_t*, const uint16_t*, const uint16_t*, int64_t,
                             const QuantizedActs&, int64_t, float*, int64_t, bool);
constexpr Int4Rows2Fn kInt4Rows2[5] = {nullptr, int4_rows2<1>, int4_rows2<2>, int4_rows2<3>, int4_rows2<4>};

using Int4RowFn = void (*)(const uint8_t*, const uint16_t*, int64_t, const QuantizedActs&, int64_t, float*,
                           int64_t, bool);
constexpr int kInt4MaxT = 8;
constexpr Int4RowFn kInt4Rows[kInt4MaxT + 1] = {nullptr,     int4_row<1>, int4_row<2>,
                                                int4_row<3>, int4_row<4>, int4_row<5>,
                                                int4_row<6>, int4_row<7>, int4_row<8>};

void linear_int4_outer(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                       int64_t ldy);
// From this many tokens the outer-product tiles below the width traits run the prefill
// (kernels_bench int4_gemm 1024x2048, one core: at 16 tokens both 180-216 GFLOP/s).
constexpr int64_t kInt4OuterMinTokens = 16;

void linear_int4_avx512(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                        int64_t ldy) {
  if (qa.n >= kInt4OuterMinTokens) return linear_int4_outer(w, qa, r0, r1, y, ldy);
  const int64_t nb = w.cols / 32, bpg = w.group_size / 32;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  thread_local ScratchBuffer sbuf;  // per-block scales when the group spans several blocks
  uint16_t* sexp = bpg == 1 ? nullptr : static_cast<uint16_t*>(sbuf.get(size_t(2 * (nb + 4)) * 2));
  // Row r's scales of blocks [b0, b0 + nbb), one per block.
  auto scales = [&](int64_t r, int slot, int64_t b0, int64_t nbb) {
    const uint16_t* sr = w.scale_bf16 + r * w.scale_cols;
    if (!sexp) return sr + b0;
    uint16_t* dst = sexp + slot * (nb + 4);
    for (int64_t b = 0; b < nbb; ++b) dst[b] = sr[(b0 + b) / bpg];
    return const_cast<const uint16_t*>(dst);
  };
  const int64_t row_bytes = w.cols / 2;
  // Rows in chunks that stay in L2 while every token tile passes over them (prefill); for
  // n <= 4 this is a plain stream over the rows, two at a time. Prefill tiles also split the
  // columns into blocks of kColBlocks (1024 values): a tile of 8 tokens then reads its
  // activations (8 x 1 KiB of int8 + scales) from L1 for every row of the chunk. Without it a
  // Kimi-width row (7168 values) needed 8 x 7.5 KiB, from L2: the expert prefill of
  // kimi-k2.5-72 ran at 59 GFLOP/s on one core, a quarter of the kernel's 2048-wide rate.
  constexpr int64_t kRowChunk = 32;
  constexpr int64_t kColBlocks = 32;  // a multiple of 4 (the activations' block groups)
  const int64_t col_step = qa.n > 4 ? kColBlocks : nb;
  for (int64_t rc = r0; rc < r1; rc += kRowChunk) {
    int64_t rc1 = rc + kRowChunk < r1 ? rc + kRowChunk : r1;
    for (int64_t b0 = 0; b0 < nb; b0 += col_step) {
      const int64_t nbb = nb - b0 < col_step ? nb - b0 : col_step;
      const bool add = b0 > 0;
      QuantizedActs qb = qa;  // the activations from block b0 on (same strides)
      qb.q += b0 * 32;
      qb.d += b0 * 4;
      qb.m += b0 * 4;
      const uint8_t* wb = base + b0 * 16;
      for (int64_t t0 = 0; t0 < qa.n; t0 += kInt4MaxT) {
        int64_t nt = qa.n - t0 < kInt4MaxT ? qa.n - t0 : kInt4MaxT;
        int64_t r = rc;
        // Pairs of rows for decode-sized tiles (fewer activation loads per weight byte); wide
        // tiles run one row at a time (two rows x 8 tokens would spill registers).
        if (nt <= 4)
          for (; r + 2 <= rc1; r += 2)
            kInt4Rows2[nt](wb + r * row_bytes, wb + (r + 1) * row_bytes, scales(r, 0, b0, nbb),
                           scales(r + 1, 1, b0, nbb), nbb, qb, t0, y + t0 * ldy + r, ldy, add);
        for (; r < rc1; ++r)
          kInt4Rows[nt](wb + r * row_bytes, scales(r, 0, b0, nbb), nbb, qb, t0, y + t0 * ldy + r, ldy, add);
      }
    }
  }
}

// ---------------------------------------------------------------- the width traits

// The dense kernels and f32 helpers live once in kernels/simd_dense.h; this is AVX-512's half
// of them. Partial loads and stores (column tails) are masked.
struct Avx512 {
  using F = __m512;
  using I = __m512i;
  static constexpr int kW = 16;
  // 32 zmm registers: 4 x 4 accumulators + 4 weight vectors + 1 activation vector.
  static constexpr int kMaxTokens = 4;
  // Outer-product prefill tiles: 2 x 12 accumulators + 2 weight vectors + 1 broadcast.
  static constexpr int kOuterTokens = 12;
  // bf16 x 512 tokens, one core: width 7168 124-155 -> 170-189 GFLOP/s; 2048: 155-185 either way.
  static constexpr int64_t kOuterMinCols = 2049;

  // d[j * ldd + i] = s[i * lds + j] for a 16 x 16 block (kernels/avx512_transpose.h).
  static void transpose(const float* s, int64_t lds, float* d, int64_t ldd) {
    __m512i r[16], c[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_castps_si512(_mm512_loadu_ps(s + i * lds));
    transpose16(r, c);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) _mm512_storeu_ps(d + j * ldd, _mm512_castsi512_ps(c[j]));
  }

  static __mmask16 first(int n) { return __mmask16((1u << n) - 1); }
  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F loadu(const float* p) { return _mm512_loadu_ps(p); }
  static F loadu(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void storeu(float* p, F v) { _mm512_storeu_ps(p, v); }
  static void storeu(float* p, F v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static float reduce_add(F v) { return _mm512_reduce_add_ps(v); }
  static F round_nearest(F v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static F scale_pow2(F p, F n) { return _mm512_scalef_ps(p, n); }
  static F bf16_bits(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static F widen_bf16(const uint16_t* p) {
    return bf16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F widen_bf16(const uint16_t* p, int n) { return bf16_bits(_mm256_maskz_loadu_epi16(first(n), p)); }
  static F widen_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static F widen_f16(const uint16_t* p, int n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first(n), p));
  }
  static I widen_u8(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static I widen_u8(const uint8_t* p, int n) {
    return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(first(n), p));
  }
  static I iand(I v, int32_t m) { return _mm512_and_si512(v, _mm512_set1_epi32(m)); }
  template <int k>
  static I shl(I v) {
    return _mm512_slli_epi32(v, k);
  }
  static I ior(I a, I b) { return _mm512_or_si512(a, b); }
  static F as_float(I v) { return _mm512_castsi512_ps(v); }
  static F nan_where_eq(F f, I v, int32_t c) {
    return _mm512_mask_mov_ps(f, _mm512_cmpeq_epi32_mask(v, _mm512_set1_epi32(c)), _mm512_set1_ps(NAN));
  }
};

void linear_dense_avx512(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
                         float* y, int64_t ldy) {
  simd::linear_dense<Avx512>(w, x, ldx, n, r0, r1, y, ldy);
}

float dot_avx512(const float* a, const float* b, int64_t n) { return simd::dot<Avx512>(a, b, n); }
void axpy_avx512(float a, const float* x, float* y, int64_t n) { simd::axpy<Avx512>(a, x, y, n); }
inline __m512 exp_avx512(__m512 x) { return simd::exp<Avx512>(x); }
void silu_mul_avx512(const float* gate, const float* up, int64_t n, float* out) {
  simd::silu_mul<Avx512>(gate, up, n, out);
}

// C = A B: 4 rows x 4 vectors (64 columns) of accumulators; each k step broadcasts 4 A values
// against 4 B vectors (16 FMAs per 8 loads). Column tails use masked vectors, row tails R < 4.
// B is f32 or bf16 (widened in registers): Elem picks the row loader.
template <class Elem>
inline __m512 row_load(const Elem* p) {
  if constexpr (std::is_same_v<Elem, float>) return Avx512::loadu(p);
  else return Avx512::widen_bf16(p);
}
template <class Elem>
inline __m512 row_load(const Elem* p, __mmask16 k) {
  if constexpr (std::is_same_v<Elem, float>) return _mm512_maskz_loadu_ps(k, p);
  else return Avx512::bf16_bits(_mm256_maskz_loadu_epi16(k, p));
}

template <int R, int V, class Elem>
inline void gemm_tile(const float* a, int64_t lda, const Elem* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t k, __mmask16 last, bool add) {
  __m512 acc[R][V];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v)
      acc[i][v] = !add           ? _mm512_setzero_ps()
                  : v == V - 1 ? _mm512_maskz_loadu_ps(last, c + i * ldc + 16 * v)
                               : _mm512_loadu_ps(c + i * ldc + 16 * v);
  for (int64_t p = 0; p < k; ++p) {
    __m512 bv[V];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v)
      bv[v] = v == V - 1 ? row_load(b + p * ldb + 16 * v, last) : row_load(b + p * ldb + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i * lda + p]);
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      if (v == V - 1) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, last, acc[i][v]);
      else _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
    }
}

template <int R, class Elem>
inline void gemm_rows(const float* a, int64_t lda, const Elem* b, int64_t ldb, float* c, int64_t ldc,
                      int64_t n, int64_t k, bool add) {
  int64_t j = 0;
  for (; j + 64 <= n; j += 64) gemm_tile<R, 4>(a, lda, b + j, ldb, c + j, ldc, k, 0xFFFF, add);
  const int64_t rest = n - j;
  if (rest <= 0) return;
  const int v = int((rest + 15) / 16);
  const __mmask16 last = __mmask16(rest % 16 == 0 ? 0xFFFF : (1u << (rest % 16)) - 1);
  switch (v) {
    case 1: gemm_tile<R, 1>(a, lda, b + j, ldb, c + j, ldc, k, last, add); break;
    case 2: gemm_tile<R, 2>(a, lda, b + j, ldb, c + j, ldc, k, last, add); break;
    case 3: gemm_tile<R, 3>(a, lda, b + j, ldb, c + j, ldc, k, last, add); break;
    default: gemm_tile<R, 4>(a, lda, b + j, ldb, c + j, ldc, k, last, add); break;
  }
}

// fn.template operator()<R>(i) over [0, count) in blocks of R = 4 from i = 0, then one block of
// the 1-3 left: the register-tile kernels' row (and column) tails.
template <class F>
inline void by_blocks_of_4(int64_t count, F&& fn) {
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) fn.template operator()<4>(i);
  switch (count - i) {
    case 3: fn.template operator()<3>(i); break;
    case 2: fn.template operator()<2>(i); break;
    case 1: fn.template operator()<1>(i); break;
    default: break;
  }
}

using simd::kGemmBBytes;

// B in chunks of k rows (~kGemmBBytes); the accumulators of a chunk after the first start from
// C, which holds them exactly: the sums are those of one pass over k.
// With many rows of A (f32 B: blocked prefill's P [256, ctx] x cache), B's 32-column panels go
// through simd::outer_tile as they lie (2 x 12 accumulators: 2 loads and 12 broadcasts per 24
// FMAs; gemm_tile's 4 x 4 needs 8 per 16); the last < 32 columns stay on gemm_tile.
constexpr int64_t kGemmOuterRows = 32;

template <class Elem>
void gemm_nn_any(const float* a, int64_t lda, const Elem* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
                 int64_t n, int64_t k) {
  const int64_t kc = std::max<int64_t>(16, kGemmBBytes / (std::max<int64_t>(n, 1) * int64_t(sizeof(Elem))));
  for (int64_t k0 = 0; k0 == 0 || k0 < k; k0 += kc) {
    const int64_t kk = std::min(kc, k - k0);
    int64_t j0 = 0;  // columns [0, j0) done by the outer tiles
    if constexpr (std::is_same_v<Elem, float>)
      if (m >= kGemmOuterRows && kk > 0 && n >= 32) {
        j0 = n / 32 * 32;
        simd::outer_gemm_nn_panels<Avx512>(a + k0, lda, b + k0 * ldb, ldb, c, ldc, m, j0, kk, k0 > 0);
      }
    if (j0 < n)
      by_blocks_of_4(m, [&]<int R>(int64_t i) {
        gemm_rows<R>(a + i * lda + k0, lda, b + k0 * ldb + j0, ldb, c + i * ldc + j0, ldc, n - j0, kk, k0 > 0);
      });
  }
}

void gemm_nn_avx512(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                    int64_t m, int64_t n, int64_t k) {
  gemm_nn_any(a, lda, b, ldb, c, ldc, m, n, k);
}

void gemm_nn_bf16_avx512(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                         int64_t m, int64_t n, int64_t k) {
  gemm_nn_any(a, lda, b, ldb, c, ldc, m, n, k);
}

// softmax_generic with vectors: max, then exp (exp_avx512) and sum in one pass, then scale.
SoftmaxStats softmax_avx512(float* x, int64_t n) {
  if (n <= 0) return {-INFINITY, 0.0f};
  const int64_t n16 = n / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (n % 16)) - 1);
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  __m512 mv = ninf;
  for (int64_t i = 0; i < n16; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(x + i));
  if (tail) mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(ninf, tail, x + n16));
  const float mx = _mm512_reduce_max_ps(mv);
  const __m512 m = _mm512_set1_ps(mx);
  __m512 sv = _mm512_setzero_ps();
  for (int64_t i = 0; i < n16; i += 16) {
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
    _mm512_storeu_ps(x + i, e);
    sv = _mm512_add_ps(sv, e);
  }
  if (tail) {
    const __m512 e =
        _mm512_maskz_mov_ps(tail, exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + n16), m)));
    _mm512_mask_storeu_ps(x + n16, tail, e);
    sv = _mm512_add_ps(sv, e);
  }
  const float sum = _mm512_reduce_add_ps(sv);
  const __m512 inv = _mm512_set1_ps(1.0f / sum);
  for (int64_t i = 0; i < n16; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
  if (tail) _mm512_mask_storeu_ps(x + n16, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + n16), inv));
  return {mx, sum};
}

// C[i][j] = A_i . B_j: blocks of R rows of A x S rows of B, R*S accumulators over k (each A
// and B vector load feeds S and R FMAs), then one horizontal sum per output. Every B line also
// prefetches the same line of the next S rows (as simd::dense_tile does): decode's scores read
// the latent cache (B) from memory, 4 rows per block, and the next block's rows are then in
// flight (kernels_bench decode_attention/ctx8192/cold, scores alone, 2 threads: 1.23-1.34 ->
// 0.96-1.00 ms per layer; two blocks ahead 0.98-1.09). Past B's end a prefetch does nothing.
template <int R, int S>
inline void gemm_nt_block(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                          int64_t k) {
  __m512 acc[R][S];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < S; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t k16 = k / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (k % 16)) - 1);
  auto step = [&](int64_t p, __mmask16 m) {
    __m512 bv[S];
#pragma GCC unroll 16
    for (int j = 0; j < S; ++j)
      _mm_prefetch(reinterpret_cast<const char*>(b + (S + j) * ldb + p), _MM_HINT_T0);
#pragma GCC unroll 16
    for (int j = 0; j < S; ++j) bv[j] = _mm512_maskz_loadu_ps(m, b + j * ldb + p);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_maskz_loadu_ps(m, a + i * lda + p);
#pragma GCC unroll 16
      for (int j = 0; j < S; ++j) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
  };
  for (int64_t p = 0; p < k16; p += 16) step(p, 0xFFFF);
  if (tail) step(k16, tail);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < S; ++j) c[i * ldc + j] = _mm512_reduce_add_ps(acc[i][j]);
}

template <int R>
inline void gemm_nt_rows(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                         int64_t n, int64_t k) {
  by_blocks_of_4(n, [&]<int S>(int64_t j) { gemm_nt_block<R, S>(a, lda, b + j * ldb, ldb, c + j, ldc, k); });
}

// Many rows of A (blocked prefill: 256 query x head rows against the cache): B is a weight and A
// its tokens, and simd::outer_run's outer-product tiles run it (each output sums over k in
// order). Otherwise B's rows in chunks of ~kGemmBBytes, every block of rows of A over each.
void gemm_nt_avx512(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                    int64_t m, int64_t n, int64_t k) {
  if (m >= 32 && k >= 16) return simd::outer_run<Avx512>(simd::LoadF32<Avx512>{b, ldb}, k, a, lda, m, 0, n, c, ldc);
  const int64_t nc = std::max<int64_t>(4, kGemmBBytes / (std::max<int64_t>(k, 1) * 4) / 4 * 4);
  for (int64_t j0 = 0; j0 < n; j0 += nc) {
    const int64_t nn = std::min(nc, n - j0);
    by_blocks_of_4(m, [&]<int R>(int64_t i) {
      gemm_nt_rows<R>(a + i * lda, lda, b + j0 * ldb, ldb, c + i * ldc + j0, ldc, nn, k);
    });
  }
}

// y[i] = A_i . x, four rows per pass (each x vector load feeds four FMAs).
void gemv_n_avx512(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y) {
  const __mmask16 tail = __mmask16((1u << (k % 16)) - 1);
  const int64_t k16 = k / 16 * 16;
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const float* r = a + i * lda;
    for (int64_t j = 0; j < k16; j += 16) {
      const __m512 xv = _mm512_loadu_ps(x + j);
      s0 = _mm512_fmadd_ps(_mm512_loadu_ps(r + j), xv, s0);
      s1 = _mm512_fmadd_ps(_mm512_loadu_ps(r + lda + j), xv, s1);
      s2 = _mm512_fmadd_ps(_mm512_loadu_ps(r + 2 * lda + j), xv, s2);
      s3 = _mm512_fmadd_ps(_mm512_loadu_ps(r + 3 * lda + j), xv, s3);
    }
    if (tail) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, x + k16);
      s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r + k16), xv, s0);
      s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r + lda + k16), xv, s1);
      s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r + 2 * lda + k16), xv, s2);
      s3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, r + 3 * lda + k16), xv, s3);
    }
    y[i] = _mm512_reduce_add_ps(s0);
    y[i + 1] = _mm512_reduce_add_ps(s1);
    y[i + 2] = _mm512_reduce_add_ps(s2);
    y[i + 3] = _mm512_reduce_add_ps(s3);
  }
  for (; i < m; ++i) y[i] = dot_avx512(a + i * lda, x, k);
}

// y = x^T A: the one-row product (x is a 1 x m matrix), 64 columns of A at a time in registers.
void gemv_t_avx512(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y) {
  gemm_nn_avx512(x, m, a, lda, y, k, 1, k, m);
}

// ---------------------------------------------------------------- int4 prefill: outer-product tiles

// int4_row<8> spends per 128 weights and token four activation loads (even and odd bytes, d, m)
// and five vector operations (two vpdpbusd, the f32 conversion, offset and scale), for 128
// multiply-adds. Here the weights of 32 rows are repacked once per 32-block column chunk into
// dwords of four unsigned nibble-bytes, transposed so that one zmm holds the same four columns
// of 16 rows ([group][32 quads][32 rows]): a token's four activation bytes, broadcast, then feed
// 64 multiply-adds per vpdpbusd, and the f32 work (d acc - 4 m, times the row's scale) is once
// per block of 32 columns, token and 16 rows. The quads follow the activations' storage
// (quantize_acts: per group of 4 blocks, 64 even-index bytes then 64 odd-index ones), so a
// weight quad is the low (even) or high (odd) nibbles of four consecutive weight bytes: same
// products, summed per block in another order than int4_row's.
constexpr int kInt4OuterTokens = 6;  // 2 x 6 int32 + 2 x 6 f32 accumulators

template <int NT>
void int4_outer_tile(const uint32_t* panel, const float* ws, int64_t nblk, const QuantizedActs& qa, int64_t t0,
                     int64_t b0, float* y, int64_t ldy, int mr, bool add) {
  const int64_t qs = qa.q_stride(), ds = qa.dm_stride();
  const int m1 = mr - 16;
  const __mmask16 k0 = mr >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << mr) - 1),
                  k1 = m1 >= 16 ? __mmask16(0xFFFF) : m1 > 0 ? __mmask16((1u << m1) - 1) : __mmask16(0);
  __m512 f0[NT], f1[NT];
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    f0[t] = add ? _mm512_maskz_loadu_ps(k0, y + t * ldy) : _mm512_setzero_ps();
    f1[t] = add ? _mm512_maskz_loadu_ps(k1, y + t * ldy + 16) : _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < nblk; ++b) {
    const int64_t bb = b0 + b, i = bb % 4;
    const uint32_t* pg = panel + (b / 4) * 32 * 32;  // this block's group (b0 % 4 == 0)
    const int8_t* xg = qa.q + t0 * qs + (bb / 4) * 128;
    __m512i a0[NT], a1[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) a0[t] = a1[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      const int64_t quad = (p < 4 ? 0 : 16) + i * 4 + p % 4;   // panel quad (lo nibbles, then hi)
      const int64_t off = (p < 4 ? 0 : 64) + (i * 4 + p % 4) * 4;  // activation bytes (even, odd)
      const __m512i w0 = _mm512_load_si512(pg + quad * 32), w1 = _mm512_load_si512(pg + quad * 32 + 16);
#pragma GCC unroll 8
      for (int t = 0; t < NT; ++t) {
        int32_t xq;
        std::memcpy(&xq, xg + t * qs + off, 4);
        const __m512i xb = _mm512_set1_epi32(xq);
        a0[t] = _mm512_dpbusd_epi32(a0[t], w0, xb);
        a1[t] = _mm512_dpbusd_epi32(a1[t], w1, xb);
      }
    }
    const __m512 s0 = _mm512_load_ps(ws + b * 32), s1 = _mm512_load_ps(ws + b * 32 + 16);
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) {
      const float* dt = qa.d + (t0 + t) * ds + bb * 4;
      const float* mt = qa.m + (t0 + t) * ds + bb * 4;
      const __m512 d = _mm512_set1_ps(dt[0]), m4 = _mm512_set1_ps(4.0f * mt[0]);
      f0[t] = _mm512_fmadd_ps(s0, _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(a0[t]), m4), f0[t]);
      f1[t] = _mm512_fmadd_ps(s1, _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(a1[t]), m4), f1[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < NT; ++t) {
    _mm512_mask_storeu_ps(y + t * ldy, k0, f0[t]);
    if (k1) _mm512_mask_storeu_ps(y + t * ldy + 16, k1, f1[t]);
  }
}

using Int4OuterTileFn = void (*)(const uint32_t*, const float*, int64_t, const QuantizedActs&, int64_t, int64_t,
                                 float*, int64_t, int, bool);
constexpr Int4OuterTileFn kInt4OuterTiles[kInt4OuterTokens] = {int4_outer_tile<1>, int4_outer_tile<2>,
                                                               int4_outer_tile<3>, int4_outer_tile<4>,
                                                               int4_outer_tile<5>, int4_outer_tile<6>};

void linear_int4_outer(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                       int64_t ldy) {
  constexpr int64_t kChunk = 32;  // blocks per panel (8 groups: 32 KiB of quads, 4 KiB of scales)
  const int64_t nb = w.cols / 32, bpg = w.group_size / 32, row_bytes = w.cols / 2;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  alignas(64) uint32_t panel[kChunk / 4 * 32 * 32];
  alignas(64) float ws[kChunk * 32], srow[32 * kChunk];
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t rb = r0; rb < r1; rb += 32) {
    const int mr = int(std::min<int64_t>(32, r1 - rb));
    for (int64_t b0 = 0; b0 < nb; b0 += kChunk) {
      const int64_t nblk = std::min(kChunk, nb - b0), ngroups = (nblk + 3) / 4;
      // Each 16-row half's 64-byte group transposed as raw bytes (dword j = bytes 4j..4j+3 of
      // the 16 rows), then split into low and high nibbles: the mask and shift act on each
      // byte, so they commute with the transpose, which runs once instead of once per half.
      for (int h = 0; h < 2; ++h)
        for (int64_t gq = 0; gq < ngroups; ++gq) {
          const int64_t bytes = std::min<int64_t>(4, nblk - gq * 4) * 16;
          const __mmask64 km = bytes == 64 ? ~__mmask64(0) : (__mmask64(1) << bytes) - 1;
          __m512i v[16], c[16];
#pragma GCC unroll 16
          for (int i = 0; i < 16; ++i) {
            const int r = h * 16 + i;
            v[i] = r < mr ? _mm512_maskz_loadu_epi8(km, base + (rb + r) * row_bytes + (b0 + gq * 4) * 16)
                          : _mm512_setzero_si512();
          }
          transpose16(v, c);
          uint32_t* pg = panel + gq * 32 * 32 + h * 16;
#pragma GCC unroll 16
          for (int j = 0; j < 16; ++j) {
            _mm512_store_si512(pg + j * 32, _mm512_and_si512(c[j], m4));
            _mm512_store_si512(pg + (16 + j) * 32, _mm512_and_si512(_mm512_srli_epi16(c[j], 4), m4));
          }
        }
      // Scales: each row's run of this chunk's blocks (contiguous per row; a scale repeats over
      // the bpg blocks of its group) widened into srow [32 rows][32 blocks], then transposed into
      // ws [block][32 rows] in 16 x 16 blocks. (Gathered one by one with a division each, they
      // took half of this function's time: kernels_bench int4_gemm/2048x7168/n64, perf.)
      for (int r = 0; r < 32; ++r) {
        float* dst = srow + r * kChunk;
        if (r >= mr) {
          std::fill(dst, dst + kChunk, 0.0f);
          continue;
        }
        const uint16_t* sr = w.scale_bf16 + (rb + r) * w.scale_cols;
        int64_t g = b0 / bpg, in_g = b0 % bpg;
        for (int64_t b = 0; b < nblk; ++b) {
          dst[b] = bf16_to_f32(sr[g]);
          if (++in_g == bpg) in_g = 0, ++g;
        }
        std::fill(dst + nblk, dst + (nblk + 15) / 16 * 16, 0.0f);  // the transposes read whole 16s
      }
      for (int64_t bq = 0; bq < nblk; bq += 16)
        for (int h = 0; h < 2; ++h) Avx512::transpose(srow + h * 16 * kChunk + bq, kChunk, ws + bq * 32 + h * 16, 32);
      for (int64_t t0 = 0; t0 < qa.n; t0 += kInt4OuterTokens) {
        const int nt = int(std::min<int64_t>(kInt4OuterTokens, qa.n - t0));
        kInt4OuterTiles[nt - 1](panel, ws, nblk, qa, t0, b0, y + t0 * ldy + rb, ldy, mr, b0 > 0);
      }
    }
  }
}

}  // namespace avx512

using namespace avx512;

constinit const KernelTable kAvx512Kernels = {
    .name = "avx512",
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
};

}  // namespace sickle
