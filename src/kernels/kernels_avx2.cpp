// AVX2 + FMA + F16C kernel table. Compiled with -mavx2 -mfma -mf16c (CMake: *_avx2.cpp); only
// called when kernel_table() found the features at run time.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "base/numeric.h"
#include "kernels/dispatch.h"
#include "kernels/generic.h"
#include "kernels/simd_dense.h"
#include "runtime/scratch.h"

namespace sickle {

namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---------------------------------------------------------------- int4 x int8 (maddubs)

// One weight row against T tokens, 2 blocks (64 values, 32 weight bytes) per step. maddubs
// multiplies the unsigned nibble (q + 8, <= 15) by the signed int8 activation (|x| <= 127):
// pair sums stay <= 3810, far from int16 saturation. The -8 offset is removed through
// m = 8 d sum(q) (QuantizedActs). Lane i of the int32 result belongs to block i / 4.
template <int T>
inline void int4_row(const uint8_t* wr, const uint16_t* sr, int64_t nb, const QuantizedActs& qa, int64_t t0,
                     float* y, int64_t ldy) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t qs = qa.q_stride(), ds = qa.dm_stride();
  const int8_t* q0 = qa.q + t0 * qs;
  const float* d0 = qa.d + t0 * ds;
  const float* mm0 = qa.m + t0 * ds;
  __m256 acc[T];
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  auto step = [&](__m256i wv, __m256 ws, int64_t b) {
    __m256i lo = _mm256_and_si256(wv, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m4);
    const int64_t qoff = (b / 4) * 128 + (b % 4) * 16;
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const int8_t* q = q0 + t * qs + qoff;
      __m256i pe = _mm256_madd_epi16(
          _mm256_maddubs_epi16(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(q))), ones);
      __m256i po = _mm256_madd_epi16(
          _mm256_maddubs_epi16(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 64))), ones);
      __m256 f =
          _mm256_fmsub_ps(_mm256_load_ps(d0 + t * ds + b * 4), _mm256_cvtepi32_ps(_mm256_add_epi32(pe, po)),
                          _mm256_load_ps(mm0 + t * ds + b * 4));
      acc[t] = _mm256_fmadd_ps(ws, f, acc[t]);
    }
  };
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    // Two rows ahead (rows are contiguous): keeps enough misses in flight when decode streams
    // cold rows.
    if ((b & 3) == 0) _mm_prefetch(reinterpret_cast<const char*>(wr + 2 * nb * 16 + b * 16), _MM_HINT_T0);
    __m256 ws = _mm256_set_m128(_mm_set1_ps(bf16_to_f32(sr[b + 1])), _mm_set1_ps(bf16_to_f32(sr[b])));
    step(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + b * 16)), ws, b);
  }
  if (b < nb) {  // one block left; the activations are zero-padded
    __m256 ws = _mm256_set_m128(_mm_setzero_ps(), _mm_set1_ps(bf16_to_f32(sr[b])));
    step(_mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + b * 16))), ws, b);
  }
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) y[t * ldy] = hsum(acc[t]);
}

using Int4RowFn = void (*)(const uint8_t*, const uint16_t*, int64_t, const QuantizedActs&, int64_t, float*,
                           int64_t);
constexpr int kInt4MaxT = 4;
constexpr Int4RowFn kInt4Rows[kInt4MaxT + 1] = {nullptr, int4_row<1>, int4_row<2>, int4_row<3>, int4_row<4>};

void linear_int4_avx2(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                      int64_t ldy) {
  const int64_t nb = w.cols / 32, bpg = w.group_size / 32;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  thread_local ScratchBuffer sbuf;
  uint16_t* sexp = bpg == 1 ? nullptr : static_cast<uint16_t*>(sbuf.get(size_t(nb + 4) * 2));
  constexpr int64_t kRowChunk = 32;
  for (int64_t rc = r0; rc < r1; rc += kRowChunk) {
    int64_t rc1 = rc + kRowChunk < r1 ? rc + kRowChunk : r1;
    for (int64_t t0 = 0; t0 < qa.n; t0 += kInt4MaxT) {
      int64_t nt = qa.n - t0 < kInt4MaxT ? qa.n - t0 : kInt4MaxT;
      Int4RowFn fn = kInt4Rows[nt];
      for (int64_t r = rc; r < rc1; ++r) {
        const uint16_t* sr = w.scale_bf16 + r * w.scale_cols;
        if (sexp) {
          for (int64_t b = 0; b < nb; ++b) sexp[b] = sr[b / bpg];
          sr = sexp;
        }
        fn(base + r * (w.cols / 2), sr, nb, qa, t0, y + t0 * ldy + r, ldy);
      }
    }
  }
}

// ---------------------------------------------------------------- the width traits

// The dense kernels and f32 helpers live once in kernels/simd_dense.h; this is AVX2's half of
// them. Partial loads and stores (column tails) go through a zeroed stack buffer: AVX2 has no
// masked 16- or 8-bit loads.
struct Avx2 {
  using F = __m256;
  using I = __m256i;
  static constexpr int kW = 8;
  // 16 ymm registers: 4 x 2 accumulators + 4 weight vectors + 1 activation vector.
  static constexpr int kMaxTokens = 2;
  // Outer-product prefill tiles: 2 x 6 accumulators + 2 weight vectors + 1 broadcast.
  static constexpr int kOuterTokens = 6;
  // bf16 x 512 tokens, one Zen 5 core: width 2048 84-90 -> 97-103 GFLOP/s, 7168 68-76 -> 93-99.
  static constexpr int64_t kOuterMinCols = 1;

  // d[j * ldd + i] = s[i * lds + j] for an 8 x 8 block: pairs, quads within 128-bit lanes, lanes.
  static void transpose(const float* s, int64_t lds, float* d, int64_t ldd) {
    __m256 r[8], t[8], u[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * lds);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int g = 0; g < 2; ++g) {
      u[0 + 4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
      u[1 + 4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
      u[2 + 4 * g] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
      u[3 + 4 * g] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      _mm256_storeu_ps(d + q * ldd, _mm256_permute2f128_ps(u[q], u[q + 4], 0x20));
      _mm256_storeu_ps(d + (q + 4) * ldd, _mm256_permute2f128_ps(u[q], u[q + 4], 0x31));
    }
  }

  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F loadu(const float* p) { return _mm256_loadu_ps(p); }
  static F loadu(const float* p, int n) {
    alignas(32) float b[kW] = {};
    std::memcpy(b, p, size_t(n) * sizeof(float));
    return _mm256_load_ps(b);
  }
  static void storeu(float* p, F v) { _mm256_storeu_ps(p, v); }
  static void storeu(float* p, F v, int n) {
    alignas(32) float b[kW];
    _mm256_store_ps(b, v);
    std::memcpy(p, b, size_t(n) * sizeof(float));
  }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static float reduce_add(F v) { return hsum(v); }
  static F round_nearest(F v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for n in [-128, 128] in two factors, so the exponent field never leaves 1..254.
  static F scale_pow2(F p, F n) {
    I ni = _mm256_cvtps_epi32(n);
    I h = _mm256_srai_epi32(ni, 1);
    F f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    F f2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
  }
  static F widen_bf16(const uint16_t* p) {
    I v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static F widen_bf16(const uint16_t* p, int n) { return widen_bf16(padded(p, n).data()); }
  static F widen_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static F widen_f16(const uint16_t* p, int n) { return widen_f16(padded(p, n).data()); }
  static I widen_u8(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static I widen_u8(const uint8_t* p, int n) { return widen_u8(padded(p, n).data()); }
  static I iand(I v, int32_t m) { return _mm256_and_si256(v, _mm256_set1_epi32(m)); }
  template <int k>
  static I shl(I v) {
    return _mm256_slli_epi32(v, k);
  }
  static I ior(I a, I b) { return _mm256_or_si256(a, b); }
  static F as_float(I v) { return _mm256_castsi256_ps(v); }
  static F nan_where_eq(F f, I v, int32_t c) {
    return _mm256_blendv_ps(f, _mm256_set1_ps(NAN),
                            _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, _mm256_set1_epi32(c))));
  }

  // The first n of kW elements at p, then zeros.
  template <class E>
  static std::array<E, kW> padded(const E* p, int n) {
    std::array<E, kW> b{};
    std::memcpy(b.data(), p, size_t(n) * sizeof(E));
    return b;
  }
};

void linear_dense_avx2(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
                       float* y, int64_t ldy) {
  simd::linear_dense<Avx2>(w, x, ldx, n, r0, r1, y, ldy);
}

// Attention's products on the outer-product tiles of simd_dense.h (the generic loops ran blocked
// prefill at 2048 positions of `mini` at 18 tok/s, 68% of it in gemm_nt_generic). With at least
// kGemmOuterRows rows of A: C = A B^T is simd::outer_run with B as the weight and A as its
// tokens; C = A B runs the tiles on B's 16-column panels as they lie, B in chunks of k-rows of
// ~256 KiB that stay in L2 while every tile of A passes (a later chunk's accumulators start
// from C, which holds them exactly); the last < 16 columns and thin products stay generic.
constexpr int64_t kGemmOuterRows = 16;

void gemm_nt_avx2(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
                  int64_t n, int64_t k) {
  if (m >= kGemmOuterRows && k >= Avx2::kW)
    return simd::outer_run<Avx2>(simd::LoadF32<Avx2>{b, ldb}, k, a, lda, m, 0, n, c, ldc);
  gemm_nt_generic(a, lda, b, ldb, c, ldc, m, n, k);
}

void gemm_nn_avx2(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
                  int64_t n, int64_t k) {
  constexpr int64_t MR = 2 * Avx2::kW;
  const int64_t n16 = m >= kGemmOuterRows && k > 0 ? n / MR * MR : 0;
  const int64_t kc = std::max<int64_t>(16, simd::kGemmBBytes / (std::max<int64_t>(n, 1) * 4));
  for (int64_t k0 = 0; n16 > 0 && k0 < k; k0 += kc)
    simd::outer_gemm_nn_panels<Avx2>(a + k0, lda, b + k0 * ldb, ldb, c, ldc, m, n16, std::min(kc, k - k0),
                                     k0 > 0);
  if (n16 < n) gemm_nn_generic(a, lda, b + n16, ldb, c + n16, ldc, m, n - n16, k);
}

}  // namespace

constinit const KernelTable kAvx2Kernels = {
    .name = "avx2",
    .quantize_acts = quantize_acts_generic,
    .linear_int4 = linear_int4_avx2,
    .linear_dense = linear_dense_avx2,
    .dot = simd::dot<Avx2>,
    .axpy = simd::axpy<Avx2>,
    .silu_mul = simd::silu_mul<Avx2>,
    .gemm_nn = gemm_nn_avx2,
    .gemm_nt = gemm_nt_avx2,
    .gemv_n = gemv_n_generic,
    .gemv_t = gemv_t_generic,
    .gemm_nn_bf16 = gemm_nn_bf16_generic,
    .softmax = softmax_generic,
};

}  // namespace sickle
