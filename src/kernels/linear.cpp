#include "kernels/linear.h"

#include "base/error.h"
#include "kernels/dispatch.h"
#include "runtime/scratch.h"
#include "runtime/thread_pool.h"

namespace sickle {

namespace {

// Below this many multiply-adds a parallel_for costs more than it saves (wake-up ~ microseconds).
constexpr int64_t kMinParallelWork = int64_t(1) << 16;

bool int4_supported(const WeightView& w) {
  return w.group_size >= 32 && w.group_size % 32 == 0 && w.cols % w.group_size == 0 && w.scale_bf16 != nullptr;
}

}  // namespace

void linear_scalar(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool) {
  SICKLE_CHECK(w.data != nullptr, "{}: no data", w.name);
  parallel_for(pool, w.rows, [&](int64_t r0, int64_t r1, int) {
    thread_local ScratchBuffer buf;
    float* row = static_cast<float*>(buf.get(size_t(w.cols) * sizeof(float)));
    for (int64_t r = r0; r < r1; ++r) {
      w.dequant_row(r, row);
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * w.cols;
        float s = 0;
        for (int64_t c = 0; c < w.cols; ++c) s += row[c] * xt[c];
        y[t * w.rows + r] = s;
      }
    }
  });
}

void quantize_acts(const KernelTable& k, const float* x, int64_t ldx, int64_t n, int64_t cols, ScratchBuffer& buf,
                   QuantizedActs& qa, ThreadPool* pool) {
  qa.n = n;
  qa.cols = cols;
  qa.n_blocks = cols / 32;
  qa.n_blocks_padded = (qa.n_blocks + 3) / 4 * 4;
  ScratchArena arena(buf, QuantizedActs::bytes_for(n, cols));
  qa.q = arena.alloc<int8_t>(size_t(n * qa.q_stride()));
  qa.d = arena.alloc<float>(size_t(n * qa.dm_stride()));
  qa.m = arena.alloc<float>(size_t(n * qa.dm_stride()));
  if (n * cols < kMinParallelWork) pool = nullptr;
  parallel_for(pool, n, [&](int64_t t0, int64_t t1, int) { k.quantize_acts(x, ldx, t0, t1, qa); });
}

void linear_with(const KernelTable& k, const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool) {
  SICKLE_CHECK(w.data != nullptr, "{}: no data", w.name);
  if (n <= 0 || w.rows <= 0) return;
  if (w.rows * w.cols * n < kMinParallelWork) pool = nullptr;
  if (w.encoding == WeightEncoding::kInt4Group) {
    if (!int4_supported(w)) return linear_scalar(w, x, n, y, pool);
    thread_local ScratchBuffer buf;  // the caller's: workers only read it during parallel_for
    QuantizedActs qa;
    quantize_acts(k, x, w.cols, n, w.cols, buf, qa, pool);
    parallel_for(pool, w.rows, [&](int64_t r0, int64_t r1, int) { k.linear_int4(w, qa, r0, r1, y, w.rows); });
    return;
  }
  parallel_for(pool, w.rows, [&](int64_t r0, int64_t r1, int) { k.linear_dense(w, x, w.cols, n, r0, r1, y, w.rows); });
}

void linear(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool) {
  linear_with(kernel_table(), w, x, n, y, pool);
}

}  // namespace sickle
