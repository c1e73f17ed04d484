// sickle/kernels/ops.h — small f32 vector helpers used by the forward pass.
// All math in f32. Pointers need no alignment. n is the vector length.
#pragma once

#include <cstdint>

namespace sickle {

// out = x / sqrt(mean(x^2) + eps) * w (RMSNorm, DeepSeek-V3 modeling: f32 math). out may be x.
void rmsnorm(const float* x, const float* w, float eps, int64_t n, float* out);
void rmsnorm(const float* x, const uint16_t* w_bf16, float eps, int64_t n, float* out);
// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). out may alias gate or up.
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
// In place: x = exp(x - max) / sum.
void softmax(float* x, int64_t n);
float dot(const float* a, const float* b, int64_t n);
// y += a * x
void axpy(float a, const float* x, float* y, int64_t n);
// x *= a
void scale(float* x, float a, int64_t n);
// C [m, n] = A [m, k] B [k, n], row-major with leading dimensions lda, ldb, ldc (overwrites C).
void gemm_nn(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
             int64_t n, int64_t k);
// C [m, n] = A [m, k] B [n, k]^T, row-major with leading dimensions (overwrites C).
void gemm_nt(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
             int64_t n, int64_t k);
// y [m] = A [m, k] x, and y [k] = sum_i x_i A[i, :] (A row-major, leading dimension lda).
void gemv_n(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
void gemv_t(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y);
// gemm_nn with B in bf16 (widened exactly to f32; the products and sums are f32).
void gemm_nn_bf16(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                  int64_t m, int64_t n, int64_t k);

}  // namespace sickle
