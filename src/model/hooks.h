// sickle/model/hooks.h — what the forward pass lets others watch (architecture.md: every step
// can be watched; `prune/` gathers statistics through this, never by touching forward code).
//
// Calls come from the thread that called forward(), once per MoE layer per step, after the
// layer's experts ran — never from worker threads. With no observer attached nothing is
// recorded or copied (the engine checks a null pointer once per layer).
#pragma once

#include <cstdint>

namespace sickle {

// One MoE layer of one forward step, over every token of the step (all sequences, prefill
// chunks and decode tokens together), in the order the step's tokens were given.
struct MoeLayerEvent {
  int64_t layer = 0;     // the model's layer index (il)
  int64_t n_tokens = 0;  // tokens in this step
  int64_t k = 0;         // experts chosen per token (num_experts_per_tok)
  int64_t hidden = 0;    // hidden_size
  // [n_tokens, k] expert ids chosen by the model's own routing (bias for choice, groups, mask),
  // in this checkpoint's numbering.
  const int32_t* experts = nullptr;
  // [n_tokens, k] the gate weights the model used: unbiased scores of the chosen experts,
  // renormalized when norm_topk_prob — WITHOUT routed_scaling_factor (a per-model constant
  // that changes no ranking; reap.md).
  const float* weights = nullptr;
  // [n_tokens, k, hidden] each chosen expert's raw output f_j(x) before gating, f32.
  // Non-null only when the observer's wants_expert_outputs() is true.
  const float* expert_out = nullptr;
};

// Per layer hidden state after the layer (residual stream), for debugging.
struct HiddenEvent {
  int64_t layer = 0;
  int64_t n_tokens = 0;
  int64_t hidden = 0;
  const float* h = nullptr;  // [n_tokens, hidden]
};

class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  virtual bool wants_expert_outputs() const { return false; }
  virtual bool wants_hidden() const { return false; }
  virtual void on_moe_layer(const MoeLayerEvent& e) {}
  virtual void on_hidden(const HiddenEvent& e) {}
};

}  // namespace sickle
