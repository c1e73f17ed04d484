// sickle/model/attention.h — MLA attention over the latent KV cache, in the absorbed form
// (DeepSeek-V2 paper §2.1.2; docs/formats.md §5). The model computes the queries and writes the
// step's cache rows; this module does the rest of the attention of one layer for one step.
//
// Per head h, with W_UK_h = kv_b rows [h (nope + v), h (nope + v) + nope) and W_UV_h the next
// v rows, and per token whose cache holds rows c_s = [latent (kv_lora) | roped key (rope)]:
//   q_abs = q_nope_h W_UK_h                                       [kv_lora]
//   score_s = ([q_abs | q_pe_h] . c_s) * scale                    causal over the cache
//   out_h = W_UV_h (sum_s softmax(score)_s latent_s)              [v]
//
// Three strategies compute it, chosen per item by choose_strategy() (attention.cpp gives the
// reasons): blocked prefill (matrix products over blocks of queries, needs an f32 kv_b),
// batched decode (kv_b's halves applied to all the step's remaining tokens at once, f32 or
// bf16 kv_b) and dequantizing kv_b (kv_b rows dequantized per token and head: any encoding).
// All three give the same numbers up to f32 summation order (attention_test.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "io/weights.h"
#include "runtime/scratch.h"

namespace sickle {

class ThreadPool;
struct KernelTable;

// The attention shapes (ModelConfig's names: num_attention_heads, qk_nope_head_dim,
// qk_rope_head_dim, v_head_dim, kv_lora_rank).
struct MlaDims {
  int64_t n_heads = 0, nope = 0, rope = 0, v = 0, kv_lora = 0;
  int64_t qk() const { return nope + rope; }      // query width per head
  int64_t row() const { return kv_lora + rope; }  // cache row width
};

// kv_b [n_heads * (nope + v), kv_lora] in the forms the caller has: `view` always (as stored),
// `f32` when an f32 copy exists, `bf16` when it is stored as bf16 and may be read as such.
struct KvbForms {
  const WeightView* view = nullptr;
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
};

// One item of the step: n query tokens at step rows [t0, t0 + n), cache positions
// [past, past + n) of a cache [>= past + n, row] whose rows up to past + n are written.
struct AttentionItem {
  const float* cache = nullptr;
  int64_t past = 0, n = 0, t0 = 0;
};

enum class AttentionStrategy { kBlockedPrefill, kBatchedDecode, kDequantizingKvb };
const char* strategy_name(AttentionStrategy s);

// The strategy for an item of n tokens after past cached ones, given the kv_b forms.
AttentionStrategy choose_strategy(const KvbForms& kv_b, int64_t past, int64_t n);

class Attention {
 public:
  // Scratch for a pool of n_threads threads (grows with the context, never shrinks).
  Attention(const MlaDims& dims, int n_threads);

  // out [T, n_heads * v] (rows of the items' tokens overwritten) from q [T, n_heads * qk]
  // (per head [q_nope | roped q_pe]) for every item, each by choose_strategy() or, when
  // `force` is given, by that strategy (tests; it must be able to run with kv_b's forms).
  void run(const KernelTable& kt, ThreadPool& pool, const KvbForms& kv_b,
           std::span<const AttentionItem> items, const float* q, float* out, float scale,
           const AttentionStrategy* force = nullptr);

 private:
  struct Token {
    int64_t t;           // step row
    const float* cache;  // its item's cache
    int64_t ctx;         // positions it attends to (causal: up to and including itself)
  };
  struct BlockTask {
    int32_t item;
    int64_t j0, h0, h1;  // queries [j0, j0 + kBlock) of the item, heads [h0, h1)
  };
  struct DecodeRun {
    int64_t t0, n, d0;  // step rows [t0, t0 + n) are window rows [d0, d0 + n)
  };
  // Per pool thread (grow-only): qt, st, ot: blocked prefill; st: batched decode; row, qcat,
  // o_lat, scores: dequantizing kv_b.
  struct ThreadScratch {
    LargeVector<float> qt, st, ot;
    LargeVector<float> row, qcat, o_lat, scores;
  };

  void blocked_prefill(const KernelTable& kt, ThreadScratch& ts, const AttentionItem& it, const float* kvb32,
                       int64_t h0, int64_t h1, int64_t j0, int64_t nq, float scale);
  void batched_decode(const KernelTable& kt, ThreadPool& pool, const KvbForms& kv_b, int64_t w0, int64_t w1,
                      float scale);
  // batched_decode's P cache step (dq_ -> dlat_) by head groups or by chunks of positions.
  void decode_by_heads(const KernelTable& kt, ThreadPool& pool, int64_t w0, int64_t w1, float scale);
  void decode_by_positions(const KernelTable& kt, ThreadPool& pool, int64_t w0, int64_t w1, float scale);
  // Positions per chunk of decode_by_positions: 256 cache rows of Kimi/DeepSeek width (576
  // f32) are 576 KiB, in L2 for the chunk's second pass. Contexts of 2 chunks or more use it.
  static constexpr int64_t kDecodeChunk = 256;
  void dequantizing_kvb(const KernelTable& kt, ThreadPool& pool, const WeightView& kv_b, float scale);

  MlaDims d_;
  std::vector<ThreadScratch> thread_scratch_;
  std::vector<BlockTask> block_tasks_;  // this step's blocked prefill work
  std::vector<Token> tokens_;           // this step's tokens outside blocked prefill
  std::vector<DecodeRun> decode_runs_;  // batched decode: runs of consecutive step rows
  LargeVector<float> dq_;               // batched decode: [window, n_heads, row] [q_nope W_UK | q_pe]
  LargeVector<float> dlat_;             // batched decode: [window, n_heads, kv_lora] P cache
  // batched decode over long contexts: per (token, chunk of positions) and head, the chunk's
  // max score, its softmax denominator and its softmax-weighted latent [kv_lora]
  LargeVector<float> dpart_;
  const float* q_ = nullptr;  // run()'s q and out, for the strategies
  float* out_ = nullptr;
};

}  // namespace sickle
