// sickle/kernels/dispatch.h — the kernel table, chosen once from the CPU's features.
//
// Each entry works on a row range [r0, r1) of one weight and all n tokens, single-threaded;
// linear.cpp splits rows across the thread pool. The scalar table is the twin of the SIMD ones
// (same arithmetic, same int8 activation quantization) and the fallback on old CPUs.
//
// Layout conventions: x is [n, ldx] f32, y is [n, ldy] f32, y[t*ldy + r] is overwritten.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "io/weights.h"

namespace sickle {

// Activations quantized to int8 for the int4 kernels: one f32 scale d per 32 values
// (d = max|x| / 127, q = round(x / d), as llama.cpp's Q8_0).
// Layout per token, built for the kernels' register shapes: blocks of 32 are gathered in
// groups of 4 (n_blocks padded with zero blocks to a multiple of 4); group g holds 128 bytes:
// [even-indexed values of its 4 blocks, 16 each][odd-indexed values, 16 each], matching the
// low / high nibbles of the packed int4 bytes. d and m are [n_blocks_padded * 4] per token:
// entry 4*b + i (i = 0..3) holds d_b and m_b = 2 * d_b * sum(q_b) (the offset-binary
// correction 8 * d_b * sum(q_b), spread over the 4 int32 lanes one block fills).
struct QuantizedActs {
  int64_t n = 0, cols = 0;
  int64_t n_blocks = 0, n_blocks_padded = 0;
  int8_t* q = nullptr;  // [n, n_blocks_padded * 32]
  float* d = nullptr;   // [n, n_blocks_padded * 4]
  float* m = nullptr;   // [n, n_blocks_padded * 4]

  int64_t q_stride() const { return n_blocks_padded * 32; }
  int64_t dm_stride() const { return n_blocks_padded * 4; }
  // Bytes needed for n tokens of `cols` values (q, d, m, each 64-byte aligned).
  static size_t bytes_for(int64_t n, int64_t cols);
};

// Activations for the AMX bf16 kernel, each value split into three bf16s, x = hi + mid + lo
// (24 mantissa bits: exact for normal f32, so the products are those of the f32 kernels and
// only the summation order differs). Pair-major so that one tile row holds pair j of 16
// consecutive tokens: hi[j * n_pad + t] = bf16(x[t][2j]) | bf16(x[t][2j+1]) << 16, for any
// starting token t. Columns n..n_pad are zero (a tile may read up to 15 tokens past the last).
struct PackedBf16 {
  int64_t n = 0, n_pad = 0, cols = 0;
  uint32_t* part[3] = {};  // hi, mid, lo: each [cols / 2, n_pad]
  static int64_t n_pad_for(int64_t n) { return (n + 15) / 16 * 16 + 16; }
  static size_t bytes_for(int64_t n, int64_t cols);
};

// What a softmax of x[0, n) computed on the way: max_i x_i and sum_i exp(x_i - max)
// (n == 0: -inf and 0).
struct SoftmaxStats {
  float max;
  float sum;
};

struct KernelTable {
  const char* name;
  // Quantize tokens [t0, t1) of x into qa (qa's arrays already sized for qa.n tokens).
  void (*quantize_acts)(const float* x, int64_t ldx, int64_t t0, int64_t t1, QuantizedActs& qa);
  // int4 group weights (group a multiple of 32) x quantized activations.
  void (*linear_int4)(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                      int64_t ldy);
  // f32 / bf16 / f16 / fp8-block weights x f32 activations.
  void (*linear_dense)(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
                       float* y, int64_t ldy);
  // f32 vector helpers behind kernels/ops.h (attention over the latent cache uses them per
  // position and head).
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float a, const float* x, float* y, int64_t n);
  // out = g / (1 + exp(-g)) * u; SIMD tables use a Cephes-style exp (relative error ~1e-7).
  void (*silu_mul)(const float* gate, const float* up, int64_t n, float* out);
  // C [m, n] = A [m, k] B [k, n], all f32 row-major with leading dimensions (attention's
  // products over the latent cache). The AMX table runs big ones (blocked prefill attention) on
  // bf16 tiles with both operands split in three parts: within the FMA kernels' error bound.
  void (*gemm_nn)(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
                  int64_t n, int64_t k);
  // C [m, n] = A [m, k] B [n, k]^T (row-by-row dot products: several decode queries against
  // every cache row, each cache row read once).
  void (*gemm_nt)(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
                  int64_t n, int64_t k);
  // y [m] = A [m, k] x (row dot products) and y [k] = x^T A = sum_i x_i A[i, :] (overwrites y):
  // attention of one decode token over the latent cache.
  void (*gemv_n)(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
  void (*gemv_t)(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
  // gemm_nn with bf16 B (decode attention multiplies every decode token's q_nope by W_UK read
  // from kv_b in its stored encoding, once per step).
  void (*gemm_nn_bf16)(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                       int64_t m, int64_t n, int64_t k);
  // In place x = exp(x - max) / sum (SIMD tables: the silu_mul exp); returns that max and sum
  // (chunked attention combines chunks through them).
  SoftmaxStats (*softmax)(float* x, int64_t n);
  // Optional (nullptr unless the CPU has AMX): bf16 weights (cols % 32 == 0) against packed
  // activations, tokens [p0, p0 + n) of pa, rows [r0, r1); y points at token p0's row. Callers
  // use it when n >= dense_packed_min_n (small weights, up to dense_small_bytes: n >=
  // dense_packed_min_n_small), packing x once per call with pack_bf16 (the token
  // columns [t0, t1) of pa, multiples of 16 up to pa.n_pad, from x [pa.n, ldx]; columns past
  // pa.n get zeros).
  void (*linear_bf16_packed)(const WeightView& w, const PackedBf16& pa, int64_t p0, int64_t n, int64_t r0,
                             int64_t r1, float* y, int64_t ldy) = nullptr;
  void (*pack_bf16)(const float* x, int64_t ldx, int64_t t0, int64_t t1, PackedBf16& pa) = nullptr;
  int64_t dense_packed_min_n = 0;
  int64_t dense_packed_min_n_small = 0;
  int64_t dense_small_bytes = 0;
  // Optional (nullptr unless the CPU has AVX512_BF16): bf16 weights (cols % 32 == 0) against
  // activations already rounded to bf16 (ModelOptions::bf16_activations), as pairs: xp [n, ldp]
  // uint32, xp[t * ldp + j] = bf16(x[t][2j]) | bf16(x[t][2j + 1]) << 16; rows [r0, r1). Its
  // spec is linear_scalar on the rounded x (kernels/linear.h linear_bf16_acts); tables without it
  // run their linear_dense on the rounded values.
  void (*linear_bf16_dot)(const WeightView& w, const uint32_t* xp, int64_t ldp, int64_t n, int64_t r0,
                          int64_t r1, float* y, int64_t ldy) = nullptr;
};

extern const KernelTable kScalarKernels;
extern const KernelTable kAvx2Kernels;    // needs avx2 + fma + f16c
extern const KernelTable kAvx512Kernels;  // needs avx512f/bw/vl + avx512vnni
extern const KernelTable kAvx512Bf16Kernels;  // avx512 + avx512_bf16 (linear_bf16_dot)
extern const KernelTable kAmxKernels;     // avx512 + AMX tiles (int8, bf16) for prefill-sized n

// The best table for this CPU (picked once). SICKLE_KERNELS=scalar|avx2|avx512|avx512bf16|amx
// overrides it (for tests and benchmarks); an override the CPU cannot run is ignored with a warning.
const KernelTable& kernel_table();
// Tables this CPU can run, best last (tests sweep them all).
std::vector<const KernelTable*> runnable_kernel_tables();

// Lay one token's f32 values into the QuantizedActs position of value c.
inline int64_t qact_index(int64_t c) {
  int64_t b = c / 32, j = c % 32;
  return (b / 4) * 128 + (j & 1) * 64 + (b % 4) * 16 + j / 2;
}

}  // namespace sickle
