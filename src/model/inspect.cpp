#include "model/inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <unordered_map>

#include "base/error.h"
#include "base/log.h"
#include "io/checkpoint.h"
#include "model/synth.h"

namespace sickle {
using json = nlohmann::json;

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

struct Class {
  int64_t layer = -1;  // -1: not a layer tensor
  Component component = Component::kOther;
  Placement placement = Placement::kReplicated;
};

// Where a tensor belongs (model-format.md §2 names). `name` has the text prefix stripped when
// it had one; vision tensors carry no prefix.
Class classify(std::string_view name, const ModelConfig& c) {
  Class k;
  if (starts_with(name, "vision_tower.") || starts_with(name, "mm_projector.") ||
      starts_with(name, "multi_modal_projector.")) {
    k.component = Component::kVision;
    return k;
  }
  if (starts_with(name, "model.embed_tokens.")) return {-1, Component::kEmbedding, Placement::kSplit};
  if (starts_with(name, "lm_head.")) return {-1, Component::kLmHead, Placement::kSplit};
  if (starts_with(name, "model.norm.")) return {-1, Component::kNorms, Placement::kReplicated};
  if (!starts_with(name, "model.layers.")) return k;
  std::string_view rest = name.substr(13);
  size_t dot = rest.find('.');
  if (dot == std::string_view::npos || dot == 0) return k;
  int64_t il = 0;
  for (char ch : rest.substr(0, dot)) {
    if (ch < '0' || ch > '9') return k;
    il = il * 10 + (ch - '0');
    if (il > 1000000) return k;
  }
  rest = rest.substr(dot + 1);
  k.layer = il;
  if (il >= c.num_hidden_layers) return {il, Component::kUnused, Placement::kNotLoaded};
  if (rest.find("layernorm") != std::string_view::npos) return {il, Component::kNorms, Placement::kReplicated};
  if (starts_with(rest, "self_attn.")) {
    bool down = starts_with(rest, "self_attn.q_a_proj") || starts_with(rest, "self_attn.kv_a_proj_with_mqa");
    return {il, Component::kAttention, down ? Placement::kReplicated : Placement::kSplit};
  }
  if (starts_with(rest, "mlp.experts.")) return {il, Component::kRoutedExperts, Placement::kExpert};
  if (starts_with(rest, "mlp.shared_experts.")) return {il, Component::kSharedExperts, Placement::kSplit};
  if (starts_with(rest, "mlp.gate.")) return {il, Component::kRouter, Placement::kReplicated};
  if (starts_with(rest, "mlp.gate_proj") || starts_with(rest, "mlp.up_proj") || starts_with(rest, "mlp.down_proj"))
    return {il, Component::kDenseMlp, Placement::kSplit};
  return {il, Component::kOther, Placement::kReplicated};
}

uint64_t numel_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return n;
}

std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& ch : o) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return o;
}

}  // namespace

const char* component_name(Component c) {
  switch (c) {
    case Component::kAttention: return "attention";
    case Component::kDenseMlp: return "dense_mlp";
    case Component::kSharedExperts: return "shared_experts";
    case Component::kRoutedExperts: return "routed_experts";
    case Component::kRouter: return "router";
    case Component::kEmbedding: return "embedding";
    case Component::kLmHead: return "lm_head";
    case Component::kNorms: return "norms";
    case Component::kVision: return "vision";
    case Component::kUnused: return "unused_layers";
    case Component::kOther: return "other";
    case Component::kCount: break;
  }
  return "?";
}

Tally& Tally::operator+=(const Tally& o) {
  for (int i = 0; i < int(Component::kCount); ++i) component[i] += o.component[i];
  for (const auto& [k, v] : o.encoding) encoding[k] += v;
  for (int i = 0; i < 4; ++i) placement_bytes[i] += o.placement_bytes[i];
  return *this;
}

Tally ModelReport::total() const {
  Tally t = global;
  for (const auto& l : layers) t += l;
  return t;
}

int64_t ModelReport::n_moe_layers() const {
  int64_t n = 0;
  for (int64_t il = 0; il < config.num_hidden_layers; ++il) n += config.is_moe_layer(il);
  return n;
}

uint64_t ModelReport::active_params() const {
  Tally t = total();
  uint64_t n = 0;
  for (int i = 0; i < int(Component::kCount); ++i) {
    auto c = Component(i);
    if (c == Component::kRoutedExperts || c == Component::kVision || c == Component::kUnused) continue;
    n += t.component[i].params;
  }
  for (int64_t il = 0; il < int64_t(layers.size()); ++il) {
    int64_t E = config.n_experts(il);
    if (E <= 0) continue;
    // Routed experts: top-k of E are used (each expert has the same size).
    n += layers[size_t(il)].component[int(Component::kRoutedExperts)].params / uint64_t(E) *
         uint64_t(std::min(config.num_experts_per_tok, E));
  }
  return n;
}

uint64_t ModelReport::kv_bytes_per_token() const {
  return uint64_t(config.kv_lora_rank + config.qk_rope_head_dim) * uint64_t(config.num_hidden_layers) * 2;
}

ModelReport analyze(const ModelConfig& config, const std::vector<TensorEntry>& tensors, const std::string& source) {
  ModelReport r;
  r.config = config;
  r.source = source;
  r.layers.resize(size_t(config.num_hidden_layers));
  std::unordered_map<std::string, const TensorEntry*> by_name;
  for (const auto& t : tensors) by_name.emplace(t.name, &t);
  const std::string& pre = config.tensor_prefix;
  for (const auto& t : tensors) {
    std::string_view name = t.name;
    if (!pre.empty() && starts_with(name, pre)) name = name.substr(pre.size());
    Class k = classify(name, config);
    // Encoding and logical parameter count.
    std::string enc = lower(dtype_name(t.dtype));
    uint64_t params = numel_of(t.shape);
    auto base_of = [&](std::string_view suffix) { return t.name.substr(0, t.name.size() - suffix.size()); };
    if (ends_with(t.name, ".weight_packed") || ends_with(t.name, ".weight_scale") || ends_with(t.name, ".weight_shape")) {
      std::string_view suf = ends_with(t.name, ".weight_packed") ? ".weight_packed"
                             : ends_with(t.name, ".weight_scale") ? ".weight_scale" : ".weight_shape";
      std::string base = base_of(suf);
      auto packed = by_name.find(base + ".weight_packed");
      auto scale = by_name.find(base + ".weight_scale");
      if (packed != by_name.end()) {
        int64_t group = 0;
        if (packed->second->shape.size() == 2 && scale != by_name.end() && scale->second->shape.size() == 2 &&
            scale->second->shape[1] > 0)
          group = packed->second->shape[1] * 8 / scale->second->shape[1];
        enc = fmt::format("int4-g{}", group);
        params = suf == ".weight_packed" ? numel_of(t.shape) * 8 : 0;  // 8 nibbles per 32-bit word
      }
    } else if (t.dtype == DType::F8_E4M3 || ends_with(t.name, ".weight_scale_inv")) {
      std::string base = ends_with(t.name, ".weight_scale_inv") ? base_of(".weight_scale_inv") : base_of(".weight");
      auto w = by_name.find(base + ".weight");
      if (w != by_name.end() && w->second->dtype == DType::F8_E4M3) {
        enc = fmt::format("fp8-e4m3-b{}", config.quant.method == QuantMethod::kFp8Block ? config.quant.block_rows : 128);
        if (t.dtype != DType::F8_E4M3) params = 0;  // the scales
      }
    }
    Usage u{t.nbytes, params};
    Tally& tally = (k.layer >= 0 && k.layer < config.num_hidden_layers) ? r.layers[size_t(k.layer)] : r.global;
    tally.component[int(k.component)] += u;
    tally.encoding[enc] += u;
    tally.placement_bytes[int(k.placement)] += t.nbytes;
  }
  return r;
}

ModelReport analyze_checkpoint(const Checkpoint& ck) {
  std::vector<TensorEntry> entries;
  for (const auto& f : ck.files())
    for (const auto& t : f->tensors()) entries.push_back(TensorEntry{t.name, t.dtype, t.shape, t.nbytes()});
  return analyze(ck.config(), entries, ck.dir().string());
}

ModelReport analyze_plan(const SynthPlan& plan) {
  std::vector<TensorEntry> entries;
  for (const auto& t : plan.tensors) entries.push_back(TensorEntry{t.name, t.dtype, t.shape, t.nbytes()});
  return analyze(ModelConfig::from_json(plan.config, "synth plan"), entries, "synth plan");
}

ModelReport scale_layers(const ModelReport& r, int64_t n_layers) {
  if (n_layers <= 0) fail("--scale-layers: must be positive, got {}", n_layers);
  const ModelConfig& c = r.config;
  if (n_layers < c.first_k_dense_replace)
    fail("--scale-layers {}: fewer than first_k_dense_replace = {}", n_layers, c.first_k_dense_replace);
  if (r.layers.empty()) fail("--scale-layers: the checkpoint has no layers to repeat");
  if (!c.experts_per_layer.empty()) fail("--scale-layers: not supported with per-layer expert counts");
  ModelReport s = r;
  s.scaled_from_layers = r.scaled_from_layers ? r.scaled_from_layers : c.num_hidden_layers;
  s.config.num_hidden_layers = n_layers;
  s.layers.resize(size_t(n_layers), r.layers.back());  // repeat the last layer (MoE when there is one)
  return s;
}

RopeFacts rope_facts(const ModelConfig& c) {
  // HF modeling_deepseek: yarn_get_mscale(scale, mscale) = 0.1 * mscale * ln(scale) + 1 for scale > 1.
  auto mscale = [](double factor, double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; };
  RopeFacts f;
  f.softmax_scale = 1.0 / std::sqrt(double(c.qk_head_dim()));
  if (c.rope_scaling && c.rope_scaling->type == "yarn") {
    f.is_yarn = true;
    const auto& y = *c.rope_scaling;
    f.mscale_all_dim = y.mscale_all_dim ? mscale(y.factor, y.mscale_all_dim) : 1.0;
    f.softmax_scale *= f.mscale_all_dim * f.mscale_all_dim;
    f.cos_sin_scale = mscale(y.factor, y.mscale) / mscale(y.factor, y.mscale_all_dim);
  }
  return f;
}

MemoryPlan plan_memory(const ModelReport& r, const PlanTarget& t) {
  if (t.n_gpus <= 0) fail("--gpus must be positive, got {}", t.n_gpus);
  if (t.gpu_mem == 0) fail("--gpu-mem must be given with --gpus (e.g. 24GiB)");
  MemoryPlan p;
  p.target = t;
  const uint64_t N = uint64_t(t.n_gpus);
  Tally total = r.total();
  p.replicated = total.placement_bytes[int(Placement::kReplicated)];
  p.split_share = (total.placement_bytes[int(Placement::kSplit)] + N - 1) / N;
  for (int64_t il = 0; il < int64_t(r.layers.size()); ++il) {
    uint64_t routed = r.layers[size_t(il)].placement_bytes[int(Placement::kExpert)];
    int64_t E = r.config.n_experts(il);
    if (routed == 0 || E <= 0) continue;
    if (t.expert_parallel) p.experts_share += routed / uint64_t(E) * ((uint64_t(E) + N - 1) / N);
    else p.experts_share += (routed + N - 1) / N;
  }
  p.weights_per_device = p.replicated + p.split_share + p.experts_share;
  p.kv_room = int64_t(t.gpu_mem) - int64_t(p.weights_per_device) - int64_t(t.runtime_overhead);
  p.kv_bytes_per_token = r.kv_bytes_per_token();
  p.tokens = p.kv_room > 0 && p.kv_bytes_per_token ? p.kv_room / int64_t(p.kv_bytes_per_token) : 0;
  return p;
}

namespace {
std::string gb(double bytes) { return fmt::format("{:.2f} GB ({})", bytes / 1e9, format_bytes(bytes)); }
}  // namespace

std::string format_report(const ModelReport& r, const MemoryPlan* plan) {
  const ModelConfig& c = r.config;
  std::string o;
  auto line = [&](std::string_view key, const std::string& v) { o += fmt::format("{:<11}{}\n", key, v); };
  line("model", fmt::format("{}  ({}, text model_type {}{})", r.source, c.architecture.empty() ? "?" : c.architecture,
                            c.model_type, c.is_nested ? ", nested: text_config, prefix language_model." : ""));
  int64_t n_moe = r.n_moe_layers();
  line("layers", fmt::format("{}: {} dense + {} MoE{}", c.num_hidden_layers, c.num_hidden_layers - n_moe, n_moe,
                             r.scaled_from_layers ? fmt::format("   [extrapolated from the checkpoint's {} layers]",
                                                                r.scaled_from_layers)
                                                  : ""));
  std::string experts = fmt::format("{}", c.n_routed_experts);
  if (!c.experts_per_layer.empty()) {
    int64_t lo = INT64_MAX, hi = 0;
    for (int64_t il = 0; il < c.num_hidden_layers; ++il)
      if (c.is_moe_layer(il)) { lo = std::min(lo, c.n_experts(il)); hi = std::max(hi, c.n_experts(il)); }
    experts = fmt::format("{}..{} (per layer)", lo, hi);
  }
  line("experts", fmt::format("{} routed per MoE layer, top-{}, n_group {}, topk_group {}, {} / {}, scaling {}, "
                              "{} shared; width {} (dense MLP {})",
                              experts, c.num_experts_per_tok, c.n_group, c.topk_group, c.topk_method, c.scoring_func,
                              c.routed_scaling_factor, c.n_shared_experts, c.moe_intermediate_size, c.intermediate_size));
  line("attention", fmt::format("MLA, {} heads, hidden {}, q_lora {}, kv_lora {}, qk nope {} + rope {}, v {}",
                                c.num_attention_heads, c.hidden_size, c.q_lora_rank, c.kv_lora_rank, c.qk_nope_head_dim,
                                c.qk_rope_head_dim, c.v_head_dim));
  RopeFacts rf = rope_facts(c);
  if (rf.is_yarn) {
    const auto& y = *c.rope_scaling;
    line("rope", fmt::format("theta {}, yarn factor {} (original {} positions, beta_fast {}, beta_slow {}, mscale {}, "
                             "mscale_all_dim {}); attention mscale {:.6f}, softmax scale {:.7f}, cos/sin x {:.4f}",
                             c.rope_theta, y.factor, y.original_max_position_embeddings, y.beta_fast, y.beta_slow,
                             y.mscale, y.mscale_all_dim, rf.mscale_all_dim, rf.softmax_scale, rf.cos_sin_scale));
  } else {
    line("rope", fmt::format("theta {}, no scaling; softmax scale {:.7f}", c.rope_theta, rf.softmax_scale));
  }
  line("vocab", fmt::format("{}, max positions {}", c.vocab_size, c.max_position_embeddings));
  line("quant", c.quant.describe());
  Tally t = r.total();
  uint64_t params = 0, bytes = 0;
  for (const auto& u : t.component) { params += u.params; bytes += u.bytes; }
  line("params", fmt::format("{} total, {} active per token (top-{} of the routed experts; vision excluded)",
                             format_count(double(params)), format_count(double(r.active_params())),
                             c.num_experts_per_tok));
  line("size", gb(double(bytes)));
  auto row = [&](std::string_view name, const Usage& u) {
    return fmt::format("  {:<16}{:>9.2f} GB {:>12} {:>6.1f}% {:>10} params\n", name, double(u.bytes) / 1e9,
                       format_bytes(double(u.bytes)), 100.0 * double(u.bytes) / double(bytes),
                       format_count(double(u.params)));
  };
  o += "bytes by component:\n";
  for (int i = 0; i < int(Component::kCount); ++i) {
    const Usage& u = t.component[i];
    if (!u.bytes) continue;
    o += row(component_name(Component(i)), u);
  }
  o += "bytes by encoding:\n";
  for (const auto& [enc, u] : t.encoding)
    o += row(enc, u);
  line("kv cache", fmt::format("{} bytes per token (MLA latent in bf16: ({} + {}) x {} layers x 2 B)",
                               r.kv_bytes_per_token(), c.kv_lora_rank, c.qk_rope_head_dim, c.num_hidden_layers));
  if (plan) {
    const auto& tg = plan->target;
    o += fmt::format("memory plan: {} x {}, {}\n", tg.n_gpus, format_bytes(double(tg.gpu_mem)),
                     tg.expert_parallel ? "expert parallel (whole routed experts per device) + tensor parallel"
                                        : "tensor parallel (every tensor split, experts too)");
    o += fmt::format("  replicated      {}  (norms, router, q_a/kv_a down-projections, vision)\n",
                     gb(double(plan->replicated)));
    o += fmt::format("  split 1/{:<6}  {}  (attention up/out-projections, dense + shared MLP, embeddings, lm_head)\n",
                     tg.n_gpus, gb(double(plan->split_share)));
    o += fmt::format("  routed experts  {}  (busiest device)\n", gb(double(plan->experts_share)));
    o += fmt::format("  weights/device  {}\n", gb(double(plan->weights_per_device)));
    o += fmt::format("  overhead        {}  (runtime: context, activations, graphs)\n",
                     gb(double(tg.runtime_overhead)));
    if (plan->fits())
      o += fmt::format("  KV room         {}  -> {} tokens of context ({} B/token, latent not split across devices)\n",
                       gb(double(plan->kv_room)), plan->tokens, plan->kv_bytes_per_token);
    else
      o += fmt::format("  DOES NOT FIT: short by {}\n", gb(double(-plan->kv_room)));
  }
  return o;
}

json report_json(const ModelReport& r, const MemoryPlan* plan) {
  json j;
  j["source"] = r.source;
  j["config"] = r.config.to_json();
  Tally t = r.total();
  uint64_t params = 0, bytes = 0;
  for (const auto& u : t.component) { params += u.params; bytes += u.bytes; }
  j["layers"] = {{"total", r.config.num_hidden_layers}, {"moe", r.n_moe_layers()},
                 {"dense", r.config.num_hidden_layers - r.n_moe_layers()}};
  if (r.scaled_from_layers) j["layers"]["extrapolated_from"] = r.scaled_from_layers;
  json experts = json::array();
  for (int64_t il = 0; il < r.config.num_hidden_layers; ++il) experts.push_back(r.config.n_experts(il));
  j["experts_per_layer"] = experts;
  RopeFacts rf = rope_facts(r.config);
  j["rope"] = {{"theta", r.config.rope_theta}, {"yarn", rf.is_yarn}, {"attention_mscale", rf.mscale_all_dim},
               {"softmax_scale", rf.softmax_scale}, {"cos_sin_scale", rf.cos_sin_scale}};
  j["params"] = {{"total", params}, {"active_per_token", r.active_params()}};
  j["bytes"] = bytes;
  json comp = json::object();
  for (int i = 0; i < int(Component::kCount); ++i)
    if (t.component[i].bytes)
      comp[component_name(Component(i))] = {{"bytes", t.component[i].bytes}, {"params", t.component[i].params}};
  j["by_component"] = comp;
  json enc = json::object();
  for (const auto& [k, u] : t.encoding) enc[k] = {{"bytes", u.bytes}, {"params", u.params}};
  j["by_encoding"] = enc;
  j["kv_cache"] = {{"bytes_per_token", r.kv_bytes_per_token()}, {"dtype", "bf16"},
                   {"values_per_token_per_layer", r.config.kv_lora_rank + r.config.qk_rope_head_dim}};
  if (plan) {
    j["plan"] = {{"gpus", plan->target.n_gpus},
                 {"gpu_mem", plan->target.gpu_mem},
                 {"expert_parallel", plan->target.expert_parallel},
                 {"runtime_overhead", plan->target.runtime_overhead},
                 {"replicated", plan->replicated},
                 {"split_share", plan->split_share},
                 {"experts_share", plan->experts_share},
                 {"weights_per_device", plan->weights_per_device},
                 {"kv_room", plan->kv_room},
                 {"kv_bytes_per_token", plan->kv_bytes_per_token},
                 {"fits", plan->fits()},
                 {"tokens", plan->tokens}};
  }
  return j;
}

}  // namespace sickle
