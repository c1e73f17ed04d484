// sickle/kernels/moe.h — a step's routed experts, grouped by expert, in three parallel regions.
//
//   out(t) += scale * sum_s weight[t,s] * down(silu(gate x_t) * up x_t)   for expert[t,s]
//
// Tokens are bucketed by expert (counting sort) so each chosen expert's weights are read once
// per step whatever the number of its tokens; unchosen experts cost nothing. Work items are
// (expert, chunk of output rows: 256 for experts of 16+ tokens, else about 4 items per thread,
// 64-512 rows), heaviest experts first (tokens x weight bytes), handed out dynamically, so a
// step whose tokens crowd on one expert still keeps every thread busy. The activations are
// int8-quantized once per token for int4 weights (kernels/linear.h for the accuracy bound) and the
// gate/up results of a chunk get their SiLU product right away (no extra pass).
// Nothing allocates once MoeScratch has grown to the step's size.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "io/weights.h"
#include "runtime/scratch.h"

namespace sickle {

class ThreadPool;
struct KernelTable;

struct ExpertMlp {
  WeightView gate;  // [inter, hidden]
  WeightView up;    // [inter, hidden]
  WeightView down;  // [hidden, inter]
};

// Grow-only buffers reused across steps (one per model, not shared between concurrent calls).
struct MoeScratch {
  ScratchBuffer qx, qg, xg, gu, qh, y, px, ph;  // gu: [N, I] SiLU products; px, ph: PackedBf16 of x / them
  ScratchBuffer bx, bh, rx, rh;  // bf16_acts: inputs / SiLU products as bf16 pairs, and rounded
  std::vector<std::unique_ptr<ScratchBuffer>> u_thread;  // per pool thread: one work item's up products
  std::vector<int32_t> count, start, pos, order;  // per expert / per entry bookkeeping
  std::vector<double> cost;                       // per expert: tokens x weight bytes
  struct Item {
    int32_t e, r0, r1;
  };
  std::vector<Item> items;
  // Bound on y, the down products of one band of output columns ([entries, band] f32): larger
  // steps run the down products and their combine in several bands (bands of >= 512 columns, so
  // a step of > max_y_bytes / 2 KiB entries may exceed it). Results do not depend on it.
  size_t max_y_bytes = size_t(16) << 20;
};

// x [n_tokens, hidden]; expert_of / weight [n_tokens, k] (expert -1 = slot unused);
// out [n_tokens, hidden] is accumulated into (+=); expert_out, when not null, receives each
// (token, slot)'s raw expert output: [n_tokens * k, hidden] (rows of unused slots untouched).
// Every kernel comes from table kt (kernels/dispatch.h); the overload without it uses
// kernel_table(), the best table for this CPU. bf16_acts: bf16 weights take their inputs rounded
// to bf16 (kernels/linear.h linear_bf16_acts; ModelOptions::bf16_activations).
void moe_experts(const KernelTable& kt, std::span<const ExpertMlp> experts, const float* x, int64_t n_tokens,
                 int64_t k, const int32_t* expert_of, const float* weight, float scale, float* out,
                 float* expert_out, MoeScratch& scratch, ThreadPool* pool, bool bf16_acts = false);
void moe_experts(std::span<const ExpertMlp> experts, const float* x, int64_t n_tokens, int64_t k,
                 const int32_t* expert_of, const float* weight, float scale, float* out, float* expert_out,
                 MoeScratch& scratch, ThreadPool* pool);

// One MLP over n tokens: y [n, hidden] = down(silu(gate x) * up x) (overwritten). For dense
// layers and shared experts: the same fused path with every token in one bucket.
void expert_mlp(const KernelTable& kt, const ExpertMlp& m, const float* x, int64_t n, float* y,
                MoeScratch& scratch, ThreadPool* pool, bool bf16_acts = false);
void expert_mlp(const ExpertMlp& m, const float* x, int64_t n, float* y, MoeScratch& scratch,
                ThreadPool* pool);

// The specification of both: per token and slot, linear_scalar three times and silu_mul (kt's
// silu_mul and axpy; the overload without kt: kernel_table()'s).
void moe_experts_scalar(const KernelTable& kt, std::span<const ExpertMlp> experts, const float* x,
                        int64_t n_tokens, int64_t k, const int32_t* expert_of, const float* weight,
                        float scale, float* out, float* expert_out, bool bf16_acts = false);
void moe_experts_scalar(std::span<const ExpertMlp> experts, const float* x, int64_t n_tokens, int64_t k,
                        const int32_t* expert_of, const float* weight, float scale, float* out,
                        float* expert_out);

}  // namespace sickle
