// sickle/kernels/avx512.h — the AVX-512 table's entries by name (defined in kernels_avx512.cpp),
// so that the AMX table (kernels_amx.cpp) is a constant-initialised table of its own that keeps
// them wherever it has no tile kernel, instead of a copy of kAvx512Kernels made during dynamic
// initialisation. Call them only where the CPU runs the AVX-512 table.
#pragma once

#include <cstdint>

#include "io/weights.h"

namespace sickle {

struct QuantizedActs;
struct SoftmaxStats;

namespace avx512 {

void quantize_acts_avx512(const float* x, int64_t ldx, int64_t t0, int64_t t1, QuantizedActs& qa);
void linear_int4_avx512(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                        int64_t ldy);
void linear_dense_avx512(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
                         float* y, int64_t ldy);
float dot_avx512(const float* a, const float* b, int64_t n);
void axpy_avx512(float a, const float* x, float* y, int64_t n);
void silu_mul_avx512(const float* gate, const float* up, int64_t n, float* out);
void gemm_nn_avx512(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                    int64_t m, int64_t n, int64_t k);
void gemm_nt_avx512(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                    int64_t m, int64_t n, int64_t k);
void gemv_n_avx512(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
void gemv_t_avx512(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
void gemm_nn_bf16_avx512(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                         int64_t m, int64_t n, int64_t k);
SoftmaxStats softmax_avx512(float* x, int64_t n);

}  // namespace avx512
}  // namespace sickle
