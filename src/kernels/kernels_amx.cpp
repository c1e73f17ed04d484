// AMX kernel table: the AVX-512 table, with the prefill-sized products on tiles (Sapphire
// Rapids and later; Intel SDM vol. 1 ch. 18 / the Intel Intrinsics Guide for TDPBSUD and
// TDPBF16PS). Compiled with -mamx-* (CMake: *_amx.cpp); only called when cpu_features().amx,
// which also means the kernel granted this process the tile state (base/cpu.cpp).
//
// Tiles are 16 rows x 64 bytes. One tile product C[m][n] += sum_k A[m][k] B[k][n] takes B in
// the "VNNI" layout: row k/4 (int8) or k/2 (bf16) holds the 4 (2) consecutive k of every n.
//
// int4 x int8 (linear_int4_amx): C = [tokens, 16 weight rows] int32 per 32-block, because the
// scales change every block: A = the int8 activations of a block (QuantizedActs' even-k and
// odd-k halves put side by side once per call), B = the weight nibbles of 16 rows as signed
// int8 (q = nibble - 8), transposed into VNNI order once per 16-row stripe; TDPBSSD. The
// integer block sums equal the scalar twin's (its offset-binary sum minus 8 sum(q)), so only
// the f32 accumulation order differs.
//
// bf16 (linear_bf16_packed): C = [16 weight rows, 16 tokens] f32 accumulated over all of K in
// the tile: A = 16 weight rows straight from the checkpoint (no repacking), B = activations as
// PackedBf16 (hi, mid and lo parts: three products per step, together the exact f32 value).
#include <immintrin.h>

#include <cstring>
#include <utility>

#include "base/numeric.h"
#include "kernels/avx512.h"
#include "kernels/avx512_transpose.h"
#include "kernels/dispatch.h"
#include "runtime/scratch.h"

namespace sickle {

namespace {

// Below this many tokens the AVX-512 kernels win: the per-stripe transpose and the per-block
// rescale cost about what a few tokens of VNNI work do (bench/kernels_bench int4_gemv/*/n4..16
// and bf16_gemv/*/n8, SICKLE_KERNELS=avx512 vs amx: int4 breaks even near n = 8 on cold weights).
constexpr int64_t kInt4MinTokens = 8;
constexpr int64_t kBf16MinTokens = 4;
// Small bf16 weights (a small model's, cache-resident: no memory traffic to save) stay on FMAs
// up to 5 tokens: brown-kimi batch-4 step 0.37-0.40 -> 0.34-0.35 ms, batch 6 worse on FMAs
// (0.46-0.48 -> 0.49-0.51); big weights take tiles from 4 (`mini` batch 5: 95 vs 103 ms).
constexpr int64_t kBf16MinTokensSmall = 6;
// Small weights also get a software prefetch in the decode-sized AMX kernel.
constexpr int64_t kBf16SmallBytes = int64_t(1) << 20;

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// GCC 12's _tile_loadconfig tells the compiler it reads only 8 bytes of the config, so the
// stores of the rest may be dropped as dead: load it with the whole struct as the operand.
inline void load_config(const TileConfig& c) { __asm__ volatile("ldtilecfg %0" : : "m"(c) : "memory"); }

// The tile shapes of each kernel; loaded at the start of every call (other code on this
// thread may have used other shapes) and released at its end, so an idle thread carries no
// tile state through context switches.
void configure_int4(int m) {
  TileConfig c;
  for (int t : {0, 1}) c.rows[t] = uint8_t(m), c.colsb[t] = 64;  // C: [m tokens, 16 rows] int32
  for (int t : {2, 3}) c.rows[t] = uint8_t(m), c.colsb[t] = 32;  // A: [m tokens, 32 k] int8
  for (int t : {4, 5}) c.rows[t] = 8, c.colsb[t] = 64;           // B: [32 k / 4, 16 rows x 4]
  load_config(c);
}
void configure_bf16() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  load_config(c);
}

// ------------------------------------------------------------------ int4 x int8

// Weight rows [r, r + 16) as B tiles, signed (q = nibble - 8): for block b one 8-row tile of
// 512 bytes, rows 0-3 the even-k values (dword kk = bytes 4kk..4kk+3 of the block), rows 4-7
// the odd-k ones, each row 16 weight rows x 4 bytes. And the f32 scales [nb][16].
void pack_stripe(const WeightView& w, int64_t r, int64_t nb, uint8_t* wp, float* sw, bool prefetch_next) {
  const int64_t row_bytes = w.cols / 2;
  const uint8_t* base = static_cast<const uint8_t*>(w.data) + r * row_bytes;
  const __m512i m4 = _mm512_set1_epi8(0x0F), k8 = _mm512_set1_epi8(8);
  for (int64_t g = 0; g < nb; g += 4) {  // 4 blocks = 64 bytes per row
    const int nblk = int(nb - g < 4 ? nb - g : 4);
    const __mmask64 k = nblk == 4 ? ~__mmask64(0) : (__mmask64(1) << (nblk * 16)) - 1;
    __m512i v[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) v[i] = _mm512_maskz_loadu_epi8(k, base + i * row_bytes + g * 16);
    // The next stripe's same 64 bytes of each row (decode-sized n streams cold weights: the
    // hardware prefetcher alone leaves the loads waiting on memory). Past the matrix end the
    // prefetch is a harmless no-op.
    if (prefetch_next)
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(base + (16 + i) * row_bytes + g * 16), _MM_HINT_T0);
    transpose16(v);  // v[j] = dword j (block j / 4, kk = j % 4) of the 16 rows
    for (int j = 0; j < nblk * 4; ++j) {
      uint8_t* dst = wp + (g + j / 4) * 512 + (j % 4) * 64;
      _mm512_store_si512(dst, _mm512_sub_epi8(_mm512_and_si512(v[j], m4), k8));
      _mm512_store_si512(dst + 256, _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v[j], 4), m4), k8));
    }
  }
  // Scales as [block][16 rows] f32: one 16-row column of bf16 scales per group, widened.
  const int64_t bpg = w.group_size / 32, n_groups = nb / bpg;
  const __m512i sidx =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(int32_t(w.scale_cols)));
  const uint16_t* s0 = w.scale_bf16 + r * w.scale_cols;
  for (int64_t g = 0; g < n_groups; ++g) {
    // 32-bit gathers of (scale, next scale) pairs; the low halves are this group's scales.
    // The last group of the last row would read 2 bytes past the array: take it separately.
    __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), 0x7FFF, sidx, s0 + g, 2);
    v = _mm512_mask_set1_epi32(v, 0x8000, s0[15 * w.scale_cols + g]);
    const __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    for (int64_t j = 0; j < bpg; ++j) _mm512_store_ps(sw + (g * bpg + j) * 16, f);
  }
}

void linear_int4_amx(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                     int64_t ldy) {
  const int64_t n = qa.n, nb = w.cols / 32;
  const int64_t r_amx = r0 + (r1 - r0) / 16 * 16;
  if (n < kInt4MinTokens || r_amx == r0) return avx512::linear_int4_avx512(w, qa, r0, r1, y, ldy);
  const int64_t qs = qa.q_stride(), ds = qa.dm_stride(), n_tiles = (n + 15) / 16;
  // Per thread: the packed stripe and its scales; the activations as A tiles, [tile][block]
  // [16 tokens][16 even-k bytes, 16 odd-k bytes] (QuantizedActs keeps a block's halves 64
  // bytes apart); per token tile the block scales d as [tile][block][16].
  thread_local ScratchBuffer sbuf;
  ScratchArena arena(sbuf, ScratchArena::padded(size_t(nb) * 512) + ScratchArena::padded(size_t(nb) * 64) +
                               ScratchArena::padded(size_t(n_tiles * nb) * 512) +
                               ScratchArena::padded(size_t(n_tiles * nb) * 64) + 4096 + 64);
  uint8_t* wp = arena.alloc<uint8_t>(size_t(nb) * 512);
  float* sw = arena.alloc<float>(size_t(nb) * 16);
  int8_t* qt = arena.alloc<int8_t>(size_t(n_tiles * nb) * 512);
  float* dt = arena.alloc<float>(size_t(n_tiles * nb) * 16);
  int32_t* cbuf = arena.alloc<int32_t>(1024);  // two pairs of C tiles, alternating
  // The last token tile runs with all 16 rows too (one tile configuration per call: reloading
  // it for a partial tile cost two ldtilecfg per stripe): its rows past n are zeros with scale
  // d = 0, and their outputs are not stored.
  for (int64_t t = 0; t < n_tiles * 16; ++t) {
    int8_t* dst = qt + ((t / 16) * nb * 16 + t % 16) * 32;
    if (t >= n) {
      for (int64_t b = 0; b < nb; ++b)
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + b * 512), _mm256_setzero_si256());
      continue;
    }
    const int8_t* q = qa.q + t * qs;
    for (int64_t b = 0; b < nb; ++b) {
      const int8_t* src = q + (b / 4) * 128 + (b % 4) * 16;
      const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
      const __m128i o = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 64));
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + b * 512),
                         _mm256_inserti128_si256(_mm256_castsi128_si256(e), o, 1));
    }
  }
  for (int64_t tt = 0; tt < n_tiles; ++tt)
    for (int64_t b = 0; b < nb; ++b)
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) {
        const int64_t t = tt * 16 + i;
        dt[(tt * nb + b) * 16 + i] = t < n ? qa.d[t * ds + 4 * b] : 0.0f;
      }
  configure_int4(16);
  for (int64_t r = r0; r < r_amx; r += 16) {
    pack_stripe(w, r, nb, wp, sw, r + 16 < r_amx);
    for (int64_t tt = 0; tt < n_tiles; ++tt) {
      const int m = int(n - tt * 16 < 16 ? n - tt * 16 : 16);
      const int8_t* a0 = qt + tt * nb * 512;
      const float* d0 = dt + tt * nb * 16;
      __m512 acc[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
      // Blocks go through the tiles in pairs (C tiles 0 and 1), software-pipelined: the tile
      // products of pair p + 1 run while the vector units rescale pair p from its stored C
      // (y += sw d S), so neither waits for the other.
      auto products = [&](int64_t b, int64_t nblk) {
        _tile_zero(0);
        _tile_loadd(2, a0 + b * 512, 32);
        _tile_loadd(4, wp + b * 512, 64);
        _tile_dpbssd(0, 2, 4);
        if (nblk > 1) {
          _tile_zero(1);
          _tile_loadd(3, a0 + (b + 1) * 512, 32);
          _tile_loadd(5, wp + (b + 1) * 512, 64);
          _tile_dpbssd(1, 3, 5);
        }
      };
      auto store = [&](int32_t* c, int64_t nblk) {
        _tile_stored(0, c, 64);
        if (nblk > 1) _tile_stored(1, c + 256, 64);
      };
      int32_t* cur = cbuf;
      int32_t* nxt = cbuf + 512;
      int64_t nblk = nb < 2 ? nb : 2;
      products(0, nblk);
      store(cur, nblk);
      for (int64_t b = 0; b < nb; b += 2) {
        const int64_t nb_next = b + 2 >= nb ? 0 : (nb - b - 2 < 2 ? nb - b - 2 : 2);
        if (nb_next) products(b + 2, nb_next);
        for (int64_t j = 0; j < nblk; ++j) {
          const int32_t* c = cur + j * 256;
          const __m512 sv = _mm512_load_ps(sw + (b + j) * 16);
          const float* db = d0 + (b + j) * 16;
#pragma GCC unroll 16
          for (int i = 0; i < 16; ++i) {
            const __m512 sum = _mm512_cvtepi32_ps(_mm512_load_si512(c + i * 16));
            acc[i] = _mm512_fmadd_ps(sv, _mm512_mul_ps(sum, _mm512_set1_ps(db[i])), acc[i]);
          }
        }
        if (nb_next) store(nxt, nb_next);
        std::swap(cur, nxt);
        nblk = nb_next;
      }
      for (int i = 0; i < m; ++i) _mm512_storeu_ps(y + (tt * 16 + i) * ldy + r, acc[i]);
    }
  }
  _tile_release();
  if (r_amx < r1) avx512::linear_int4_avx512(w, qa, r_amx, r1, y, ldy);
}

// ------------------------------------------------------------------ bf16

// ns stored C tiles ([16 rows][16 tokens] f32 each, 256 floats apart: rows 16 s.. of tile s)
// into y [tokens][rows], the first m tokens: one 16 x 16 register transpose per tile.
inline void c_tiles_out(const float* c, int ns, int m, float* y, int64_t ldy) {
  for (int s = 0; s < ns; ++s) {
    __m512i v[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) v[i] = _mm512_load_si512(c + s * 256 + i * 16);
    transpose16(v);  // v[t] = token t's 16 rows
    for (int t = 0; t < m; ++t) _mm512_storeu_si512(y + t * ldy + s * 16, v[t]);
  }
}

// Rows [r, r + 16 * NS) x tokens [p0, p0 + n) of pa, 16 tokens per pass: C tiles 0..NS-1,
// A (weights) tile 4, B tiles 5-7 (hi, mid, lo). The row group's weights stay in L2 while
// the token tiles pass over them.
// Tile numbers are spelled out per stripe: GCC's tile intrinsics are macros that paste their
// tile arguments into the instruction text, so they cannot come from a template parameter.
template <int NS>
void bf16_stripes(const uint16_t* wr, int64_t cols, const PackedBf16& pa, int64_t p0, int64_t n, float* y,
                  int64_t ldy, float* cbuf, bool prefetch) {
  const int64_t wstride = cols * 2, bstride = pa.n_pad * 4;
  for (int64_t t0 = 0; t0 < n; t0 += 16) {
    const int m = int(n - t0 < 16 ? n - t0 : 16);
    const int64_t p = p0 + t0;
    _tile_zero(0);
    if constexpr (NS > 1) _tile_zero(1);
    if constexpr (NS > 2) _tile_zero(2);
    if constexpr (NS > 3) _tile_zero(3);
    for (int64_t k = 0; k < cols; k += 32) {
      const int64_t off = (k / 2) * pa.n_pad + p;
      // The next row group's same 64 bytes, a whole pass ahead, into L2 (see kBf16SmallBytes).
      // Past the matrix end the prefetch is a harmless no-op.
      if (prefetch)
#pragma GCC unroll 16
        for (int i = 0; i < 16 * NS; ++i)
          _mm_prefetch(reinterpret_cast<const char*>(wr + (16 * NS + i) * cols + k), _MM_HINT_T1);
      _tile_loadd(5, pa.part[0] + off, bstride);
      _tile_loadd(6, pa.part[1] + off, bstride);
      _tile_loadd(7, pa.part[2] + off, bstride);
      _tile_loadd(4, wr + k, wstride);
      _tile_dpbf16ps(0, 4, 5);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(0, 4, 7);
      if constexpr (NS > 1) {
        _tile_loadd(4, wr + 16 * cols + k, wstride);
        _tile_dpbf16ps(1, 4, 5);
        _tile_dpbf16ps(1, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
      }
      if constexpr (NS > 2) {
        _tile_loadd(4, wr + 32 * cols + k, wstride);
        _tile_dpbf16ps(2, 4, 5);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(2, 4, 7);
      }
      if constexpr (NS > 3) {
        _tile_loadd(4, wr + 48 * cols + k, wstride);
        _tile_dpbf16ps(3, 4, 5);
        _tile_dpbf16ps(3, 4, 6);
        _tile_dpbf16ps(3, 4, 7);
      }
    }
    _tile_stored(0, cbuf, 64);
    if constexpr (NS > 1) _tile_stored(1, cbuf + 256, 64);
    if constexpr (NS > 2) _tile_stored(2, cbuf + 512, 64);
    if constexpr (NS > 3) _tile_stored(3, cbuf + 768, 64);
    c_tiles_out(cbuf, NS, m, y + t0 * ldy, ldy);
  }
}

// One token tile (n <= 16: decode-sized batches), rows [r0, r1) in groups of 32 (r1 - r0 a
// multiple of 32). Groups alternate between C tiles 0-1 and 2-3, and a group's C is copied out
// only after the next group's products are issued: with one C set, every group ended in a tile
// store waiting for its whole product chain (perf annotate: a fifth of this kernel's time on a
// small model's batched step).
template <int SET>
inline void bf16_group(const uint16_t* wr, int64_t cols, const PackedBf16& pa, int64_t p, bool prefetch,
                       float* c) {
  const int64_t wstride = cols * 2, bstride = pa.n_pad * 4;
  if constexpr (SET == 0) {
    _tile_zero(0);
    _tile_zero(1);
  } else {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k = 0; k < cols; k += 32) {
    const int64_t off = (k / 2) * pa.n_pad + p;
    if (prefetch)  // the next group's same 64 bytes, into L2 (see kBf16SmallBytes)
#pragma GCC unroll 32
      for (int i = 0; i < 32; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(wr + (32 + i) * cols + k), _MM_HINT_T1);
    _tile_loadd(5, pa.part[0] + off, bstride);
    _tile_loadd(6, pa.part[1] + off, bstride);
    _tile_loadd(7, pa.part[2] + off, bstride);
    _tile_loadd(4, wr + k, wstride);
// C tile `ct` += weights (tile 4) x the hi, mid and lo parts (tiles 5-7).
#define SICKLE_BF16_PARTS(ct) \
  do {                        \
    _tile_dpbf16ps(ct, 4, 5); \
    _tile_dpbf16ps(ct, 4, 6); \
    _tile_dpbf16ps(ct, 4, 7); \
  } while (0)
    if constexpr (SET == 0) SICKLE_BF16_PARTS(0);
    else SICKLE_BF16_PARTS(2);
    _tile_loadd(4, wr + 16 * cols + k, wstride);
    if constexpr (SET == 0) SICKLE_BF16_PARTS(1);
    else SICKLE_BF16_PARTS(3);
#undef SICKLE_BF16_PARTS
  }
  if constexpr (SET == 0) {
    _tile_stored(0, c, 64);
    _tile_stored(1, c + 256, 64);
  } else {
    _tile_stored(2, c, 64);
    _tile_stored(3, c + 256, 64);
  }
}

void bf16_one_tile(const uint16_t* wd, int64_t cols, const PackedBf16& pa, int64_t p0, int64_t n, int64_t r0,
                   int64_t r1, float* y, int64_t ldy, float* cbuf, bool prefetch) {
  const int m = int(n);
  int64_t prev = -1;  // the group whose C waits in cbuf to be copied out
  for (int64_t r = r0, g = 0; r < r1; r += 32, ++g) {
    float* c = cbuf + (g % 2) * 512;
    if (g % 2 == 0) bf16_group<0>(wd + r * cols, cols, pa, p0, prefetch, c);
    else bf16_group<1>(wd + r * cols, cols, pa, p0, prefetch, c);
    if (prev >= 0) c_tiles_out(cbuf + ((g + 1) % 2) * 512, 2, m, y + prev, ldy);
    prev = r;
  }
  if (prev >= 0) c_tiles_out(cbuf + (((r1 - r0) / 32 + 1) % 2) * 512, 2, m, y + prev, ldy);
}

void linear_bf16_packed_amx(const WeightView& w, const PackedBf16& pa, int64_t p0, int64_t n, int64_t r0,
                            int64_t r1, float* y, int64_t ldy) {
  const int64_t cols = w.cols;
  const int64_t r_amx = r0 + (r1 - r0) / 16 * 16;
  const uint16_t* wd = static_cast<const uint16_t*>(w.data);
  alignas(64) float cbuf[1024];
  // Small matrices (a small model's, cache-resident) with one token tile: their A tiles (16
  // strided rows) wait on L3 latency, which a software prefetch hides (brown-kimi batch-8 step
  // -7%); big ones stream from memory, where it only competes with the hardware prefetchers.
  const bool pf = n <= 16 && w.rows * w.cols * 2 <= kBf16SmallBytes;
  configure_bf16();
  int64_t r = r0;
  // One token tile (decode-sized batches) streams the weights from memory once: 32 rows per pass
  // keep fewer concurrent row streams than 64 for the prefetchers (+10% on cold 2048x2048, n 8).
  if (n <= 16) {
    const int64_t r32 = r0 + (r_amx - r0) / 32 * 32;
    bf16_one_tile(wd, cols, pa, p0, n, r0, r32, y, ldy, cbuf, pf);
    r = r32;
  }
  for (; r + 64 <= r_amx; r += 64) bf16_stripes<4>(wd + r * cols, cols, pa, p0, n, y + r, ldy, cbuf, pf);
  switch ((r_amx - r) / 16) {
    case 3: bf16_stripes<3>(wd + r * cols, cols, pa, p0, n, y + r, ldy, cbuf, pf); break;
    case 2: bf16_stripes<2>(wd + r * cols, cols, pa, p0, n, y + r, ldy, cbuf, pf); break;
    case 1: bf16_stripes<1>(wd + r * cols, cols, pa, p0, n, y + r, ldy, cbuf, pf); break;
    default: break;
  }
  _tile_release();
  // Tail rows (< 16; linear() splits rows in whole stripes, so only a matrix's last rows):
  // the same products from the packed parts, in f32.
  for (r = r_amx; r < r1; ++r) {
    const uint16_t* wr = wd + r * cols;
    for (int64_t t = 0; t < n; ++t) {
      float s = 0;
      for (int64_t j = 0; j < cols / 2; ++j) {
        const float w0 = bf16_to_f32(wr[2 * j]), w1 = bf16_to_f32(wr[2 * j + 1]);
        for (const uint32_t* part : pa.part) {
          const uint32_t v = part[j * pa.n_pad + p0 + t];
          s += w0 * bf16_to_f32(uint16_t(v)) + w1 * bf16_to_f32(uint16_t(v >> 16));
        }
      }
      y[t * ldy + r] = s;
    }
  }
}

// v = hi + mid + lo (16 values, three bf16 each; every residual is exact in f32, and 24
// mantissa bits cover a normal f32 exactly). A non-finite v gives hi = v and zero residuals.
inline void split3(__m512 v, __m256i h[3]) {
#pragma GCC unroll 16
  for (int p = 0; p < 3; ++p) {
    __m256bh hb = _mm512_cvtneps_pbh(v);  // round to nearest even
    h[p] = reinterpret_cast<__m256i&>(hb);
    const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h[p]), 16));
    const __m512 res = _mm512_sub_ps(v, back);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(res, res, _CMP_ORD_Q), res);
  }
}

inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? 0 : __mmask16((1u << n) - 1);
}

// Rows [r0, r0 + 16) of x [rows, ldx] (first `cols` values each; rows past `rows` and columns
// past `cols` read as zeros), columns [c, c + 32): v[p][i] = row i's 16 pairs (dword j =
// columns c + 2j, c + 2j + 1) of part p, transposed so that v[p][j] = pair j of the 16 rows.
inline void split_pairs_16x32(const float* x, int64_t ldx, int64_t rows, int64_t cols, int64_t r0, int64_t c,
                              __m512i v[3][16]) {
  const __mmask16 k0 = first_lanes(cols - c), k1 = first_lanes(cols - c - 16);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {
    if (r0 + i >= rows) {
      for (int p = 0; p < 3; ++p) v[p][i] = _mm512_setzero_si512();
      continue;
    }
    __m256i lo[3], hi[3];
    const float* xr = x + (r0 + i) * ldx + c;
    split3(_mm512_maskz_loadu_ps(k0, xr), lo);
    split3(_mm512_maskz_loadu_ps(k1, xr + 16), hi);
#pragma GCC unroll 16
    for (int p = 0; p < 3; ++p) v[p][i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo[p]), hi[p], 1);
  }
#pragma GCC unroll 16
  for (int p = 0; p < 3; ++p) transpose16(v[p]);
}

// x = hi + mid + lo per value, pair-major. Token groups [g0, g1) (multiples of 16): per group
// and 32 columns, the 16 tokens' pairs are split and transposed in registers, so each pair's
// 16 tokens go out as one 64-byte store; tokens >= pa.n are zeros (the padding columns).
void pack_bf16_amx(const float* x, int64_t ldx, int64_t g0, int64_t g1, PackedBf16& pa) {
  for (int64_t g = g0; g < g1; g += 16) {
    if (g >= pa.n) {  // padding only
      for (uint32_t* part : pa.part)
        for (int64_t j = 0; j < pa.cols / 2; ++j)
          _mm512_storeu_si512(part + j * pa.n_pad + g, _mm512_setzero_si512());
      continue;
    }
    for (int64_t c = 0; c < pa.cols; c += 32) {
      __m512i v[3][16];
      split_pairs_16x32(x, ldx, pa.n, pa.cols, g, c, v);
#pragma GCC unroll 16
      for (int p = 0; p < 3; ++p) {
        uint32_t* dst = pa.part[p] + (c / 2) * pa.n_pad + g;
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) _mm512_storeu_si512(dst + j * pa.n_pad, v[p][j]);
      }
    }
  }
}

// ------------------------------------------------------------------ f32 x f32 on bf16 tiles

// C = A B and C = A B^T in f32 for the attention products over the latent cache: every value
// of both operands split into three bf16 parts (split3, exact), and the six part products of
// weight 2^-16 and above summed on tiles; the three left out (mid x lo, lo x mid, lo x lo) are
// below 2^-24 |a b|, the size of the f32 rounding of the sum. A is packed as rows of bf16
// parts [m_pad][k_pad], B in the tile (VNNI) order [k_pad / 2][n_pad] of dword pairs.
struct F32Tiles {
  int64_t m_pad, n_pad, k_pad;
  uint16_t* a[3];
  uint32_t* b[3];
};

F32Tiles alloc_f32_tiles(ScratchBuffer& buf, int64_t m, int64_t n, int64_t k) {
  F32Tiles t;
  t.m_pad = (m + 31) / 32 * 32;  // whole 32 x 32 blocks of C (f32_tile_products)
  t.n_pad = (n + 31) / 32 * 32;
  t.k_pad = (k + 31) / 32 * 32;
  const size_t a_bytes = ScratchArena::padded(size_t(t.m_pad * t.k_pad) * 2);
  const size_t b_bytes = ScratchArena::padded(size_t(t.k_pad / 2 * t.n_pad) * 4);
  ScratchArena arena(buf, 3 * (a_bytes + b_bytes));
  for (auto& p : t.a) p = arena.alloc<uint16_t>(size_t(t.m_pad * t.k_pad));
  for (auto& p : t.b) p = arena.alloc<uint32_t>(size_t(t.k_pad / 2 * t.n_pad));
  return t;
}

// A [m, k] (lda) as rows of parts; padding rows and columns zero.
void pack_a_rows(const float* a, int64_t lda, int64_t m, int64_t k, F32Tiles& t) {
  for (int64_t i = 0; i < t.m_pad; ++i)
    for (int64_t c = 0; c < t.k_pad; c += 16) {
      __m256i h[3];
      split3(i < m ? _mm512_maskz_loadu_ps(first_lanes(k - c), a + i * lda + c) : _mm512_setzero_ps(), h);
#pragma GCC unroll 16
      for (int p = 0; p < 3; ++p)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(t.a[p] + i * t.k_pad + c), h[p]);
    }
}

// B [k, n] (ldb): pair j of column c = (B[2j][c], B[2j + 1][c]).
void pack_b_nn(const float* b, int64_t ldb, int64_t k, int64_t n, F32Tiles& t) {
  for (int64_t j = 0; j < t.k_pad / 2; ++j)
    for (int64_t c = 0; c < t.n_pad; c += 16) {
      const __mmask16 mk = first_lanes(n - c);
      __m256i e[3], o[3];
      split3(2 * j < k ? _mm512_maskz_loadu_ps(mk, b + 2 * j * ldb + c) : _mm512_setzero_ps(), e);
      split3(2 * j + 1 < k ? _mm512_maskz_loadu_ps(mk, b + (2 * j + 1) * ldb + c) : _mm512_setzero_ps(), o);
#pragma GCC unroll 16
      for (int p = 0; p < 3; ++p)
        _mm512_storeu_si512(
            t.b[p] + j * t.n_pad + c,
            _mm512_or_si512(_mm512_cvtepu16_epi32(e[p]), _mm512_slli_epi32(_mm512_cvtepu16_epi32(o[p]), 16)));
    }
}

// B [n, k] (ldb) used transposed: pair j of column c = (B[c][2j], B[c][2j + 1]).
void pack_b_nt(const float* b, int64_t ldb, int64_t n, int64_t k, F32Tiles& t) {
  for (int64_t r = 0; r < t.n_pad; r += 16)
    for (int64_t c = 0; c < t.k_pad; c += 32) {
      __m512i v[3][16];
      split_pairs_16x32(b, ldb, n, k, r, c, v);
#pragma GCC unroll 16
      for (int p = 0; p < 3; ++p)
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) _mm512_storeu_si512(t.b[p] + (c / 2 + j) * t.n_pad + r, v[p][j]);
    }
}

// C [m, n] (ldc) from the packed parts in 32 x 32 blocks: C tiles 0-3 (rows i0, i0 + 16 x
// columns j0, j0 + 16), A tiles 4-5 (the two row blocks of one part), B tiles 6-7 (the two
// column blocks of one part). Four independent accumulators keep the tile unit busy (one C
// tile alone waits on each product's latency), and each operand tile load feeds two products.
void f32_tile_products(const F32Tiles& t, int64_t m, int64_t n, float* c, int64_t ldc) {
  configure_bf16();
  alignas(64) float cbuf[4 * 256];
  const int64_t sa = t.k_pad * 2, sb = t.n_pad * 4;
  for (int64_t i0 = 0; i0 < m; i0 += 32)
    for (int64_t j0 = 0; j0 < n; j0 += 32) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t kk = 0; kk < t.k_pad; kk += 32) {
        const uint16_t* const* ap = t.a;
        const uint32_t* const* bp = t.b;
        const int64_t ao = i0 * t.k_pad + kk, bo = (kk / 2) * t.n_pad + j0;
#pragma GCC unroll 16
        for (int p = 0; p < 3; ++p) {  // A part p against B parts q <= 2 - p
          _tile_loadd(4, ap[p] + ao, sa);
          _tile_loadd(5, ap[p] + ao + 16 * t.k_pad, sa);
          for (int q = 0; q + p < 3; ++q) {
            _tile_loadd(6, bp[q] + bo, sb);
            _tile_loadd(7, bp[q] + bo + 16, sb);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
        }
      }
      _tile_stored(0, cbuf, 64);
      _tile_stored(1, cbuf + 256, 64);
      _tile_stored(2, cbuf + 512, 64);
      _tile_stored(3, cbuf + 768, 64);
      for (int64_t i = 0; i < 32 && i0 + i < m; ++i)
        for (int64_t h = 0; h < 2; ++h) {
          const __mmask16 mk = first_lanes(n - j0 - 16 * h);
          const float* src = cbuf + ((i / 16) * 2 + h) * 256 + (i % 16) * 16;  // tile (i / 16, h), row i % 16
          if (mk) _mm512_mask_storeu_ps(c + (i0 + i) * ldc + j0 + 16 * h, mk, _mm512_load_ps(src));
        }
    }
  _tile_release();
}

// Whether the tiles beat the AVX-512 FMA kernels, by a cost model fitted to measurements on
// Sapphire Rapids (bench/kernels_bench gemm_f32/*): packing costs about a cycle per value of
// both (padded) operands, a 32 x 32 x 32 block of C takes 24 tile products of 16 cycles, and
// the FMA kernels do about 16 multiply-adds per cycle (half the FMA peak). Decode-sized
// products (a few heads against one sequence's cache) stay on FMAs: packing the cache would
// cost more than it saves.
// The packed operands (6 k_pad (m_pad + n_pad) bytes, in a per-thread buffer that keeps its
// size) are capped at kMaxPackBytes: blocked prefill attention beyond ~11k positions of context
// runs on FMAs.
constexpr double kMaxPackBytes = 48.0 * (1 << 20);

bool f32_tiles_pay(int64_t m, int64_t n, int64_t k) {
  if (m < 16 || n < 16 || k < 32) return false;
  const double mp = double((m + 31) / 32 * 32), np = double((n + 31) / 32 * 32),
               kp = double((k + 31) / 32 * 32);
  if (6.0 * kp * (mp + np) > kMaxPackBytes) return false;
  const double pack = (mp + np) * double(k);
  const double tiles = (mp / 32) * (np / 32) * (kp / 32) * 24.0 * 16.0;
  return pack + tiles < 0.7 * double(m) * double(n) * double(k) / 16.0;
}

// C = A B (NT false, B [k, n]) or C = A B^T (NT true, B [n, k]).
template <bool NT>
void gemm_amx(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
              int64_t n, int64_t k) {
  if (!f32_tiles_pay(m, n, k))
    return (NT ? avx512::gemm_nt_avx512 : avx512::gemm_nn_avx512)(a, lda, b, ldb, c, ldc, m, n, k);
  thread_local ScratchBuffer buf;
  F32Tiles t = alloc_f32_tiles(buf, m, n, k);
  pack_a_rows(a, lda, m, k, t);
  if constexpr (NT) pack_b_nt(b, ldb, n, k, t);
  else pack_b_nn(b, ldb, k, n, t);
  f32_tile_products(t, m, n, c, ldc);
}

}  // namespace

// The AVX-512 table with the tile kernels in place of its int4 and bf16 products and of its big
// f32 products (attention's), constant-initialised like the others.
constinit const KernelTable kAmxKernels = {
    .name = "amx",
    .quantize_acts = avx512::quantize_acts_avx512,
    .linear_int4 = linear_int4_amx,
    .linear_dense = avx512::linear_dense_avx512,
    .dot = avx512::dot_avx512,
    .axpy = avx512::axpy_avx512,
    .silu_mul = avx512::silu_mul_avx512,
    .gemm_nn = gemm_amx<false>,
    .gemm_nt = gemm_amx<true>,
    .gemv_n = avx512::gemv_n_avx512,
    .gemv_t = avx512::gemv_t_avx512,
    .gemm_nn_bf16 = avx512::gemm_nn_bf16_avx512,
    .softmax = avx512::softmax_avx512,
    .linear_bf16_packed = linear_bf16_packed_amx,
    .pack_bf16 = pack_bf16_amx,
    .dense_packed_min_n = kBf16MinTokens,
    .dense_packed_min_n_small = kBf16MinTokensSmall,
    .dense_small_bytes = kBf16SmallBytes,
};

}  // namespace sickle
