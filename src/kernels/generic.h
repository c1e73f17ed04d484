// sickle/kernels/generic.h — the portable (scalar) kernels behind the scalar table, which the
// SIMD tables also use for the entries they do not specialise and as their fallback (an fp8
// block width that is not a power of two, say). Defined in kernels_scalar.cpp, compiled for
// baseline x86-64; declared once here for every table file instead of by hand in each.
#pragma once

#include <cstdint>

#include "io/weights.h"

namespace sickle {

struct QuantizedActs;
struct SoftmaxStats;

void quantize_acts_generic(const float* x, int64_t ldx, int64_t t0, int64_t t1, QuantizedActs& qa);
void linear_dense_generic(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
                          float* y, int64_t ldy);
float dot_generic(const float* a, const float* b, int64_t n);
void axpy_generic(float a, const float* x, float* y, int64_t n);
void silu_mul_generic(const float* gate, const float* up, int64_t n, float* out);
void gemm_nn_generic(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                     int64_t m, int64_t n, int64_t k);
void gemm_nt_generic(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                     int64_t m, int64_t n, int64_t k);
void gemv_n_generic(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
void gemv_t_generic(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
void gemm_nn_bf16_generic(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                          int64_t m, int64_t n, int64_t k);
SoftmaxStats softmax_generic(float* x, int64_t n);

}  // namespace sickle
