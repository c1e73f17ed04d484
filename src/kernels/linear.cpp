#include "kernels/linear.h"

#include <vector>

#include "base/error.h"
#include "runtime/thread_pool.h"

namespace sickle {

void linear_scalar(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool) {
  SICKLE_CHECK(w.data != nullptr, "{}: no data", w.name);
  parallel_for(pool, w.rows, [&](int64_t r0, int64_t r1, int) {
    std::vector<float> row(size_t(w.cols));
    for (int64_t r = r0; r < r1; ++r) {
      w.dequant_row(r, row.data());
      for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * w.cols;
        float s = 0;
        for (int64_t c = 0; c < w.cols; ++c) s += row[c] * xt[c];
        y[t * w.rows + r] = s;
      }
    }
  });
}

void linear(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool) {
  linear_scalar(w, x, n, y, pool);
}

}  // namespace sickle
