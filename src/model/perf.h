// sickle/model/perf.h — figures printed next to tok/s (style habit 12: measure against the
// speed of light).
#pragma once

#include <cstdint>
#include <string>

namespace sickle {

struct ModelConfig;

struct RunFigures {
  int64_t n_prompt = 0, n_generated = 0;  // generated = decode steps timed
  double prefill_s = 0, decode_s = 0;
  uint64_t active_bytes_per_token = 0;  // Model::active_bytes_per_token()
  uint64_t cache_bytes_per_token = 0;   // latent KV cache read per decode step (0: not counted)
  double bandwidth = 0;                 // bytes/s of the machine (measured or given); 0 = unknown
};

// "prompt 12 tok in 0.10 s (120.0 tok/s) | generation 32 tok (8.1 tok/s) | 3.2 GB/s of weights
// (400.0 MB/token) + 0.1 GB/s of KV cache (12.0 MB/token) = 0.22 of 15.0 GB/s measured": the
// fraction counts every byte a decode step reads, weights and cache.
std::string format_figures(const RunFigures& f, const char* bandwidth_source);

// The latent cache bytes a decode step reads (every layer's f32 rows [kv_lora_rank +
// qk_rope_head_dim] over its context), averaged over n_generated steps after an n_prompt-token
// prompt: step j attends to n_prompt + j + 1 positions.
uint64_t decode_cache_bytes_per_token(const ModelConfig& c, int64_t n_prompt, int64_t n_generated);

}  // namespace sickle
