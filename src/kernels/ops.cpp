#include "kernels/ops.h"

#include <cmath>

#include "base/numeric.h"
#include "kernels/dispatch.h"

namespace sickle {

namespace {
template <class W>
void rmsnorm_impl(const float* x, W w_at, float eps, int64_t n, float* out) {
  // double: a 7168-long sum of squares loses bits in f32. Eight partial sums in a fixed order
  // (one chain waited on the add latency every element: 4% of a small model's batched step).
  double part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += double(x[i + j]) * double(x[i + j]);
  for (; i < n; ++i) part[i % 8] += double(x[i]) * double(x[i]);
  const double ss = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
  float inv = 1.0f / std::sqrt(float(ss / double(n)) + eps);
  for (i = 0; i < n; ++i) out[i] = x[i] * inv * w_at(i);
}
}  // namespace

void rmsnorm(const float* x, const float* w, float eps, int64_t n, float* out) {
  rmsnorm_impl(
      x, [w](int64_t i) { return w[i]; }, eps, n, out);
}
void rmsnorm(const float* x, const uint16_t* w, float eps, int64_t n, float* out) {
  rmsnorm_impl(
      x, [w](int64_t i) { return bf16_to_f32(w[i]); }, eps, n, out);
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  kernel_table().silu_mul(gate, up, n, out);
}

void softmax(float* x, int64_t n) { kernel_table().softmax(x, n); }

float dot(const float* a, const float* b, int64_t n) { return kernel_table().dot(a, b, n); }

void axpy(float a, const float* x, float* y, int64_t n) { kernel_table().axpy(a, x, y, n); }
void gemm_nn(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
             int64_t n, int64_t k) {
  kernel_table().gemm_nn(a, lda, b, ldb, c, ldc, m, n, k);
}
void gemm_nt(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
             int64_t n, int64_t k) {
  kernel_table().gemm_nt(a, lda, b, ldb, c, ldc, m, n, k);
}
void gemv_n(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y) {
  kernel_table().gemv_n(a, lda, m, k, x, y);
}
void gemv_t(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y) {
  kernel_table().gemv_t(a, lda, m, k, x, y);
}
void gemm_nn_bf16(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                  int64_t m, int64_t n, int64_t k) {
  kernel_table().gemm_nn_bf16(a, lda, b, ldb, c, ldc, m, n, k);
}

void scale(float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

}  // namespace sickle
