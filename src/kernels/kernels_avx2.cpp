// AVX2 + FMA + F16C kernel table. Compiled with -mavx2 -mfma -mf16c (CMake: *_avx2.cpp); only
// called when kernel_table() found the features at run time.
#include <immintrin.h>

#include <cmath>

#include "base/numeric.h"
#include "kernels/dense_loaders.h"
#include "kernels/dispatch.h"
#include "kernels/generic.h"
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
      __m256i pe = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(q))), ones);
      __m256i po = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(q + 64))), ones);
      __m256 f = _mm256_fmsub_ps(_mm256_load_ps(d0 + t * ds + b * 4), _mm256_cvtepi32_ps(_mm256_add_epi32(pe, po)),
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

using Int4RowFn = void (*)(const uint8_t*, const uint16_t*, int64_t, const QuantizedActs&, int64_t, float*, int64_t);
constexpr int kInt4MaxT = 4;
constexpr Int4RowFn kInt4Rows[kInt4MaxT + 1] = {nullptr, int4_row<1>, int4_row<2>, int4_row<3>, int4_row<4>};

void linear_int4_avx2(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y, int64_t ldy) {
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

// ---------------------------------------------------------------- dense: f32/bf16/f16/fp8

struct LoadF32 {
  const float* p; int64_t ld;
  __m256 load(int64_t r, int64_t c) const { return _mm256_loadu_ps(p + r * ld + c); }
  float at(int64_t r, int64_t c) const { return p[r * ld + c]; }
};
struct LoadBF16 {
  const uint16_t* p; int64_t ld;
  __m256 load(int64_t r, int64_t c) const {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + r * ld + c)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  float at(int64_t r, int64_t c) const { return bf16_to_f32(p[r * ld + c]); }
};
struct LoadF16 {
  const uint16_t* p; int64_t ld;
  __m256 load(int64_t r, int64_t c) const { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + r * ld + c))); }
  float at(int64_t r, int64_t c) const { return f16_to_f32(p[r * ld + c]); }
};
// fp8 e4m3fn -> f32 by bit placement and * 2^120, 0x7f/0xff -> NaN (see kernels_avx512.cpp);
// then * scale_inv.
struct LoadFp8 {
  const uint8_t* p; int64_t ld; const float* scale; int64_t scale_ld, block_rows; int shift;
  float s(int64_t r, int64_t c) const { return scale[(r / block_rows) * scale_ld + (c >> shift)]; }
  __m256 load(int64_t r, int64_t c) const {
    __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + r * ld + c)));
    __m256i low7 = _mm256_and_si256(v, _mm256_set1_epi32(0x7f));
    __m256i mag = _mm256_slli_epi32(low7, 20);
    __m256i sgn = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x80)), 24);
    __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_or_si256(mag, sgn)), _mm256_set1_ps(0x1p120f));
    __m256 is_nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(low7, _mm256_set1_epi32(0x7f)));
    f = _mm256_blendv_ps(f, _mm256_set1_ps(NAN), is_nan);
    return _mm256_mul_ps(f, _mm256_set1_ps(s(r, c)));
  }
  float at(int64_t r, int64_t c) const { return fp8_e4m3_to_f32(p[r * ld + c]) * s(r, c); }
};

template <class L, int R, int T>
void dense_tile(const L& ld, int64_t r, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy) {
  __m256 acc[R][T];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    __m256 wv[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = ld.load(r + i, c);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      __m256 xv = _mm256_loadu_ps(x + j * ldx + c);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t cc = c; cc < cols; ++cc) s += ld.at(r + i, cc) * x[j * ldx + cc];
      y[j * ldy + r + i] = s;
    }
}

template <class L>
void dense_run(const L& ld, int64_t cols, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1, float* y,
               int64_t ldy) {
  using Fn = void (*)(const L&, int64_t, int64_t, const float*, int64_t, float*, int64_t);
  static constexpr Fn kTiles[4][2] = {{dense_tile<L, 1, 1>, dense_tile<L, 1, 2>},
                                      {dense_tile<L, 2, 1>, dense_tile<L, 2, 2>},
                                      {dense_tile<L, 3, 1>, dense_tile<L, 3, 2>},
                                      {dense_tile<L, 4, 1>, dense_tile<L, 4, 2>}};
  const int64_t row_chunk = cols <= 2048 ? 64 : 16;
  for (int64_t rc = r0; rc < r1; rc += row_chunk) {
    int64_t rc1 = rc + row_chunk < r1 ? rc + row_chunk : r1;
    for (int64_t t0 = 0; t0 < n; t0 += 2) {
      int nt = int(n - t0 < 2 ? n - t0 : 2);
      for (int64_t r = rc; r < rc1; r += 4) {
        int nr = int(rc1 - r < 4 ? rc1 - r : 4);
        kTiles[nr - 1][nt - 1](ld, r, cols, x + t0 * ldx, ldx, y + t0 * ldy, ldy);
      }
    }
  }
}

void linear_dense_avx2(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1, float* y,
                       int64_t ldy) {
  switch (w.encoding) {
    case WeightEncoding::kF32:
      return dense_run(LoadF32{static_cast<const float*>(w.data), w.cols}, w.cols, x, ldx, n, r0, r1, y, ldy);
    case WeightEncoding::kBF16:
      return dense_run(LoadBF16{static_cast<const uint16_t*>(w.data), w.cols}, w.cols, x, ldx, n, r0, r1, y, ldy);
    case WeightEncoding::kF16:
      return dense_run(LoadF16{static_cast<const uint16_t*>(w.data), w.cols}, w.cols, x, ldx, n, r0, r1, y, ldy);
    case WeightEncoding::kFp8Block: {
      int shift = fp8_col_shift(w);
      if (shift < 0) break;
      LoadFp8 ld{static_cast<const uint8_t*>(w.data), w.cols, w.scale_f32, w.scale_cols, w.block_rows, shift};
      return dense_run(ld, w.cols, x, ldx, n, r0, r1, y, ldy);
    }
    case WeightEncoding::kInt4Group: break;
  }
  linear_dense_generic(w, x, ldx, n, r0, r1, y, ldy);
}

// ---------------------------------------------------------------- f32 helpers

float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

// exp(x) as Cephes' expf: n = round(x log2 e), r = x - n ln2 (in two parts), a degree-7
// polynomial in r, times 2^n. Inputs clamped to [-88.38, 88.38] (exp(-88.38) underflows the
// silu below to -0, which is what the scalar spec gives too).
inline __m256 exp_avx2(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-88.3762626647949f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n for n in [-128, 128]: split in two factors so the exponent field never leaves 1..254.
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i h = _mm256_srai_epi32(ni, 1);
  __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
  __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}

void silu_mul_avx2(const float* gate, const float* up, int64_t n, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 g = _mm256_loadu_ps(gate + i);
    __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace

constinit const KernelTable kAvx2Kernels = {
    .name = "avx2",
    .quantize_acts = quantize_acts_generic,
    .linear_int4 = linear_int4_avx2,
    .linear_dense = linear_dense_avx2,
    .dot = dot_avx2,
    .axpy = axpy_avx2,
    .silu_mul = silu_mul_avx2,
    .gemm_nn = gemm_nn_generic,
    .gemm_nt = gemm_nt_generic,
    .gemv_n = gemv_n_generic,
    .gemv_t = gemv_t_generic,
    .gemm_nn_bf16 = gemm_nn_bf16_generic,
    .softmax = softmax_generic,
};

}  // namespace sickle
