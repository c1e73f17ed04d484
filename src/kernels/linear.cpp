#include "kernels/linear.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "base/numeric.h"
#include "kernels/dispatch.h"
#include "runtime/scratch.h"
#include "runtime/thread_pool.h"

namespace sickle {

namespace {

// Below this many multiply-adds a parallel_for costs more than it saves (wake-up ~ microseconds).
constexpr int64_t kMinParallelWork = int64_t(1) << 16;

// Rows split across the pool in whole 16-row stripes (the AMX tiles' height; the last range
// takes the remainder), so no thread ends on a partial stripe.
template <class F>
void parallel_rows(ThreadPool* pool, int64_t rows, F&& fn) {
  const int64_t n_stripes = (rows + 15) / 16;
  parallel_for(pool, n_stripes,
               [&](int64_t s0, int64_t s1, int tid) { fn(s0 * 16, std::min(rows, s1 * 16), tid); });
}

bool int4_supported(const WeightView& w) {
  return w.group_size >= 32 && w.group_size % 32 == 0 && w.cols % w.group_size == 0 &&
         w.scale_bf16 != nullptr;
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

void quantize_acts(const KernelTable& k, const float* x, int64_t ldx, int64_t n, int64_t cols,
                   ScratchBuffer& buf, QuantizedActs& qa, ThreadPool* pool) {
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

size_t PackedBf16::bytes_for(int64_t n, int64_t cols) {
  return 3 * ScratchArena::padded(size_t(cols / 2 * n_pad_for(n)) * sizeof(uint32_t));
}

bool uses_packed_bf16(const KernelTable& k, const WeightView& w, int64_t n) {
  if (k.linear_bf16_packed == nullptr || w.encoding != WeightEncoding::kBF16 || w.cols % 32 != 0)
    return false;
  const bool small = w.rows * w.cols * 2 <= k.dense_small_bytes;
  return n >= (small ? k.dense_packed_min_n_small : k.dense_packed_min_n);
}

void pack_bf16(const KernelTable& k, const float* x, int64_t ldx, int64_t n, int64_t cols, ScratchBuffer& buf,
               PackedBf16& pa, ThreadPool* pool) {
  pa.n = n;
  pa.cols = cols;
  pa.n_pad = PackedBf16::n_pad_for(n);
  ScratchArena arena(buf, PackedBf16::bytes_for(n, cols));
  for (uint32_t*& p : pa.part) p = arena.alloc<uint32_t>(size_t(cols / 2 * pa.n_pad));
  // Whole groups of 16 token columns, the padding included (the packer writes its zeros).
  if (n * cols < kMinParallelWork) pool = nullptr;
  parallel_for(pool, pa.n_pad / 16,
               [&](int64_t g0, int64_t g1, int) { k.pack_bf16(x, ldx, g0 * 16, g1 * 16, pa); });
}

namespace {

// A dense (f32 / bf16 / f16 / fp8) weight against x [n, ldx] into y [n, ldy]: the packed bf16
// tile kernel where the table has it and n is worth packing, else the table's dense kernel;
// rows split across the pool (none: on the calling thread).
void dense_with(const KernelTable& k, const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y,
                int64_t ldy, ThreadPool* pool) {
  if (uses_packed_bf16(k, w, n)) {
    thread_local ScratchBuffer buf;  // the caller's: workers only read it during parallel_for
    PackedBf16 pa;
    pack_bf16(k, x, ldx, n, w.cols, buf, pa, pool);
    parallel_rows(pool, w.rows,
                  [&](int64_t r0, int64_t r1, int) { k.linear_bf16_packed(w, pa, 0, n, r0, r1, y, ldy); });
    return;
  }
  parallel_rows(pool, w.rows,
                [&](int64_t r0, int64_t r1, int) { k.linear_dense(w, x, ldx, n, r0, r1, y, ldy); });
}

}  // namespace

void linear_with(const KernelTable& k, const WeightView& w, const float* x, int64_t n, float* y,
                 ThreadPool* pool) {
  SICKLE_CHECK(w.data != nullptr, "{}: no data", w.name);
  if (n <= 0 || w.rows <= 0) return;
  if (w.rows * w.cols * n < kMinParallelWork) pool = nullptr;
  if (w.encoding == WeightEncoding::kInt4Group) {
    if (!int4_supported(w)) return linear_scalar(w, x, n, y, pool);
    thread_local ScratchBuffer buf;  // the caller's: workers only read it during parallel_for
    QuantizedActs qa;
    quantize_acts(k, x, w.cols, n, w.cols, buf, qa, pool);
    parallel_rows(pool, w.rows,
                  [&](int64_t r0, int64_t r1, int) { k.linear_int4(w, qa, r0, r1, y, w.rows); });
    return;
  }
  dense_with(k, w, x, w.cols, n, y, w.rows, pool);
}

const uint32_t* bf16_pairs(const float* x, int64_t n, int64_t cols, ScratchBuffer& buf, ThreadPool* pool) {
  const int64_t ldp = cols / 2;
  auto* xp = static_cast<uint32_t*>(buf.get(size_t(n * ldp) * sizeof(uint32_t)));
  parallel_for(n * cols < kMinParallelWork ? nullptr : pool, n, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < ldp; ++j)
        xp[t * ldp + j] =
            uint32_t(f32_to_bf16(x[t * cols + 2 * j])) | uint32_t(f32_to_bf16(x[t * cols + 2 * j + 1])) << 16;
  });
  return xp;
}

const float* bf16_rounded(const float* x, int64_t n, int64_t cols, ScratchBuffer& buf, ThreadPool* pool) {
  auto* xr = static_cast<float*>(buf.get(size_t(n * cols) * sizeof(float)));
  parallel_for(n * cols < kMinParallelWork ? nullptr : pool, n, [&](int64_t t0, int64_t t1, int) {
    for (int64_t i = t0 * cols; i < t1 * cols; ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
  });
  return xr;
}

void linear_bf16_acts_scalar(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool) {
  if (w.encoding != WeightEncoding::kBF16) return linear_scalar(w, x, n, y, pool);
  thread_local ScratchBuffer buf;  // the caller's (moe_experts_scalar calls this per token and slot)
  linear_scalar(w, bf16_rounded(x, n, w.cols, buf, pool), n, y, pool);
}

void linear_bf16_acts(const KernelTable& k, const WeightView& w, const float* x, int64_t n, float* y,
                      ThreadPool* pool) {
  if (w.encoding != WeightEncoding::kBF16) return linear_with(k, w, x, n, y, pool);
  SICKLE_CHECK(w.data != nullptr, "{}: no data", w.name);
  if (n <= 0 || w.rows <= 0) return;
  if (w.rows * w.cols * n < kMinParallelWork) pool = nullptr;
  thread_local ScratchBuffer buf;  // the caller's: workers only read it during parallel_for
  if (k.linear_bf16_dot != nullptr && w.cols % 32 == 0) {
    const uint32_t* xp = bf16_pairs(x, n, w.cols, buf, pool);
    parallel_rows(pool, w.rows, [&](int64_t r0, int64_t r1, int) {
      k.linear_bf16_dot(w, xp, w.cols / 2, n, r0, r1, y, w.rows);
    });
    return;
  }
  dense_with(k, w, bf16_rounded(x, n, w.cols, buf, pool), w.cols, n, y, w.rows, pool);
}

void linear_strided(const KernelTable& k, const WeightView& w, const float* x, int64_t ldx, int64_t n,
                    float* y, int64_t ldy) {
  SICKLE_CHECK(w.data != nullptr && w.encoding != WeightEncoding::kInt4Group,
               "{}: linear_strided takes dense weights", w.name);
  if (n <= 0 || w.rows <= 0) return;
  dense_with(k, w, x, ldx, n, y, ldy, nullptr);
}

void linear_strided(const WeightView& w, const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy) {
  linear_strided(kernel_table(), w, x, ldx, n, y, ldy);
}

void linear(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool* pool) {
  linear_with(kernel_table(), w, x, n, y, pool);
}

}  // namespace sickle
