#include "model/attention.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "kernels/dispatch.h"
#include "kernels/linear.h"
#include "runtime/thread_pool.h"

namespace sickle {

namespace {

// Blocked prefill for items of at least kMinBlockTokens queries, in blocks of kBlock queries;
// beyond kMaxBlockScores floats of scores per block (very long contexts) the per-token
// strategies run instead.
constexpr int64_t kMinBlockTokens = 4, kBlock = 32, kMaxBlockScores = int64_t(4) << 20;
// Rows (heads x queries) a blocked prefill task takes together: enough for the AMX products to
// pay for packing the cache (kernels_amx.cpp f32_tiles_pay), few enough that the scores of a
// task stay in L2 at short contexts.
constexpr int64_t kBlockRows = 256;
// Batched decode handles at most this many tokens at once (its buffers hold
// n_heads x (2 kv_lora + rope) floats per token: 1.1 MiB for DeepSeek-V3's 128 heads).
constexpr int64_t kDecodeWindow = 64;

void grow(LargeVector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
}

}  // namespace

const char* strategy_name(AttentionStrategy s) {
  switch (s) {
    case AttentionStrategy::kBlockedPrefill: return "blocked prefill";
    case AttentionStrategy::kBatchedDecode: return "batched decode";
    case AttentionStrategy::kDequantizingKvb: return "dequantizing kv_b";
  }
  return "?";
}

AttentionStrategy choose_strategy(const KvbForms& kv_b, int64_t past, int64_t n) {
  // Blocked prefill: a prefill chunk's queries attend as matrix products over blocks of 32
  // queries (the tile kernels run them; AMX at prefill sizes). It multiplies by kv_b in f32, so
  // it needs the f32 copy (ModelOptions::kv_b_copy_max_bytes); under 4 queries the products
  // are too thin to beat the per-token strategies, and past 4 Mi floats of scores per block
  // (contexts over 128 Ki tokens) the block's scratch would outgrow the caches.
  if (kv_b.f32 && n >= kMinBlockTokens && (past + n) * kBlock <= kMaxBlockScores)
    return AttentionStrategy::kBlockedPrefill;
  // Batched decode: every other token attends on its own, but kv_b's two halves are applied to
  // all of them in one product per head, so kv_b is read once per step (not once per
  // sequence). The gemm kernels read kv_b as f32 or, as stored, as bf16.
  if (kv_b.f32 || kv_b.bf16) return AttentionStrategy::kBatchedDecode;
  // Dequantizing kv_b: kv_b in an encoding no gemm kernel reads (fp8 too big for an f32 copy,
  // as DeepSeek-V3's 32 MiB per layer; or any encoding under exact_kernels without the copy):
  // per (token, head), its rows dequantized as they are used.
  return AttentionStrategy::kDequantizingKvb;
}

Attention::Attention(const MlaDims& dims, int n_threads)
    : d_(dims), thread_scratch_(size_t(std::max(n_threads, 1))) {
  for (ThreadScratch& t : thread_scratch_) {
    t.row.resize(size_t(d_.kv_lora));
    t.o_lat.resize(size_t(d_.kv_lora));
    t.qcat.resize(size_t(d_.row()));
  }
}

void Attention::run(const KernelTable& kt, ThreadPool& pool, const KvbForms& kv_b,
                    std::span<const AttentionItem> items, const float* q, float* out, float scale,
                    const AttentionStrategy* force) {
  SICKLE_CHECK(pool.size() <= int(thread_scratch_.size()), "attention scratch for {} threads, pool has {}",
               thread_scratch_.size(), pool.size());
  const int64_t nh = d_.n_heads;
  q_ = q;
  out_ = out;
  // Blocked items: one task per (block of kBlock queries, group of heads); a group has up to
  // kBlockRows / kBlock heads (fewer when the scores would pass kMaxBlockScores). Every other
  // item's tokens go to the per-token strategy (the same for all of them: it depends on kv_b).
  block_tasks_.clear();
  tokens_.clear();
  AttentionStrategy per_token = AttentionStrategy::kBatchedDecode;
  for (size_t i = 0; i < items.size(); ++i) {
    const AttentionItem& it = items[i];
    const AttentionStrategy s = force ? *force : choose_strategy(kv_b, it.past, it.n);
    if (s == AttentionStrategy::kBlockedPrefill) {
      SICKLE_CHECK(kv_b.f32 != nullptr, "blocked prefill attention needs an f32 kv_b");
      const int64_t g = std::clamp<int64_t>(
          std::min(kBlockRows / kBlock, kMaxBlockScores / ((it.past + it.n) * kBlock)), 1, nh);
      for (int64_t j0 = 0; j0 < it.n; j0 += kBlock)
        for (int64_t h0 = 0; h0 < nh; h0 += g)
          block_tasks_.push_back({int32_t(i), j0, h0, std::min(nh, h0 + g)});
      continue;
    }
    SICKLE_CHECK(tokens_.empty() || s == per_token, "attention items need different per-token strategies");
    per_token = s;
    for (int64_t j = 0; j < it.n; ++j) tokens_.push_back({it.t0 + j, it.cache, it.past + j + 1});
  }
  if (!block_tasks_.empty())
    pool.parallel_for_dynamic(int64_t(block_tasks_.size()), 1, [&](int64_t b, int64_t e, int tid) {
      for (int64_t task = b; task < e; ++task) {
        const BlockTask& bt = block_tasks_[size_t(task)];
        const AttentionItem& it = items[size_t(bt.item)];
        blocked_prefill(kt, thread_scratch_[size_t(tid)], it, kv_b.f32, bt.h0, bt.h1, bt.j0,
                        std::min(kBlock, it.n - bt.j0), scale);
      }
    });
  if (tokens_.empty()) return;
  if (per_token == AttentionStrategy::kBatchedDecode) {
    SICKLE_CHECK(kv_b.f32 || kv_b.bf16, "batched decode attention needs an f32 or bf16 kv_b");
    const int64_t n_tok = int64_t(tokens_.size());
    for (int64_t w0 = 0; w0 < n_tok; w0 += kDecodeWindow)
      batched_decode(kt, pool, kv_b, w0, std::min(n_tok, w0 + kDecodeWindow), scale);
    return;
  }
  SICKLE_CHECK(kv_b.view != nullptr, "dequantizing kv_b attention needs kv_b's weight");
  dequantizing_kvb(kt, pool, *kv_b.view, scale);
}

// The attention of heads [h0, h1) for the nq queries [j0, j0 + nq) of one item, as matrix
// products over the whole block, the rows r = (head g, query j) of all the group's heads
// together so that each product is big enough for the tile kernels (AMX packs each operand
// once per product):
//   Q [r, kvl + rope] = [q_nope_g,j W_UK_g | q_pe_g,j]         (one product per head)
//   S [r, ctx] = Q cache^T,  P = causal softmax(scale S)      (ctx = past + j0 + nq; query j
//                                                               sees past + j0 + j + 1 positions)
//   O [r, kvl] = P cache[:, :kvl],  out_g [nq, v] = O_g W_UV_g^T   (one product per head)
void Attention::blocked_prefill(const KernelTable& kt, ThreadScratch& t, const AttentionItem& it,
                                const float* kvb32, int64_t h0, int64_t h1, int64_t j0, int64_t nq,
                                float scale) {
  const int64_t nh = d_.n_heads, nope = d_.nope, rope = d_.rope, vd = d_.v, kvl = d_.kv_lora, qk = d_.qk(),
                row = d_.row(), past = it.past + j0, t0 = it.t0 + j0, ctx = past + nq, rows = (h1 - h0) * nq;
  grow(t.qt, rows * row);
  grow(t.st, rows * ctx);
  grow(t.ot, rows * kvl);
  const float* q0 = q_ + t0 * nh * qk;
  for (int64_t h = h0; h < h1; ++h) {
    float* qh = t.qt.data() + (h - h0) * nq * row;
    kt.gemm_nn(q0 + h * qk, nh * qk, kvb32 + h * (nope + vd) * kvl, kvl, qh, row, nq, kvl, nope);
    for (int64_t j = 0; j < nq; ++j)
      std::memcpy(qh + j * row + kvl, q0 + j * nh * qk + h * qk + nope, size_t(rope) * sizeof(float));
  }
  kt.gemm_nt(t.qt.data(), row, it.cache, row, t.st.data(), ctx, rows, ctx, row);
  for (int64_t r = 0; r < rows; ++r) {
    float* pr = t.st.data() + r * ctx;
    const int64_t len = past + r % nq + 1;
    for (int64_t u = 0; u < len; ++u) pr[u] *= scale;
    kt.softmax(pr, len);
    std::fill(pr + len, pr + ctx, 0.0f);
  }
  kt.gemm_nn(t.st.data(), ctx, it.cache, row, t.ot.data(), kvl, rows, kvl, ctx);
  for (int64_t h = h0; h < h1; ++h)
    kt.gemm_nt(t.ot.data() + (h - h0) * nq * kvl, kvl, kvb32 + (h * (nope + vd) + nope) * kvl, kvl,
               out_ + t0 * nh * vd + h * vd, nh * vd, nq, vd, kvl);
}

// The attention of tokens_[w0, w1) one by one, with kv_b's two halves applied to all of them
// at once (each read once per window, not once per token):
//   q_abs [w, h] = q_nope [w, h] W_UK_h          (per head, one product over all the tokens)
//   S [h, ctx] = [q_abs | q_pe] cache^T, P = softmax(scale S), o [h] = P cache[:, :kvl]
//                                                (per token and head group: the group's heads
//                                                share each read of the token's cache)
//   out [w, h] = o [w, h] W_UV_h^T               (per head, one product over all the tokens)
void Attention::batched_decode(const KernelTable& kt, ThreadPool& pool, const KvbForms& kv_b, int64_t w0,
                               int64_t w1, float scale) {
  const int64_t nh = d_.n_heads, nope = d_.nope, rope = d_.rope, vd = d_.v, kvl = d_.kv_lora, qk = d_.qk(),
                row = d_.row(), nw = w1 - w0;
  const uint16_t* kvb16 = kv_b.bf16;
  const float* kvb32 = kv_b.f32;
  grow(dq_, nw * nh * row);
  grow(dlat_, nw * nh * kvl);
  // Runs of consecutive step rows (a decode-only step is one run).
  decode_runs_.clear();
  for (int64_t d = 0; d < nw; ++d) {
    const int64_t t = tokens_[size_t(w0 + d)].t;
    if (!decode_runs_.empty() && decode_runs_.back().t0 + decode_runs_.back().n == t) ++decode_runs_.back().n;
    else decode_runs_.push_back({t, 1, d});
  }
  pool.parallel_for(nh, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h)
      for (const DecodeRun& r : decode_runs_) {
        const float* q = q_ + r.t0 * nh * qk + h * qk;
        float* dq = dq_.data() + (r.d0 * nh + h) * row;
        const int64_t off = h * (nope + vd) * kvl;  // W_UK_h: kv_b rows [h (nope + vd), + nope)
        if (kvb16) kt.gemm_nn_bf16(q, nh * qk, kvb16 + off, kvl, dq, nh * row, r.n, kvl, nope);
        else kt.gemm_nn(q, nh * qk, kvb32 + off, kvl, dq, nh * row, r.n, kvl, nope);
        for (int64_t j = 0; j < r.n; ++j)
          std::memcpy(dq + j * nh * row + kvl, q + j * nh * qk + nope, size_t(rope) * sizeof(float));
      }
  });
  // Long contexts by chunks of positions (each cache row read from memory once per step),
  // short ones by head groups.
  int64_t max_ctx = 0;
  for (int64_t d = 0; d < nw; ++d) max_ctx = std::max(max_ctx, tokens_[size_t(w0 + d)].ctx);
  if (max_ctx >= 2 * kDecodeChunk) {
    decode_by_positions(kt, pool, w0, w1, scale);
  } else {
    decode_by_heads(kt, pool, w0, w1, scale);
  }
  pool.parallel_for(nh, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t r0 = h * (nope + vd) + nope;  // W_UV_h: kv_b rows [r0, r0 + vd)
      WeightView uv;                              // those rows as a bf16 weight of their own
      uv.encoding = WeightEncoding::kBF16;
      uv.rows = vd;
      uv.cols = kvl;
      uv.data = kvb16 ? kvb16 + r0 * kvl : nullptr;
      for (const DecodeRun& r : decode_runs_) {
        const float* o = dlat_.data() + (r.d0 * nh + h) * kvl;
        float* out = out_ + r.t0 * nh * vd + h * vd;
        if (kvb16) linear_strided(kt, uv, o, nh * kvl, r.n, out, nh * vd);
        else kt.gemm_nt(o, nh * kvl, kvb32 + r0 * kvl, kvl, out, nh * vd, r.n, vd, kvl);
      }
    }
  });
}

// The window's tokens by head groups: one per token when there are at least as many tokens as
// threads, else enough groups that a single sequence still uses every thread. Each group reads
// its token's whole cache (twice: scores, then values).
void Attention::decode_by_heads(const KernelTable& kt, ThreadPool& pool, int64_t w0, int64_t w1,
                                float scale) {
  const int64_t nh = d_.n_heads, kvl = d_.kv_lora, row = d_.row(), nw = w1 - w0;
  const int64_t n_groups = std::clamp<int64_t>(pool.size() / nw, 1, nh),
                group = (nh + n_groups - 1) / n_groups;
  pool.parallel_for_dynamic(nw * n_groups, 1, [&](int64_t b, int64_t e, int tid) {
    ThreadScratch& t = thread_scratch_[size_t(tid)];
    for (int64_t task = b; task < e; ++task) {
      const int64_t d = task / n_groups, h0 = (task % n_groups) * group, ng = std::min(nh, h0 + group) - h0;
      const Token& tok = tokens_[size_t(w0 + d)];
      grow(t.st, ng * tok.ctx);
      float* sc = t.st.data();  // [ng, ctx]
      kt.gemm_nt(dq_.data() + (d * nh + h0) * row, row, tok.cache, row, sc, tok.ctx, ng, tok.ctx, row);
      for (int64_t g = 0; g < ng; ++g) {
        float* sg = sc + g * tok.ctx;
        for (int64_t u = 0; u < tok.ctx; ++u) sg[u] *= scale;
        kt.softmax(sg, tok.ctx);
      }
      kt.gemm_nn(sc, tok.ctx, tok.cache, row, dlat_.data() + (d * nh + h0) * kvl, kvl, ng, kvl, tok.ctx);
    }
  });
}

// The window's tokens by chunks of kDecodeChunk positions, every head at once: each cache row
// is read from memory once per step (the chunk's second pass, the values, finds it in L2),
// where head groups read the whole cache once per group and pass. Per chunk c and head h:
// m = max score, P = softmax over the chunk, l = its denominator sum exp(s - m), and
// o = P cache[:, :kvl]; then per head, with M = max_c m_c and a_c = l_c exp(m_c - M):
// out = sum_c a_c o_c / sum_c a_c (softmax over the whole context; only the summation order
// differs from one softmax over all positions).
void Attention::decode_by_positions(const KernelTable& kt, ThreadPool& pool, int64_t w0, int64_t w1,
                                    float scale) {
  const int64_t nh = d_.n_heads, kvl = d_.kv_lora, row = d_.row(), nw = w1 - w0;
  const int64_t part = kvl + 2;  // [m, l, o (kvl)] per head
  int64_t max_chunks = 0;
  for (int64_t d = 0; d < nw; ++d)
    max_chunks = std::max(max_chunks, (tokens_[size_t(w0 + d)].ctx + kDecodeChunk - 1) / kDecodeChunk);
  grow(dpart_, nw * max_chunks * nh * part);
  pool.parallel_for_dynamic(nw * max_chunks, 1, [&](int64_t b, int64_t e, int tid) {
    ThreadScratch& t = thread_scratch_[size_t(tid)];
    for (int64_t task = b; task < e; ++task) {
      const int64_t d = task / max_chunks, c = task % max_chunks;
      const Token& tok = tokens_[size_t(w0 + d)];
      const int64_t u0 = c * kDecodeChunk, len = std::min(tok.ctx - u0, kDecodeChunk);
      if (len <= 0) continue;
      grow(t.st, nh * len);
      float* sc = t.st.data();  // [nh, len]
      const float* rows = tok.cache + u0 * row;
      kt.gemm_nt(dq_.data() + d * nh * row, row, rows, row, sc, len, nh, len, row);
      float* pd = dpart_.data() + task * nh * part;
      for (int64_t h = 0; h < nh; ++h) {
        float* sg = sc + h * len;
        for (int64_t u = 0; u < len; ++u) sg[u] *= scale;
        const SoftmaxStats st = kt.softmax(sg, len);
        pd[h * part] = st.max;      // m_c
        pd[h * part + 1] = st.sum;  // l_c
      }
      // o [nh, kvl] = P [nh, len] rows[:, :kvl], into the part rows (stride part).
      kt.gemm_nn(sc, len, rows, row, pd + 2, part, nh, kvl, len);
    }
  });
  pool.parallel_for(nw * nh, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t d = i / nh, h = i % nh;
      const int64_t n_chunks = (tokens_[size_t(w0 + d)].ctx + kDecodeChunk - 1) / kDecodeChunk;
      const float* p0 = dpart_.data() + (d * max_chunks * nh + h) * part;
      const int64_t stride = nh * part;  // next chunk, same head
      float m = p0[0];
      for (int64_t c = 1; c < n_chunks; ++c) m = std::max(m, p0[c * stride]);
      float* o = dlat_.data() + (d * nh + h) * kvl;
      std::fill(o, o + kvl, 0.0f);
      double den = 0;
      for (int64_t c = 0; c < n_chunks; ++c) {
        const float* pc = p0 + c * stride;
        const float a = pc[1] * std::exp(pc[0] - m);
        den += double(a);
        kt.axpy(a, pc + 2, o, kvl);
      }
      const float inv = float(1.0 / den);
      for (int64_t k = 0; k < kvl; ++k) o[k] *= inv;
    }
  });
}

// Per (token, head), kv_b's rows dequantized as they are used:
//   q_abs = sum_d q_nope[d] W_UK_h[d] (row d of the head's block), scores against whole cache
//   rows [q_abs | q_pe], o_lat = P cache[:, :kvl], out[v] = W_UV_h[v] . o_lat.
void Attention::dequantizing_kvb(const KernelTable& kt, ThreadPool& pool, const WeightView& kv_b,
                                 float scale) {
  const int64_t nh = d_.n_heads, nope = d_.nope, rope = d_.rope, vd = d_.v, kvl = d_.kv_lora, qk = d_.qk(),
                row = d_.row();
  pool.parallel_for(int64_t(tokens_.size()) * nh, [&](int64_t b, int64_t e, int tid) {
    ThreadScratch& t = thread_scratch_[size_t(tid)];
    for (int64_t task = b; task < e; ++task) {
      const Token& tok = tokens_[size_t(task / nh)];
      const int64_t h = task % nh;
      const float* qh = q_ + tok.t * nh * qk + h * qk;
      float* qcat = t.qcat.data();  // [kvl + rope]: q_abs then q_pe, against whole cache rows
      std::fill(qcat, qcat + kvl, 0.0f);
      for (int64_t d = 0; d < nope; ++d) {
        kv_b.dequant_row(h * (nope + vd) + d, t.row.data());
        kt.axpy(qh[d], t.row.data(), qcat, kvl);
      }
      std::memcpy(qcat + kvl, qh + nope, size_t(rope) * sizeof(float));
      grow(t.scores, tok.ctx);
      float* sc = t.scores.data();
      kt.gemv_n(tok.cache, row, tok.ctx, row, qcat, sc);
      for (int64_t u = 0; u < tok.ctx; ++u) sc[u] *= scale;
      kt.softmax(sc, tok.ctx);
      float* o_lat = t.o_lat.data();
      kt.gemv_t(tok.cache, row, tok.ctx, kvl, sc, o_lat);
      for (int64_t v = 0; v < vd; ++v) {
        kv_b.dequant_row(h * (nope + vd) + nope + v, t.row.data());
        out_[tok.t * nh * vd + h * vd + v] = kt.dot(t.row.data(), o_lat, kvl);
      }
    }
  });
}

}  // namespace sickle
