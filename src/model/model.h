// sickle/model/model.h — the DeepSeek-V3 / Kimi-K2 forward pass on CPU.
//
// One forward pass serves observe, eval, run and serve. Semantics follow HF modeling_deepseek
// (docs/formats.md §5). Attention always uses the absorbed MLA form, for prefill and decode
// alike (model/attention.h: one entry point, three strategies chosen per item of a step that
// agree up to f32 summation order); the KV cache of a sequence holds, per layer and token, the
// normalized latent c [kv_lora_rank] and the roped key k_pe [qk_rope_head_dim], both f32 (576
// floats = 2304 bytes per token per layer for Kimi/DeepSeek-V3).
//
// Threading: forward() is not reentrant (one caller thread at a time); it uses the model's own
// persistent thread pool. Observer callbacks come from the calling thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "model/hooks.h"
#include "runtime/scratch.h"

namespace sickle {

class ThreadPool;
class Model;
struct KernelTable;

struct ModelOptions {
  int n_threads = 0;              // 0 = all cores
  int64_t max_context = 0;        // 0 = config max_position_embeddings; longer sequences are an error
  int64_t max_step_tokens = 512;  // scratch preallocated for this many tokens per step (grows if exceeded)
  // Use the scalar specification kernels (kernels/linear.h linear_scalar, moe_experts_scalar):
  // slow, but int4 then runs with f32 activations like the reference (the fast int4 kernel
  // quantizes activations to int8, ~0.5% per linear). For golden tests and debugging.
  bool exact_kernels = false;
  // Round activations to bf16 where they meet a bf16 weight (kernels/linear.h linear_bf16_acts):
  // the arithmetic of llama.cpp and of bf16 GPU inference, twice the f32 rate on CPUs with
  // AVX512_BF16. Off: f32 activations, every bf16 product exact. Attention's products over the
  // latent cache and kv_b stay f32 either way.
  bool bf16_activations = false;
  // Steps of up to 16 tokens (decode) run a shared expert of the routed experts' shape in the
  // routed experts' call (one set of parallel regions per MoE layer); off: its own call. Same
  // sums either way; tests compare the two.
  bool fuse_shared_experts = true;
  // The kernel table every step runs on (kernels/dispatch.h); nullptr = kernel_table(), the best
  // this CPU runs. Tests run the model on each of runnable_kernel_tables() through it.
  const KernelTable* kernels = nullptr;
  // An f32 copy of each layer's kv_b is made when it takes at most this many bytes (blocked
  // prefill attention multiplies by it); without it attention reads kv_b as stored (bf16) or
  // dequantizes its rows as it goes (fp8, or any encoding with exact_kernels). 0 = never.
  uint64_t kv_b_copy_max_bytes = uint64_t(64) << 20;
  // Stop forward() with NonFiniteError at the first NaN/Inf in the residual stream (after the
  // embedding, after each layer's attention and MLP/MoE) or in the logits: O(hidden) per token
  // per check, fused into the residual add. Off: non-finite values flow on (eval counts them in
  // the logits itself). The environment variable SICKLE_CHECK_FINITE=0 turns it off too (A/B
  // measurements of its cost on any command).
  bool check_finite = true;
  // Fill the page tables of the weight files at load (MappedFile::prefault) when they take at
  // most 80% of physical memory, so no decode step takes page faults on first-touched weights.
  bool prefault = true;
};

// The KV cache of one sequence: per layer, [n_past, kv_lora_rank + qk_rope_head_dim] f32.
// Capacity grows geometrically when tokens are appended past it (never on most decode steps).
class Sequence {
 public:
  int64_t n_past() const { return n_past_; }
  // Forget everything after the first n_tokens (prefix caching / rollback). n_tokens <= n_past.
  void truncate(int64_t n_tokens);
  int64_t capacity() const { return capacity_; }
  // Bytes of cache currently allocated.
  uint64_t cache_bytes() const;

 private:
  friend class Model;
  friend struct ModelImpl;
  explicit Sequence(const Model* owner, int64_t n_layers, int64_t row);
  void reserve(int64_t n_tokens);
  const Model* owner_ = nullptr;
  int64_t n_past_ = 0, capacity_ = 0, row_ = 0;  // row_ = kv_lora_rank + qk_rope_head_dim
  std::vector<LargeVector<float>> cache_;        // per layer: [capacity, row_]
};

// One item of a step: append `tokens` to `seq` (a prefill chunk or one decode token).
struct StepItem {
  Sequence* seq = nullptr;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every position of the item (else the last only)
  // Empty, or one entry per token: a non-null entry is that token's input row [hidden] instead of
  // its embed_tokens row (Kimi-K2.5's image embeddings at the media placeholders, vision/prompt.h).
  std::span<const float* const> embed_rows = {};
};

// forward() found a NaN or Inf where checked (ModelOptions::check_finite): a NaN/Inf weight or an
// overflow. The step changed no sequence (n_past as before; the cache rows it wrote lie past
// n_past and are overwritten by the next step), so the items not named can simply run again.
class NonFiniteError : public Error {
 public:
  // The first non-finite token of one item of the step: its position in the item's sequence
  // (0-based, counting the tokens already cached) and whether a NaN (else an Inf) was seen there.
  struct Hit {
    size_t item = 0;
    int64_t position = 0;
    bool nan = false;
  };
  // layer: the model layer (il, as in the tensor names), -1 for the embedding and the logits.
  // stage: "embedding", "attention", "mlp", "moe" or "logits". hits: in item order, not empty.
  NonFiniteError(int64_t layer, std::string stage, std::vector<Hit> hits);
  // "layer 3 (moe output): non-finite activation (NaN) at token 17" for one hit.
  std::string describe(const Hit& h) const;
  int64_t layer;
  std::string stage;
  std::vector<Hit> hits;
};

struct ModelImpl;

class Model {
 public:
  // Opens and validates the checkpoint (Checkpoint::open), resolves every weight, builds the
  // RoPE tables, starts the thread pool and preallocates step scratch. Throws sickle::Error.
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const ModelOptions& options = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const;
  const Checkpoint& checkpoint() const;
  ThreadPool& pool();
  int64_t max_context() const;
  int64_t vocab_size() const { return config().vocab_size; }

  // Attach an observer (model/hooks.h); nullptr detaches. Not owned.
  void set_observer(ForwardObserver* obs);
  // Routed experts of layer il that may be chosen (allowed.size() == n_experts(il); 1 = allowed).
  // Masked experts get choice score -inf before group scoring and top-k, so they are never
  // chosen. An empty vector clears the mask. Throws if fewer than num_experts_per_tok remain.
  void set_expert_mask(int64_t il, std::vector<uint8_t> allowed);

  std::unique_ptr<Sequence> new_sequence() const;

  // One step over several sequences. Every item's tokens are appended to its sequence (items
  // must name distinct sequences). `logits` is resized to [rows, vocab] where rows = sum over
  // items of (all_logits ? n_tokens : 1), in item order. MoE work is grouped by expert across
  // all tokens of the step. Throws sickle::Error (before changing any sequence) on a token id
  // outside [0, vocab) or a sequence that would pass max_context, and NonFiniteError (changing
  // no sequence either) when activations or logits stop being finite.
  void forward(std::span<StepItem> items, std::vector<float>& logits);
  // Convenience: one item.
  void forward(Sequence& seq, std::span<const int32_t> tokens, std::vector<float>& logits,
               bool all_logits = false, std::span<const float* const> embed_rows = {});

  // Bytes of weights read per token on average when decoding one sequence: attention, dense
  // MLP / shared experts, router, k routed experts of average size, lm_head, one embedding row.
  uint64_t active_bytes_per_token() const;

 private:
  Model();
  std::unique_ptr<ModelImpl> impl_;
};

}  // namespace sickle
