#include "kernels/moe.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "kernels/dispatch.h"
#include "kernels/linear.h"
#include "runtime/thread_pool.h"

namespace sickle {

namespace {

// Output rows per work item of an expert with fewer than kWideTokens tokens (decode, small
// batches): each item streams its rows once from memory and starts that stream cold (the
// kernels' prefetch distance not yet covered, the hardware prefetchers untrained), so items
// are as long as the thread count allows: about 4 items per thread over the call's experts,
// between kMinRowChunk and kMaxRowChunk rows. mini's decode MoE layer (8 experts of 1024 x
// 2048 int4, 2 threads, kernels_bench moe_mini/T1/cold): 64-row items 22 GB/s, 512-row items
// 30-38 GB/s.
constexpr int32_t kMinRowChunk = 64;
constexpr int32_t kMaxRowChunk = 512;
constexpr int64_t kItemsPerThread = 4;
int32_t narrow_row_chunk(int64_t total_rows, int threads) {
  const int64_t c = total_rows / (kItemsPerThread * std::max(threads, 1)) / kMinRowChunk * kMinRowChunk;
  return int32_t(std::clamp<int64_t>(c, kMinRowChunk, kMaxRowChunk));
}
// Experts with this many tokens or more take kWideRowChunk rows per item: their kernels (AMX)
// lay out the activations and load the tile configuration once per call, which for 64 rows
// cost about as much as the tile products (perf annotate of a 256-token mini prefill).
constexpr int64_t kWideTokens = 16;
constexpr int32_t kWideRowChunk = 256;
// Down-product bands (moe_experts phase B) are whole multiples of this many columns (the widest
// row chunk, so a band's items split its rows as the whole would).
constexpr int64_t kBandAlign = 512;

bool runs_int4(const WeightView& w) {
  return w.encoding == WeightEncoding::kInt4Group && w.group_size >= 32 && w.group_size % 32 == 0 &&
         w.cols % w.group_size == 0 && w.scale_bf16 != nullptr;
}

QuantizedActs rows_of(const QuantizedActs& qa, int64_t p0, int64_t n) {
  QuantizedActs s = qa;
  s.n = n;
  s.q += p0 * qa.q_stride();
  s.d += p0 * qa.dm_stride();
  s.m += p0 * qa.dm_stride();
  return s;
}

// Rows of the QuantizedActs `src` gathered in the order `order[p]` (token of bucket entry p).
void gather_quantized(const QuantizedActs& src, const int32_t* token_of, int64_t n, ScratchBuffer& buf,
                      QuantizedActs& dst) {
  dst = src;
  dst.n = n;
  ScratchArena arena(buf, QuantizedActs::bytes_for(n, src.cols));
  dst.q = arena.alloc<int8_t>(size_t(n * src.q_stride()));
  dst.d = arena.alloc<float>(size_t(n * src.dm_stride()));
  dst.m = arena.alloc<float>(size_t(n * src.dm_stride()));
  for (int64_t p = 0; p < n; ++p) {
    int64_t t = token_of[p];
    std::memcpy(dst.q + p * src.q_stride(), src.q + t * src.q_stride(), size_t(src.q_stride()));
    std::memcpy(dst.d + p * src.dm_stride(), src.d + t * src.dm_stride(),
                size_t(src.dm_stride()) * sizeof(float));
    std::memcpy(dst.m + p * src.dm_stride(), src.m + t * src.dm_stride(),
                size_t(src.dm_stride()) * sizeof(float));
  }
}

// Whether a bf16 weight runs on bf16 pairs (bf16_acts on a table with linear_bf16_dot).
bool runs_bf16_dot(const KernelTable& kt, const WeightView& w, bool bf16_acts) {
  return bf16_acts && kt.linear_bf16_dot != nullptr && w.encoding == WeightEncoding::kBF16 &&
         w.cols % 32 == 0;
}

// y0[j * ldy + r] (j < n, r in [r0, r1)) for the n tokens of one bucket, entries p0..p0+n-1:
// int4 weights read the quantized rows, the rest the f32 rows xf (ld = the input width). With bf16_acts, bf16
// weights read the same rows as bf16 pairs xp (linear_bf16_dot) or rounded to bf16 (xr; pb is then packed
// from them). pb (when packed) holds the same rows as xf (bf16_acts: xr) for the AMX bf16 kernel.
void run_rows(const KernelTable& kt, const WeightView& w, const QuantizedActs* q, const float* xf,
              const float* xr, const PackedBf16* pb, const uint32_t* xp, bool bf16_acts, int64_t p0,
              int64_t n, int64_t r0, int64_t r1, float* y0, int64_t ldy) {
  if (runs_int4(w)) return kt.linear_int4(w, rows_of(*q, p0, n), r0, r1, y0, ldy);
  if (runs_bf16_dot(kt, w, bf16_acts))
    return kt.linear_bf16_dot(w, xp + p0 * (w.cols / 2), w.cols / 2, n, r0, r1, y0, ldy);
  if (pb && uses_packed_bf16(kt, w, n)) return kt.linear_bf16_packed(w, *pb, p0, n, r0, r1, y0, ldy);
  const float* x = bf16_acts && w.encoding == WeightEncoding::kBF16 ? xr : xf;
  kt.linear_dense(w, x + p0 * w.cols, w.cols, n, r0, r1, y0, ldy);
}

}  // namespace

void moe_experts(const KernelTable& kt, std::span<const ExpertMlp> experts, const float* x, int64_t n_tokens,
                 int64_t k, const int32_t* expert_of, const float* weight, float scale, float* out,
                 float* expert_out, MoeScratch& s, ThreadPool* pool, bool bf16_acts) {
  const int64_t E = int64_t(experts.size()), T = n_tokens;
  if (T <= 0 || E == 0 || k <= 0) return;

  // Bucket (token, slot) entries by expert: order[p] = entry, pos[entry] = p.
  s.count.assign(size_t(E), 0);
  for (int64_t i = 0; i < T * k; ++i) {
    int32_t e = expert_of[i];
    if (e < 0) continue;
    SICKLE_CHECK(e < E, "expert {} of {}", e, E);
    s.count[size_t(e)]++;
  }
  s.start.assign(size_t(E) + 1, 0);
  for (int64_t e = 0; e < E; ++e) s.start[size_t(e) + 1] = s.start[size_t(e)] + s.count[size_t(e)];
  const int64_t N = s.start[size_t(E)];
  if (N == 0) return;
  s.pos.assign(size_t(T * k), -1);
  s.order.resize(size_t(N) * 2);  // [N] entries, then [N] their tokens
  {
    std::vector<int32_t>& fill = s.count;  // reuse as per-expert fill cursor, restored below
    for (int64_t e = 0; e < E; ++e) fill[size_t(e)] = s.start[size_t(e)];
    for (int64_t i = 0; i < T * k; ++i) {
      int32_t e = expert_of[i];
      if (e < 0) continue;
      int32_t p = fill[size_t(e)]++;
      s.pos[size_t(i)] = p;
      s.order[size_t(p)] = int32_t(i);
      s.order[size_t(N + p)] = int32_t(i / k);
    }
    for (int64_t e = 0; e < E; ++e) fill[size_t(e)] = s.start[size_t(e) + 1] - s.start[size_t(e)];
  }
  const int32_t* token_of = s.order.data() + N;

  // Shapes and which input forms are needed.
  int64_t H = -1, I = -1;
  bool need_q_in = false, need_f_in = false, need_q_mid = false, pack_in = false, pack_mid = false;
  bool pairs_in = false, pairs_mid = false, round_in = false, round_mid = false;  // bf16_acts
  for (int64_t e = 0; e < E; ++e) {
    if (s.count[size_t(e)] == 0) continue;
    const ExpertMlp& m = experts[size_t(e)];
    if (H < 0) {
      H = m.gate.cols;
      I = m.gate.rows;
    }
    SICKLE_CHECK(m.gate.cols == H && m.up.cols == H && m.gate.rows == I && m.up.rows == I &&
                     m.down.rows == H && m.down.cols == I,
                 "expert {}: shapes gate [{}, {}] up [{}, {}] down [{}, {}]", e, m.gate.rows, m.gate.cols,
                 m.up.rows, m.up.cols, m.down.rows, m.down.cols);
    (runs_int4(m.gate) ? need_q_in : need_f_in) = true;
    (runs_int4(m.up) ? need_q_in : need_f_in) = true;
    need_q_mid = need_q_mid || runs_int4(m.down);
    const int64_t c = s.count[size_t(e)];
    pack_in = pack_in || uses_packed_bf16(kt, m.gate, c) || uses_packed_bf16(kt, m.up, c);
    pack_mid = pack_mid || uses_packed_bf16(kt, m.down, c);
    if (bf16_acts) {
      // bf16 weights on linear_bf16_dot read bf16 pairs; any other bf16 weight reads a copy of
      // the rows rounded to bf16 (and the AMX packing is made from it).
      for (const WeightView* w : {&m.gate, &m.up})
        if (w->encoding == WeightEncoding::kBF16) (runs_bf16_dot(kt, *w, true) ? pairs_in : round_in) = true;
      if (m.down.encoding == WeightEncoding::kBF16)
        (runs_bf16_dot(kt, m.down, true) ? pairs_mid : round_mid) = true;
    }
  }

  // Inputs in bucket order: int8 (quantized once per token, then gathered) and/or f32.
  QuantizedActs qg{}, qh{};
  float* xg = nullptr;
  if (need_q_in) {
    QuantizedActs qx;
    quantize_acts(kt, x, H, T, H, s.qx, qx, pool);
    gather_quantized(qx, token_of, N, s.qg, qg);
  }
  if (need_f_in) {
    xg = static_cast<float*>(s.xg.get(size_t(N * H) * sizeof(float)));
    for (int64_t p = 0; p < N; ++p)
      std::memcpy(xg + p * H, x + int64_t(token_of[p]) * H, size_t(H) * sizeof(float));
  }
  const uint32_t* xpx = pairs_in ? bf16_pairs(xg, N, H, s.bx, pool) : nullptr;
  const float* xrx = round_in ? bf16_rounded(xg, N, H, s.rx, pool) : nullptr;
  PackedBf16 pbx{}, pbh{};
  if (pack_in) pack_bf16(kt, bf16_acts ? xrx : xg, H, N, H, s.px, pbx, pool);

  // Work items, heaviest experts first (longest-processing-time order for the dynamic split):
  // tokens x bytes per row, so a bf16 expert (a shared expert in the routed call) goes before
  // int4 ones of as many tokens.
  int64_t n_active = 0;
  s.cost.assign(size_t(E), 0.0);
  for (int64_t e = 0; e < E; ++e) {
    if (s.count[size_t(e)] == 0) continue;
    ++n_active;
    const ExpertMlp& m = experts[size_t(e)];
    s.cost[size_t(e)] = double(s.count[size_t(e)]) *
                        double(m.gate.storage_bytes() + m.up.storage_bytes() + m.down.storage_bytes());
  }
  auto build_items = [&](int64_t lo, int64_t hi) {  // output rows [lo, hi) of each active expert
    s.items.clear();
    const int32_t narrow = narrow_row_chunk(n_active * (hi - lo), pool_size(pool));
    for (int64_t e = 0; e < E; ++e)
      if (s.count[size_t(e)] > 0)
        for (int64_t r = lo, chunk = s.count[size_t(e)] >= kWideTokens ? kWideRowChunk : narrow; r < hi;
             r += chunk)
          s.items.push_back({int32_t(e), int32_t(r), int32_t(std::min<int64_t>(r + chunk, hi))});
    std::stable_sort(s.items.begin(), s.items.end(),
                     [&](const MoeScratch::Item& a, const MoeScratch::Item& b) {
                       return s.cost[size_t(a.e)] > s.cost[size_t(b.e)];
                     });
  };

  // Phase A: gate and up rows of each chunk, then silu(g) * u in place of g. The up products of a
  // work item go to its thread's buffer ([n, r1 - r0], cache-sized) and are consumed at once:
  // only g is [N, I]. The kernels write column r of the item's j-th entry at u0[j * cw + r]:
  // u0 = ub + (I - r0) stays inside the buffer (I floats ahead).
  float* g = static_cast<float*>(s.gu.get(size_t(N * I) * sizeof(float)));  // [N, I]
  while (int(s.u_thread.size()) < pool_size(pool)) s.u_thread.push_back(std::make_unique<ScratchBuffer>());
  build_items(0, I);
  parallel_for_dynamic(pool, int64_t(s.items.size()), 1, [&](int64_t b, int64_t e_, int tid) {
    for (int64_t it = b; it < e_; ++it) {
      const MoeScratch::Item& item = s.items[size_t(it)];
      const ExpertMlp& m = experts[size_t(item.e)];
      const int64_t p0 = s.start[size_t(item.e)], n = s.count[size_t(item.e)], cw = item.r1 - item.r0;
      float* ub = static_cast<float*>(s.u_thread[size_t(tid)]->get(size_t(I + n * cw) * sizeof(float)));
      run_rows(kt, m.gate, &qg, xg, xrx, pack_in ? &pbx : nullptr, xpx, bf16_acts, p0, n, item.r0, item.r1,
               g + p0 * I, I);
      run_rows(kt, m.up, &qg, xg, xrx, pack_in ? &pbx : nullptr, xpx, bf16_acts, p0, n, item.r0, item.r1,
               ub + (I - item.r0), cw);
      for (int64_t j = 0; j < n; ++j) {
        float* gj = g + (p0 + j) * I + item.r0;
        kt.silu_mul(gj, ub + I + j * cw, cw, gj);
      }
    }
  });

  // Phase B: down rows over the SiLU products (quantized once per entry when int4).
  if (need_q_mid) quantize_acts(kt, g, I, N, I, s.qh, qh, pool);
  const uint32_t* xph = pairs_mid ? bf16_pairs(g, N, I, s.bh, pool) : nullptr;
  const float* xrh = round_mid ? bf16_rounded(g, N, I, s.rh, pool) : nullptr;
  if (pack_mid) pack_bf16(kt, bf16_acts ? xrh : g, I, N, I, s.ph, pbh, pool);
  // The down products go to y in bands of output columns, each band combined before the next, so
  // y stays under s.max_y_bytes whatever the step's size (a 512-token Kimi prefill's [N, H] f32
  // would be 117 MB, 2048 tokens' 470 MB). Each band is one pass over every expert's rows of it:
  // the weights are still read once per step. Kernels write column c of entry p at
  // ycol[p * bw + c] (c in [c0, c1)): ycol = yb - c0 stays inside the buffer (H floats ahead).
  const int64_t min_band = std::min<int64_t>(H, kBandAlign);
  const int64_t band_fit = int64_t(s.max_y_bytes / sizeof(float)) / N / kBandAlign * kBandAlign;
  const int64_t band = std::min(H, std::max(min_band, band_fit));
  float* ybuf = static_cast<float*>(s.y.get(size_t(N * band + H) * sizeof(float)));
  float* yb = ybuf + H;
  for (int64_t c0 = 0; c0 < H; c0 += band) {
    const int64_t c1 = std::min(H, c0 + band), bw = c1 - c0;
    float* ycol = ybuf + (H - c0);
    build_items(c0, c1);
    parallel_for_dynamic(pool, int64_t(s.items.size()), 1, [&](int64_t b, int64_t e_, int) {
      for (int64_t it = b; it < e_; ++it) {
        const MoeScratch::Item& item = s.items[size_t(it)];
        const int64_t p0 = s.start[size_t(item.e)], n = s.count[size_t(item.e)];
        run_rows(kt, experts[size_t(item.e)].down, &qh, g, xrh, pack_mid ? &pbh : nullptr, xph, bf16_acts, p0,
                 n, item.r0, item.r1, ycol + p0 * bw, bw);
      }
    });

    // Combine per token in slot order (deterministic whatever the thread count and bands).
    parallel_for(N * bw < (int64_t(1) << 15) ? nullptr : pool, T, [&](int64_t t0, int64_t t1, int) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t sl = 0; sl < k; ++sl) {
          const int64_t i = t * k + sl;
          const int32_t p = s.pos[size_t(i)];
          if (p < 0) continue;
          kt.axpy(scale * weight[i], yb + int64_t(p) * bw, out + t * H + c0, bw);
          if (expert_out)
            std::memcpy(expert_out + i * H + c0, yb + int64_t(p) * bw, size_t(bw) * sizeof(float));
        }
    });
  }
}

void moe_experts(std::span<const ExpertMlp> experts, const float* x, int64_t n_tokens, int64_t k,
                 const int32_t* expert_of, const float* weight, float scale, float* out, float* expert_out,
                 MoeScratch& scratch, ThreadPool* pool) {
  moe_experts(kernel_table(), experts, x, n_tokens, k, expert_of, weight, scale, out, expert_out, scratch,
              pool);
}

void expert_mlp(const KernelTable& kt, const ExpertMlp& m, const float* x, int64_t n, float* y,
                MoeScratch& scratch, ThreadPool* pool, bool bf16_acts) {
  if (n <= 0) return;
  std::fill(y, y + n * m.down.rows, 0.0f);
  // One bucket holding every token, weight 1. The routing arrays are small (n entries).
  thread_local std::vector<int32_t> zeros;
  thread_local std::vector<float> ones;
  if (int64_t(zeros.size()) < n) {
    zeros.assign(size_t(n), 0);
    ones.assign(size_t(n), 1.0f);
  }
  moe_experts(kt, std::span<const ExpertMlp>(&m, 1), x, n, 1, zeros.data(), ones.data(), 1.0f, y, nullptr,
              scratch, pool, bf16_acts);
}

void expert_mlp(const ExpertMlp& m, const float* x, int64_t n, float* y, MoeScratch& scratch,
                ThreadPool* pool) {
  expert_mlp(kernel_table(), m, x, n, y, scratch, pool);
}

void moe_experts_scalar(const KernelTable& kt, std::span<const ExpertMlp> experts, const float* x,
                        int64_t n_tokens, int64_t k, const int32_t* expert_of, const float* weight,
                        float scale, float* out, float* expert_out, bool bf16_acts) {
  auto lin = bf16_acts ? linear_bf16_acts_scalar : linear_scalar;
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t sl = 0; sl < k; ++sl) {
      const int64_t i = t * k + sl;
      if (expert_of[i] < 0) continue;
      const ExpertMlp& m = experts[size_t(expert_of[i])];
      const int64_t H = m.gate.cols, I = m.gate.rows;
      std::vector<float> gv(static_cast<size_t>(I)), uv(static_cast<size_t>(I)), yv(static_cast<size_t>(H));
      lin(m.gate, x + t * H, 1, gv.data(), nullptr);
      lin(m.up, x + t * H, 1, uv.data(), nullptr);
      kt.silu_mul(gv.data(), uv.data(), I, gv.data());
      lin(m.down, gv.data(), 1, yv.data(), nullptr);
      kt.axpy(scale * weight[i], yv.data(), out + t * H, H);
      if (expert_out) std::memcpy(expert_out + i * H, yv.data(), size_t(H) * sizeof(float));
    }
}

void moe_experts_scalar(std::span<const ExpertMlp> experts, const float* x, int64_t n_tokens, int64_t k,
                        const int32_t* expert_of, const float* weight, float scale, float* out,
                        float* expert_out) {
  moe_experts_scalar(kernel_table(), experts, x, n_tokens, k, expert_of, weight, scale, out, expert_out);
}

}  // namespace sickle
