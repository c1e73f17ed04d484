// Scalar kernel table: the twin of the SIMD tables (same int8 activation quantization and
// block arithmetic) and the fallback for CPUs without AVX2.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/cpu.h"
#include "base/error.h"
#include "base/log.h"
#include "base/numeric.h"
#include "kernels/dispatch.h"
#include "kernels/generic.h"
#include "runtime/scratch.h"

namespace sickle {

size_t QuantizedActs::bytes_for(int64_t n, int64_t cols) {
  int64_t nbp = ((cols / 32 + 3) / 4) * 4;
  return ScratchArena::padded(size_t(n * nbp * 32)) +
         2 * ScratchArena::padded(size_t(n * nbp * 4) * sizeof(float));
}

void quantize_acts_generic(const float* x, int64_t ldx, int64_t t0, int64_t t1, QuantizedActs& qa) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* xt = x + t * ldx;
    int8_t* q = qa.q + t * qa.q_stride();
    float* d = qa.d + t * qa.dm_stride();
    float* m = qa.m + t * qa.dm_stride();
    for (int64_t b = 0; b < qa.n_blocks_padded; ++b) {
      float amax = 0;
      bool finite = true;  // a NaN/Inf activation (broken weights upstream) must give NaN, not UB
      if (b < qa.n_blocks)
        for (int j = 0; j < 32; ++j) {
          finite &= std::isfinite(xt[b * 32 + j]);
          amax = std::fmax(amax, std::fabs(xt[b * 32 + j]));
        }
      float db = finite ? amax / 127.0f : NAN, id = finite && amax > 0 ? 127.0f / amax : 0.0f;
      int sum = 0;
      for (int j = 0; j < 32; ++j) {
        int v = b < qa.n_blocks && finite ? int(std::nearbyint(xt[b * 32 + j] * id)) : 0;
        q[qact_index(b * 32 + j)] = int8_t(v);
        sum += v;
      }
      for (int i = 0; i < 4; ++i) {
        d[4 * b + i] = db;
        m[4 * b + i] = 2.0f * db * float(sum);
      }
    }
  }
}

namespace {

void linear_int4_scalar(const WeightView& w, const QuantizedActs& qa, int64_t r0, int64_t r1, float* y,
                        int64_t ldy) {
  const int64_t nb = w.cols / 32, blocks_per_group = w.group_size / 32;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* wr = static_cast<const uint8_t*>(w.data) + r * (w.cols / 2);
    const uint16_t* sr = w.scale_bf16 + r * w.scale_cols;
    for (int64_t t = 0; t < qa.n; ++t) {
      const int8_t* q = qa.q + t * qa.q_stride();
      const float* d = qa.d + t * qa.dm_stride();
      const float* m = qa.m + t * qa.dm_stride();
      float acc = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* wb = wr + b * 16;
        const int8_t* qe = q + (b / 4) * 128 + (b % 4) * 16;
        int32_t dotb = 0;
        for (int k = 0; k < 16; ++k) dotb += int(wb[k] & 15) * qe[k] + int(wb[k] >> 4) * qe[k + 64];
        float ws = bf16_to_f32(sr[b / blocks_per_group]);
        acc += ws * (d[4 * b] * float(dotb) - 4.0f * m[4 * b]);
      }
      y[t * ldy + r] = acc;
    }
  }
}

}  // namespace

void linear_dense_generic(const WeightView& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1,
                          float* y, int64_t ldy) {
  thread_local ScratchBuffer buf;
  float* row = static_cast<float*>(buf.get(size_t(w.cols) * sizeof(float)));
  for (int64_t r = r0; r < r1; ++r) {
    w.dequant_row(r, row);
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * ldx;
      float s = 0;
      for (int64_t c = 0; c < w.cols; ++c) s += row[c] * xt[c];
      y[t * ldy + r] = s;
    }
  }
}

float dot_generic(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy_generic(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void silu_mul_generic(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

namespace {
// C = A B with B's elements widened to f32 by `at` (f32 as is, bf16 exactly).
template <class Elem, class At>
void gemm_nn_widened(const float* a, int64_t lda, const Elem* b, int64_t ldb, float* c, int64_t ldc,
                     int64_t m, int64_t n, int64_t k, At at) {
  for (int64_t i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) ci[j] = 0.0f;
    for (int64_t p = 0; p < k; ++p) {
      const float aip = a[i * lda + p];
      const Elem* bp = b + p * ldb;
      for (int64_t j = 0; j < n; ++j) ci[j] += aip * at(bp[j]);
    }
  }
}
}  // namespace

void gemm_nn_generic(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                     int64_t m, int64_t n, int64_t k) {
  gemm_nn_widened(a, lda, b, ldb, c, ldc, m, n, k, [](float v) { return v; });
}

void gemm_nt_generic(const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                     int64_t m, int64_t n, int64_t k) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = dot_generic(a + i * lda, b + j * ldb, k);
}

void gemv_n_generic(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y) {
  for (int64_t i = 0; i < m; ++i) y[i] = dot_generic(a + i * lda, x, k);
}

void gemv_t_generic(const float* a, int64_t lda, int64_t m, int64_t k, const float* x, float* y) {
  for (int64_t j = 0; j < k; ++j) y[j] = 0.0f;
  for (int64_t i = 0; i < m; ++i) axpy_generic(x[i], a + i * lda, y, k);
}

void gemm_nn_bf16_generic(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* c, int64_t ldc,
                          int64_t m, int64_t n, int64_t k) {
  gemm_nn_widened(a, lda, b, ldb, c, ldc, m, n, k, [](uint16_t v) { return bf16_to_f32(v); });
}

SoftmaxStats softmax_generic(float* x, int64_t n) {
  if (n <= 0) return {-INFINITY, 0.0f};
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  float s = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  float inv = 1.0f / s;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
  return {m, s};
}

namespace {

bool can_run(const KernelTable& t) {
  const CpuFeatures& f = cpu_features();
  if (&t == &kAvx2Kernels) return f.avx2 && f.fma && f.f16c;
  if (&t == &kAvx512Kernels) return f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.fma && f.f16c;
  if (&t == &kAvx512Bf16Kernels) return can_run(kAvx512Kernels) && f.avx512bf16;
  if (&t == &kAmxKernels) return can_run(kAvx512Kernels) && f.avx512bf16 && f.amx;
  return true;
}

}  // namespace

constinit const KernelTable kScalarKernels = {
    .name = "scalar",
    .quantize_acts = quantize_acts_generic,
    .linear_int4 = linear_int4_scalar,
    .linear_dense = linear_dense_generic,
    .dot = dot_generic,
    .axpy = axpy_generic,
    .silu_mul = silu_mul_generic,
    .gemm_nn = gemm_nn_generic,
    .gemm_nt = gemm_nt_generic,
    .gemv_n = gemv_n_generic,
    .gemv_t = gemv_t_generic,
    .gemm_nn_bf16 = gemm_nn_bf16_generic,
    .softmax = softmax_generic,
};

std::vector<const KernelTable*> runnable_kernel_tables() {
  std::vector<const KernelTable*> v;
  for (const KernelTable* t :
       {&kScalarKernels, &kAvx2Kernels, &kAvx512Kernels, &kAvx512Bf16Kernels, &kAmxKernels})
    if (can_run(*t)) v.push_back(t);
  return v;
}

const KernelTable& kernel_table() {
  static const KernelTable* chosen = [] {
    std::vector<const KernelTable*> ok = runnable_kernel_tables();
    const KernelTable* best = ok.back();
    if (const char* env = std::getenv("SICKLE_KERNELS"); env != nullptr && *env != '\0') {
      const KernelTable* pick = nullptr;
      for (const KernelTable* t : ok)
        if (std::string(env) == t->name) pick = t;
      if (pick) best = pick;
      else log_warn("SICKLE_KERNELS={} is not runnable here; using {}", env, best->name);
    }
    log_debug("kernels: {} (cpu: {})", best->name, cpu_features().summary());
    return best;
  }();
  return *chosen;
}

}  // namespace sickle
