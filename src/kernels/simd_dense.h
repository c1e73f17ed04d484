// sickle/kernels/simd_dense.h — the dense (f32/bf16/f16/fp8) weight kernels and the f32
// helpers (dot, axpy, silu_mul with a Cephes exp), written once for any SIMD width.
//
// Each ISA file (kernels_avx2.cpp, kernels_avx512.cpp) defines a traits struct V with its
// register types and primitive operations and instantiates these templates under its own -m
// flags: include this header only from such a file. A fix to the fp8 NaN path, the exp clamp or
// a tail lands here once and is tested on every table (kernels/*_test.cpp sweep them all).
//
// V provides, with W = V::kW lanes of f32 (an int32 register I has as many lanes):
//   kW, kMaxTokens                  lanes; token columns per dense tile (the register budget)
//   F zero(), set1(float)
//   F loadu(const float*)           W values;   loadu(p, n): the first n (< W), the rest 0
//   storeu(float*, F)               W values;   storeu(p, v, n): the first n only
//   add sub mul div min max fmadd(a, b, c) = a b + c, fnmadd(a, b, c) = c - a b
//   float reduce_add(F)
//   F round_nearest(F)              to the nearest integer, ties to even
//   F scale_pow2(F p, F n)          p 2^n for integral n in [-128, 128]
//   F widen_bf16(const uint16_t*), widen_f16(const uint16_t*), (p, n) forms as loadu
//   I widen_u8(const uint8_t*)      W bytes zero-extended to int32 lanes; (p, n) form as loadu
//   I iand(I, int32_t), shl<k>(I), ior(I, I), F as_float(I) (bit cast)
//   F nan_where_eq(F f, I v, int32_t c)   f with NaN in the lanes where v == c
//   kOuterTokens, kOuterMinCols     tokens per outer-product tile; the narrowest rows it takes
//   transpose(s, lds, d, ldd)       d[j * ldd + i] = s[i * lds + j] for a W x W block of f32
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <utility>

#include "io/weights.h"
#include "kernels/generic.h"

namespace sickle::simd {

// Column block size of an fp8 weight as a shift, or -1 when it is not a power of two >= 16
// (then the weight goes to the generic kernel).
inline int fp8_col_shift(const WeightView& w) {
  for (int s = 4; s < 31; ++s)
    if ((int64_t(1) << s) == w.block_cols) return s;
  return -1;
}

// ---------------------------------------------------------------- weight loaders

// Each loads W weights of row r from column c (c a multiple of W), widened to f32; the (r, c, n)
// form loads the first n < W of them and zeros.
template <class V>
struct LoadF32 {
  static constexpr int kBytes = 4;  // per weight (for the decode prefetch)
  const float* p;
  int64_t ld;
  const void* addr(int64_t r, int64_t c) const { return p + r * ld + c; }
  typename V::F load(int64_t r, int64_t c) const { return V::loadu(p + r * ld + c); }
  typename V::F load(int64_t r, int64_t c, int n) const { return V::loadu(p + r * ld + c, n); }
};
template <class V>
struct LoadBF16 {
  static constexpr int kBytes = 2;
  const uint16_t* p;
  int64_t ld;
  const void* addr(int64_t r, int64_t c) const { return p + r * ld + c; }
  typename V::F load(int64_t r, int64_t c) const { return V::widen_bf16(p + r * ld + c); }
  typename V::F load(int64_t r, int64_t c, int n) const { return V::widen_bf16(p + r * ld + c, n); }
};
template <class V>
struct LoadF16 {
  static constexpr int kBytes = 2;
  const uint16_t* p;
  int64_t ld;
  const void* addr(int64_t r, int64_t c) const { return p + r * ld + c; }
  typename V::F load(int64_t r, int64_t c) const { return V::widen_f16(p + r * ld + c); }
  typename V::F load(int64_t r, int64_t c, int n) const { return V::widen_f16(p + r * ld + c, n); }
};
// fp8 e4m3fn -> f32 without a table: put exponent+mantissa at f32 bits 20..26 and the sign at
// bit 31, then multiply by 2^120 (the bias difference 127 - 7); e = 0 lands on f32 denormals
// and comes out exactly as mant * 2^-9; 0x7f/0xff (e4m3fn's only NaNs) are patched to NaN as in
// the spec (docs/formats.md). Then * the block's scale_inv, as the spec. W <= 16 <= the block's
// columns (fp8_col_shift), so one load never straddles two scale blocks.
template <class V>
struct LoadFp8 {
  static constexpr int kBytes = 1;
  const uint8_t* p;
  int64_t ld;
  const void* addr(int64_t r, int64_t c) const { return p + r * ld + c; }
  const float* scale;
  int64_t scale_ld, block_rows;
  int shift;
  static typename V::F cvt(typename V::I v, float s) {
    typename V::I low7 = V::iand(v, 0x7f);
    typename V::I bits = V::ior(V::template shl<20>(low7), V::template shl<24>(V::iand(v, 0x80)));
    typename V::F f = V::nan_where_eq(V::mul(V::as_float(bits), V::set1(0x1p120f)), low7, 0x7f);
    return V::mul(f, V::set1(s));
  }
  float s(int64_t r, int64_t c) const { return scale[(r / block_rows) * scale_ld + (c >> shift)]; }
  typename V::F load(int64_t r, int64_t c) const { return cvt(V::widen_u8(p + r * ld + c), s(r, c)); }
  typename V::F load(int64_t r, int64_t c, int n) const {
    return cvt(V::widen_u8(p + r * ld + c, n), s(r, c));
  }
};

// ---------------------------------------------------------------- dense tiles

// R weight rows x T tokens, W columns per step, the column tail as one partial step; x and y
// already point at the first token. With `prefetch` (decode: each row is read once), every
// cache line of this tile's rows also prefetches the same line of the next R rows: the next
// tile starts with its rows in flight, and one core keeps 2R streams of misses outstanding.
// Measured on one Zen 5 core, bf16 32000x2048: 16 GB/s without, 28 GB/s with (0.9 of a plain
// read); prefetching a fixed distance ahead within the rows gave nothing (16-17 GB/s).
// Prefetches past the matrix end are harmless (they never fault).
template <class V, class L, int R, int T>
void dense_tile(const L& ld, int64_t r, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy,
                bool prefetch) {
  using F = typename V::F;
  F acc[R][T];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) acc[i][j] = V::zero();
  constexpr int64_t kLine = 64 / L::kBytes;  // weights per cache line (a multiple of kW)
  static_assert(kLine % V::kW == 0);
  int64_t c = 0;
  for (; c + V::kW <= cols; c += V::kW) {
    if (prefetch && c % kLine == 0)
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) __builtin_prefetch(ld.addr(r + R + i, c), 0, 3);
    F wv[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = ld.load(r + i, c);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      F xv = V::loadu(x + j * ldx + c);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = V::fmadd(wv[i], xv, acc[i][j]);
    }
  }
  if (c < cols) {
    const int n = int(cols - c);
    F wv[R];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = ld.load(r + i, c, n);
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) {
      F xv = V::loadu(x + j * ldx + c, n);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = V::fmadd(wv[i], xv, acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < T; ++j) y[j * ldy + r + i] = V::reduce_add(acc[i][j]);
}

template <class L>
using DenseTileFn = void (*)(const L&, int64_t, int64_t, const float*, int64_t, float*, int64_t, bool);

template <class V, class L, int R>
constexpr DenseTileFn<L> dense_tile_for(int nt) {
  if constexpr (V::kMaxTokens >= 4)
    if (nt == 4) return dense_tile<V, L, R, 4>;
  if constexpr (V::kMaxTokens >= 3)
    if (nt == 3) return dense_tile<V, L, R, 3>;
  if (nt == 2) return dense_tile<V, L, R, 2>;
  return dense_tile<V, L, R, 1>;
}

template <class V, class L>
void outer_run(const L& ld, int64_t cols, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
               float* y, int64_t ldy);
// From this many tokens the outer-product tiles pay for their panels (kernels_bench, one Zen 5
// core, bf16 2048x2048: at 16 tokens AVX-512's dense tiles do 158-181 GFLOP/s, the outer ones
// 137-147). V::kOuterMinCols: the narrowest rows they take (AVX-512's 4 x 4 dense tiles keep
// 2048-wide activations in L1 and tie with them there).
constexpr int64_t kOuterMinTokens = 32;

template <class V, class L>
void dense_run(const L& ld, int64_t cols, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
               float* y, int64_t ldy) {
  if (n >= kOuterMinTokens && cols >= V::kOuterMinCols) return outer_run<V>(ld, cols, x, ldx, n, r0, r1, y, ldy);
  constexpr int kT = V::kMaxTokens;
  static constexpr auto kTiles = [] {
    std::array<std::array<DenseTileFn<L>, kT>, 4> t{};
    for (int nt = 1; nt <= kT; ++nt) {
      t[0][nt - 1] = dense_tile_for<V, L, 1>(nt);
      t[1][nt - 1] = dense_tile_for<V, L, 2>(nt);
      t[2][nt - 1] = dense_tile_for<V, L, 3>(nt);
      t[3][nt - 1] = dense_tile_for<V, L, 4>(nt);
    }
    return t;
  }();
  // Rows in L2-sized chunks, token tiles inside, so each chunk is read from memory once.
  const int64_t row_chunk = cols <= 2048 ? 64 : 16;
  // One token tile: each row is read once, from memory (decode); prefetch the next tile's rows.
  const bool prefetch = n <= kT;
  for (int64_t rc = r0; rc < r1; rc += row_chunk) {
    int64_t rc1 = rc + row_chunk < r1 ? rc + row_chunk : r1;
    for (int64_t t0 = 0; t0 < n; t0 += kT) {
      int nt = int(n - t0 < kT ? n - t0 : kT);
      for (int64_t r = rc; r < rc1; r += 4) {
        int nr = int(rc1 - r < 4 ? rc1 - r : 4);
        kTiles[size_t(nr - 1)][size_t(nt - 1)](ld, r, cols, x + t0 * ldx, ldx, y + t0 * ldy, ldy, prefetch);
      }
    }
  }
}

// ---------------------------------------------------------------- prefill: outer-product tiles

// Many tokens (prefill): the dot-product tiles above reduce every output over its row, so each
// step loads R weight vectors and T activation vectors for R x T multiply-adds, and at Kimi's
// width (7168) four tokens' activations (112 KiB) and the rows' chunk stream from L2 for every
// tile: bf16 2048x7168 ran at 0.5 of the FMA peak (0.77 at width 2048). Here a panel of
// MR = 2W rows x kOuterCols columns is widened to f32 and transposed once ([column][MR], 16 KiB
// on AVX-512, in L1), and every tile of NR tokens runs 2 NR accumulators over it: per column two
// vector loads from L1 and NR broadcasts feed 2 NR multiply-adds. Each output's sum runs over
// the columns in order (the spec's order, with fused multiply-adds); y holds the partial sums
// between panels. Needs V::kOuterTokens (NR), V::kOuterMinCols and V::transpose (a W x W block).
constexpr int64_t kOuterCols = 128;

// panel: [kc][ldp] f32, 2W values per column (any ldp: gemm_nn passes B itself); mr <= 2W of
// them are stored.
template <class V, int NT>
void outer_tile(const float* panel, int64_t ldp, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy,
                int mr, bool add) {
  using F = typename V::F;
  constexpr int W = V::kW;
  const int m0 = mr < W ? mr : W, m1 = mr - W;  // valid rows in each half (m1 <= 0: none)
  F a0[NT], a1[NT];
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) {
    float* yj = y + j * ldy;
    a0[j] = !add ? V::zero() : m0 == W ? V::loadu(yj) : V::loadu(yj, m0);
    a1[j] = !add || m1 <= 0 ? V::zero() : m1 >= W ? V::loadu(yj + W) : V::loadu(yj + W, m1);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const F w0 = V::loadu(panel + k * ldp), w1 = V::loadu(panel + k * ldp + W);
#pragma GCC unroll 16
    for (int j = 0; j < NT; ++j) {
      const F xb = V::set1(x[j * ldx + k]);
      a0[j] = V::fmadd(w0, xb, a0[j]);
      a1[j] = V::fmadd(w1, xb, a1[j]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) {
    float* yj = y + j * ldy;
    if (m0 == W) V::storeu(yj, a0[j]);
    else V::storeu(yj, a0[j], m0);
    if (m1 >= W) V::storeu(yj + W, a1[j]);
    else if (m1 > 0) V::storeu(yj + W, a1[j], m1);
  }
}

using OuterTileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, int, bool);

template <class V, int... J>
constexpr std::array<OuterTileFn, sizeof...(J)> outer_tiles(std::integer_sequence<int, J...>) {
  return {outer_tile<V, J + 1>...};
}

template <class V, class L>
void outer_run(const L& ld, int64_t cols, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
               float* y, int64_t ldy) {
  constexpr int W = V::kW, MR = 2 * W, NR = V::kOuterTokens;
  constexpr int64_t KC = kOuterCols;
  static_assert(KC % W == 0);
  static constexpr auto kTiles = outer_tiles<V>(std::make_integer_sequence<int, NR>{});
  alignas(64) float rows[MR * KC];   // [MR][KC]: the panel's rows widened
  alignas(64) float panel[KC * MR];  // [KC][MR]: transposed
  for (int64_t rb = r0; rb < r1; rb += MR) {
    const int mr = int(r1 - rb < MR ? r1 - rb : MR);
    for (int64_t kb = 0; kb < cols; kb += KC) {
      const int64_t kc = cols - kb < KC ? cols - kb : KC, kcp = (kc + W - 1) / W * W;
      for (int i = 0; i < MR; ++i) {
        float* ri = rows + i * KC;
        int64_t c = 0;
        if (i >= mr) {
          for (; c < kcp; c += W) V::storeu(ri + c, V::zero());
          continue;
        }
        for (; c + W <= kc; c += W) V::storeu(ri + c, ld.load(rb + i, kb + c));
        if (c < kc) V::storeu(ri + c, ld.load(rb + i, kb + c, int(kc - c)));  // zeros past kc
      }
      for (int ib = 0; ib < MR; ib += W)
        for (int64_t c = 0; c < kcp; c += W) V::transpose(rows + ib * KC + c, KC, panel + c * MR + ib, MR);
      for (int64_t t0 = 0; t0 < n; t0 += NR) {
        const int nt = int(n - t0 < NR ? n - t0 : NR);
        kTiles[size_t(nt - 1)](panel, MR, kc, x + t0 * ldx + kb, ldx, y + t0 * ldy + rb, ldy, mr, kb > 0);
      }
    }
  }
}

// The part of B that attention's products (the ISA files' gemm_nn / gemm_nt) keep in L2 while
// every tile of A passes over it. Without it, blocked prefill attention (A: 256 rows of queries
// x heads; B: the latent cache, 2.4 MB per 1k positions) streamed the whole cache from memory
// once per 4 rows of A.
constexpr int64_t kGemmBBytes = int64_t(256) << 10;

// C[:, :ncols] (+)= A B[:, :ncols] for k columns of A (ncols a multiple of 2W): the outer-product
// tiles on B's 2W-column panels as they lie (outer_tile takes their stride), NR rows of A at a
// time; with `add` the accumulators start from C.
template <class V>
void outer_gemm_nn_panels(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                          int64_t m, int64_t ncols, int64_t k, bool add) {
  constexpr int NR = V::kOuterTokens, MR = 2 * V::kW;
  static constexpr auto kTiles = outer_tiles<V>(std::make_integer_sequence<int, NR>{});
  for (int64_t j = 0; j < ncols; j += MR)
    for (int64_t i = 0; i < m; i += NR)
      kTiles[size_t((m - i < NR ? m - i : NR) - 1)](b + j, ldb, k, a + i * lda, lda, c + i * ldc + j, ldc, MR,
                                                    add);
}

// y[t * ldy + r] = W[r] . x[t * ldx] for rows [r0, r1) and n tokens; int4 and fp8 weights whose
// block is not a power of two >= 16 columns go to the generic kernel.
template <class V>
void linear_dense(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
                  float* y, int64_t ldy) {
  switch (w.encoding) {
    case WeightEncoding::kF32:
      return dense_run<V>(LoadF32<V>{static_cast<const float*>(w.data), w.cols}, w.cols, x, ldx, n, r0, r1, y,
                          ldy);
    case WeightEncoding::kBF16:
      return dense_run<V>(LoadBF16<V>{static_cast<const uint16_t*>(w.data), w.cols}, w.cols, x, ldx, n, r0,
                          r1, y, ldy);
    case WeightEncoding::kF16:
      return dense_run<V>(LoadF16<V>{static_cast<const uint16_t*>(w.data), w.cols}, w.cols, x, ldx, n, r0, r1,
                          y, ldy);
    case WeightEncoding::kFp8Block: {
      int shift = fp8_col_shift(w);
      if (shift < 0) break;
      LoadFp8<V> ld{
          static_cast<const uint8_t*>(w.data), w.cols, w.scale_f32, w.scale_cols, w.block_rows, shift};
      return dense_run<V>(ld, w.cols, x, ldx, n, r0, r1, y, ldy);
    }
    case WeightEncoding::kInt4Group: break;
  }
  linear_dense_generic(w, x, ldx, n, r0, r1, y, ldy);
}

// ---------------------------------------------------------------- f32 helpers

template <class V>
float dot(const float* a, const float* b, int64_t n) {
  constexpr int W = V::kW;
  typename V::F s0 = V::zero(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    s0 = V::fmadd(V::loadu(a + i), V::loadu(b + i), s0);
    s1 = V::fmadd(V::loadu(a + i + W), V::loadu(b + i + W), s1);
    s2 = V::fmadd(V::loadu(a + i + 2 * W), V::loadu(b + i + 2 * W), s2);
    s3 = V::fmadd(V::loadu(a + i + 3 * W), V::loadu(b + i + 3 * W), s3);
  }
  for (; i + W <= n; i += W) s0 = V::fmadd(V::loadu(a + i), V::loadu(b + i), s0);
  if (i < n) s1 = V::fmadd(V::loadu(a + i, int(n - i)), V::loadu(b + i, int(n - i)), s1);
  return V::reduce_add(V::add(V::add(s0, s1), V::add(s2, s3)));
}

template <class V>
void axpy(float a, const float* x, float* y, int64_t n) {
  const typename V::F va = V::set1(a);
  int64_t i = 0;
  for (; i + V::kW <= n; i += V::kW) V::storeu(y + i, V::fmadd(va, V::loadu(x + i), V::loadu(y + i)));
  if (i < n) {
    const int k = int(n - i);
    V::storeu(y + i, V::fmadd(va, V::loadu(x + i, k), V::loadu(y + i, k)), k);
  }
}

// exp(x) as Cephes' expf: n = round(x log2 e), r = x - n ln2 (in two parts), a degree-7
// polynomial in r, times 2^n. Inputs clamped to [-88.38, 88.38] (exp(-88.38) underflows the
// silu below to -0, which is what the scalar spec gives too).
template <class V>
typename V::F exp(typename V::F x) {
  using F = typename V::F;
  x = V::max(V::min(x, V::set1(88.3762626647949f)), V::set1(-88.3762626647949f));
  F n = V::round_nearest(V::mul(x, V::set1(1.44269504088896341f)));
  F r = V::fnmadd(n, V::set1(0.693359375f), x);
  r = V::fnmadd(n, V::set1(-2.12194440e-4f), r);
  F p = V::set1(1.9875691500E-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507E-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073E-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894E-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459E-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201E-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  return V::scale_pow2(p, n);
}

// out = silu(gate) * up = gate / (1 + exp(-gate)) * up.
template <class V>
void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  auto one_vec = [](typename V::F g, typename V::F u) {
    return V::mul(V::div(g, V::add(V::set1(1.0f), exp<V>(V::sub(V::zero(), g)))), u);
  };
  int64_t i = 0;
  for (; i + V::kW <= n; i += V::kW) V::storeu(out + i, one_vec(V::loadu(gate + i), V::loadu(up + i)));
  if (i < n) {
    const int k = int(n - i);
    V::storeu(out + i, one_vec(V::loadu(gate + i, k), V::loadu(up + i, k)), k);
  }
}

}  // namespace sickle::simd
