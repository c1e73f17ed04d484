// sickle/model/inspect.h — facts about a checkpoint and a memory plan for a GPU target.
//
// The analysis reads only tensor headers (names, dtypes, shapes, byte lengths) and config.json,
// so it costs nothing on a 600 GB checkpoint and can equally run on a synth plan that was never
// written (model/synth.h), which is how the full-size figures are tested cheaply.
//
// Memory-plan model (what `--gpus N --gpu-mem M [--ep]` computes; as vLLM/SGLang place a
// DeepSeek-V3-family model with tensor parallelism N, optionally with expert parallelism):
//  - replicated on every device: norms, the router (gate + e_score_correction_bias), q_a_proj
//    and kv_a_proj_with_mqa (vLLM's ReplicatedLinear: the low-rank down-projections are not
//    split), the vision tower and projector, anything unrecognised;
//  - split 1/N: q_b_proj, kv_b_proj, o_proj (heads), dense and shared-expert MLPs (intermediate
//    dim), embeddings and lm_head (vocab);
//  - routed experts: with --ep whole experts are distributed, so the busiest device holds
//    ceil(E/N) experts of each MoE layer; without --ep every expert is split 1/N (TP);
//  - layers past num_hidden_layers (DeepSeek-V3's MTP layer) are not loaded for inference;
//  - the KV cache is MLA's latent: (kv_lora_rank + qk_rope_head_dim) values per token per layer,
//    in bf16 (2 bytes), NOT split by TP (every device caches the full latent of its tokens);
//  - each device keeps `runtime_overhead` (default 2 GiB: CUDA context, activations, graphs).
// So: room for KV = gpu_mem - weights on the busiest device - overhead; tokens = room / KV per token.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/dtype.h"

namespace sickle {

class Checkpoint;
struct SynthPlan;

enum class Component : int {
  kAttention, kDenseMlp, kSharedExperts, kRoutedExperts, kRouter, kEmbedding, kLmHead, kNorms, kVision, kUnused, kOther,
  kCount
};
const char* component_name(Component c);

enum class Placement : int { kReplicated, kSplit, kExpert, kNotLoaded };

struct TensorEntry {
  std::string name;  // full name as stored (with any language_model. prefix)
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
};

struct Usage {
  uint64_t bytes = 0;
  uint64_t params = 0;  // logical weights (an int4 word holds 8; scales and shapes hold none)
  Usage& operator+=(const Usage& o) {
    bytes += o.bytes;
    params += o.params;
    return *this;
  }
};

// Bytes and parameters of one layer (or of the non-layer tensors), by component and encoding.
struct Tally {
  Usage component[int(Component::kCount)];
  std::map<std::string, Usage> encoding;  // "int4-g32", "fp8-e4m3-b128", "bf16", "f32", ...
  uint64_t placement_bytes[4] = {0, 0, 0, 0};  // indexed by Placement
  Tally& operator+=(const Tally& o);
};

struct ModelReport {
  ModelConfig config;          // num_hidden_layers as reported (after any scaling)
  std::string source;          // directory or "synth plan"
  std::vector<Tally> layers;   // [num_hidden_layers]
  Tally global;                // embeddings, lm_head, final norm, vision, unused (MTP), other
  int64_t scaled_from_layers = 0;  // > 0 when extrapolated from that many layers

  Tally total() const;
  int64_t n_moe_layers() const;
  // Parameters touched per token: everything but the vision tower, unused layers and the routed
  // experts not chosen (top-k of each MoE layer's experts).
  uint64_t active_params() const;
  // MLA latent cache, bf16: (kv_lora_rank + qk_rope_head_dim) x layers x 2 bytes.
  uint64_t kv_bytes_per_token() const;
};

ModelReport analyze(const ModelConfig& config, const std::vector<TensorEntry>& tensors, const std::string& source);
ModelReport analyze_checkpoint(const Checkpoint& ck);
ModelReport analyze_plan(const SynthPlan& plan);  // the same numbers synth would write

// The same model with n_layers layers: layers past the checkpoint's repeat its last layer
// (the first_k_dense_replace dense layers stay as they are). For checkpoints cut to a few layers
// (synth kimi-k2.5-layers) to stand for the full model.
ModelReport scale_layers(const ModelReport& r, int64_t n_layers);

// YaRN attention factors (model-format.md §5; HF DeepseekV3 yarn_get_mscale).
struct RopeFacts {
  bool is_yarn = false;
  double mscale_all_dim = 1;  // m = 0.1 * mscale_all_dim * ln(factor) + 1
  double softmax_scale = 0;   // (nope + rope)^-0.5 * m^2
  double cos_sin_scale = 1;   // mscale(factor, mscale) / mscale(factor, mscale_all_dim)
};
RopeFacts rope_facts(const ModelConfig& c);

struct PlanTarget {
  int64_t n_gpus = 1;
  uint64_t gpu_mem = 0;
  bool expert_parallel = false;
  uint64_t runtime_overhead = 2ull << 30;
};

struct MemoryPlan {
  PlanTarget target;
  uint64_t replicated = 0;       // bytes every device holds in full
  uint64_t split_share = 0;      // this device's 1/N of the split tensors
  uint64_t experts_share = 0;    // routed experts on the busiest device
  uint64_t weights_per_device = 0;
  int64_t kv_room = 0;           // bytes left for KV cache (negative: weights do not fit)
  uint64_t kv_bytes_per_token = 0;
  int64_t tokens = 0;            // context tokens that fit (all sequences together)
  bool fits() const { return kv_room > 0; }
};
MemoryPlan plan_memory(const ModelReport& r, const PlanTarget& t);

std::string format_report(const ModelReport& r, const MemoryPlan* plan);
nlohmann::json report_json(const ModelReport& r, const MemoryPlan* plan);

}  // namespace sickle
