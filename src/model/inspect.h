// sickle/model/inspect.h — facts about a checkpoint and a memory plan for a GPU or CPU target.
//
// The analysis reads only tensor headers (names, dtypes, shapes, byte lengths) and config.json,
// so it costs nothing on a 600 GB checkpoint and can equally run on a synth plan that was never
// written (model/synth.h), or on config.json alone (model/layout.h derives the tensor list from
// the quantization scheme): `inspect` and `plan` work before anything is downloaded.
//
// Memory-plan model (`--gpus N --gpu-mem M [--ep]`), placed as vLLM places a DeepSeek-V3-family
// model with tensor parallelism N, optionally with expert parallelism:
//  - replicated on every device: norms, the router (gate + e_score_correction_bias; vLLM
//    ReplicatedLinear), q_a_proj and kv_a_proj_with_mqa (ReplicatedLinear / the fused_qkv_a_proj
//    with TP disabled: the low-rank down-projections are not split), the vision tower's patch
//    embedding, norms and position table, the patch-merger projector (ReplicatedLinear), anything
//    unrecognised;
//  - split 1/N: q_b_proj, kv_b_proj, o_proj (heads), dense and shared-expert MLPs (intermediate
//    dim), embeddings and lm_head (vocab), the vision blocks' wqkv / wo / fc0 / fc1 (vLLM
//    kimi_k25_vit.py: QKVParallel / RowParallel / ColumnParallel, mm_encoder_tp_mode "weights");
//  - routed experts: with --ep whole experts are distributed, so the busiest device holds
//    ceil(E/N) experts of each MoE layer (vLLM fused_moe/layer.py determine_expert_map: E // N
//    each, the first E % N ranks one more); without --ep every expert is split 1/N (TP);
//  - layers past num_hidden_layers (DeepSeek-V3's MTP layer) are not loaded for inference;
//  - the KV cache is MLA's latent: (kv_lora_rank + qk_rope_head_dim) values per token per layer,
//    one "head" (vLLM config get_head_size / get_num_kv_heads for MLA), in bf16 (--kv-cache-dtype
//    auto) or fp8 (1 byte), NOT split by TP: every device caches the full latent of every token
//    (vLLM kv_cache_interface.py MLAAttentionSpec: the MLA cache is replicated across TP ranks);
//  - vLLM sizes the KV cache as total x gpu_memory_utilization - (weights + the profiled peak of
//    activations + non-torch memory) (v1/worker/gpu_worker.py determine_available_memory); that
//    peak is `runtime_overhead` here (default 2 GiB: CUDA context, NCCL buffers, the profile
//    run's activations, CUDA graphs). The cache is allocated in blocks of block_size tokens (64:
//    vLLM forces 64 for FlashMLA, platforms/cuda.py).
// So: KV room = gpu_mem x utilization - weights on the busiest device - overhead; tokens = whole
// blocks of it; max context per sequence = tokens / max_num_seqs (at most max_position_embeddings).
#pragma once

#include <cstdint>
#include <filesystem>
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
  kAttention,
  kDenseMlp,
  kSharedExperts,
  kRoutedExperts,
  kRouter,
  kEmbedding,
  kLmHead,
  kNorms,
  kVision,
  kUnused,
  kOther,
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
  std::map<std::string, Usage> encoding;             // "int4-g32", "fp8-e4m3-b128", "bf16", "f32", ...
  uint64_t placement_bytes[4] = {0, 0, 0, 0};        // indexed by Placement
  uint64_t replicated[int(Component::kCount)] = {};  // bytes of each component every device holds
  Tally& operator+=(const Tally& o);
};

struct ModelReport {
  ModelConfig config;              // num_hidden_layers as reported (after any scaling)
  std::string source;              // directory or "synth plan"
  std::string bytes_from;          // "safetensors headers", "config.json" (model/layout.h) or "synth plan"
  std::vector<Tally> layers;       // [num_hidden_layers]
  Tally global;                    // embeddings, lm_head, final norm, vision, unused (MTP), other
  int64_t scaled_from_layers = 0;  // > 0 when extrapolated from that many layers

  Tally total() const;
  int64_t n_moe_layers() const;
  // Parameters touched per token: everything but the vision tower, unused layers and the routed
  // experts not chosen (top-k of each MoE layer's experts).
  uint64_t active_params() const;
  // MLA latent cache: (kv_lora_rank + qk_rope_head_dim) x layers x bytes per value (2: bf16).
  uint64_t kv_bytes_per_token(int bytes_per_value = 2) const;
  // Weight bytes one decoded token reads: every loaded tensor but the vision tower, the embedding
  // table (one row of it) and the routed experts not chosen (top-k of each MoE layer's E).
  uint64_t active_bytes_per_token() const;
  // Bytes inference loads (everything but unused layers).
  uint64_t loaded_bytes() const;
};

// The tensors of a model directory and where their sizes came from: the safetensors headers when
// any *.safetensors file is present (the checkpoint is opened and validated), else config.json
// alone (model/layout.h). `path` may also name a config.json file: then config.json alone is used.
struct ModelSource {
  std::string dir;
  nlohmann::json root;  // config.json
  ModelConfig config;
  std::vector<TensorEntry> tensors;
  std::string bytes_from;  // "safetensors headers" or "config.json"
};
ModelSource load_model_source(const std::filesystem::path& path);

// The same model with `keep` routed experts in every MoE layer, as `sickle prune --keep` writes
// it: experts keep..E-1 of each layer dropped (every expert has the same size, so which ones
// does not change a byte count), the router's rows and correction bias cut to `keep`,
// n_routed_experts = keep. The caller checks routability (prune/plan.h rules).
ModelSource with_experts(const ModelSource& src, int64_t keep);

ModelReport analyze(const ModelConfig& config, const std::vector<TensorEntry>& tensors,
                    const std::string& source);
ModelReport analyze_checkpoint(const Checkpoint& ck);
ModelReport analyze_plan(const SynthPlan& plan);  // the same numbers synth would write
ModelReport analyze_source(const ModelSource& src);

// The same model with n_layers layers: layers past the checkpoint's repeat its last layer
// (the first_k_dense_replace dense layers stay as they are). For checkpoints cut to a few layers
// (synth kimi-k2.5-layers) to stand for the full model.
ModelReport scale_layers(const ModelReport& r, int64_t n_layers);

// YaRN attention factors (docs/formats.md §5; HF DeepseekV3 yarn_get_mscale).
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
  double gpu_memory_utilization = 0.9;     // vLLM's default
  uint64_t runtime_overhead = 2ull << 30;  // see the header comment
  int kv_bytes_per_value = 2;              // 2: bf16 (vLLM --kv-cache-dtype auto); 1: fp8
  int64_t block_size = 64;                 // tokens per KV block (FlashMLA)
  int64_t max_num_seqs = 1;                // sequences that share the cache
  int64_t context = 0;                     // tokens each sequence must hold (0: no demand)
};

struct MemoryPlan {
  PlanTarget target;
  uint64_t usable = 0;          // gpu_mem x gpu_memory_utilization
  uint64_t replicated = 0;      // bytes every device holds in full
  uint64_t split_share = 0;     // this device's 1/N of the split tensors
  uint64_t experts_share = 0;   // routed experts on the busiest device
  int64_t experts_busiest = 0;  // routed experts of the largest MoE layer on the busiest device
  uint64_t weights_per_device = 0;
  uint64_t even_split = 0;  // loaded bytes / N: what a device would hold if everything split evenly
  int64_t kv_room = 0;      // usable - weights - overhead (negative: weights do not fit)
  uint64_t kv_bytes_per_token = 0;
  int64_t blocks = 0;       // KV blocks that fit
  int64_t tokens = 0;       // context tokens that fit (all sequences together)
  int64_t max_context = 0;  // per sequence: tokens / max_num_seqs, at most max_position_embeddings
  bool loads() const { return blocks > 0; }
  bool fits() const { return loads() && max_context >= target.context; }
  // Bytes the busiest device lacks for the demanded context (0 when it fits).
  uint64_t shortfall() const;
};
MemoryPlan plan_memory(const ModelReport& r, const PlanTarget& t);
std::string format_memory_plan(const ModelReport& r, const MemoryPlan& p);
nlohmann::json memory_plan_json(const MemoryPlan& p);

// A CPU target running sickle itself: weights memory-mapped (all of them in RAM for speed), the
// latent cache in f32 (model.h Sequence), decode bound by memory bandwidth.
struct CpuTarget {
  uint64_t mem = 0;  // bytes of RAM
  double membw = 0;  // bytes/s the machine reads (bench/membw); 0 = unknown
  // Fraction of that bandwidth sickle's decode reaches: 0.67-0.87 measured on `mini` against the
  // same run's membw (README, Speed table: 0.82 / 0.67 fab096b, 0.85 / 0.87 dd9be11, 0.79 860e9f0).
  double bw_fraction = 0.8;
  double want_tok_s = 0;           // a decode speed to reach (0 = none)
  uint64_t overhead = 2ull << 30;  // RAM besides weights and cache (scratch, the OS's share)
  int64_t max_num_seqs = 1;
  int64_t context = 0;  // tokens each sequence must hold (0: no demand)
};

struct CpuPlan {
  CpuTarget target;
  uint64_t weights = 0;             // loaded bytes
  uint64_t kv_bytes_per_token = 0;  // f32 latent
  int64_t kv_room = 0;
  int64_t max_context = 0;       // per sequence, at most max_position_embeddings
  uint64_t bytes_per_token = 0;  // active weight bytes read per decoded token
  double tok_s = 0;              // at an empty context
  double tok_s_at_context = 0;   // with `context` tokens of cache read each step (context > 0)
  double needed_membw = 0;       // for want_tok_s (at `context`), bytes/s
  bool fits() const { return kv_room > 0 && max_context >= target.context; }
};
CpuPlan plan_cpu(const ModelReport& r, const CpuTarget& t);
std::string format_cpu_plan(const ModelReport& r, const CpuPlan& p);
nlohmann::json cpu_plan_json(const CpuPlan& p);

std::string format_report(const ModelReport& r, const MemoryPlan* plan);
nlohmann::json report_json(const ModelReport& r, const MemoryPlan* plan);

}  // namespace sickle
