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
#include "model/layout.h"
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

// Where a tensor belongs (docs/formats.md §2 names). `name` has the text prefix stripped when
// it had one; vision tensors carry no prefix.
Class classify(std::string_view name, const ModelConfig& c) {
  Class k;
  if (starts_with(name, "vision_tower.") || starts_with(name, "mm_projector.") ||
      starts_with(name, "multi_modal_projector.")) {
    k.component = Component::kVision;
    // The encoder blocks' linears are tensor-parallel in vLLM (QKVParallelLinear wqkv and
    // ColumnParallelLinear fc0 split weight and bias; RowParallelLinear wo and fc1 split the
    // weight, their bias is whole); the rest of the tower and the projector are replicated.
    if (starts_with(name, "vision_tower.encoder.blocks.")) {
      bool split = ends_with(name, ".wqkv.weight") || ends_with(name, ".wqkv.bias") ||
                   ends_with(name, ".mlp.fc0.weight") || ends_with(name, ".mlp.fc0.bias") ||
                   ends_with(name, ".wo.weight") || ends_with(name, ".mlp.fc1.weight");
      if (split) k.placement = Placement::kSplit;
    }
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
  if (rest.find("layernorm") != std::string_view::npos)
    return {il, Component::kNorms, Placement::kReplicated};
  if (starts_with(rest, "self_attn.")) {
    bool down = starts_with(rest, "self_attn.q_a_proj") || starts_with(rest, "self_attn.kv_a_proj_with_mqa");
    return {il, Component::kAttention, down ? Placement::kReplicated : Placement::kSplit};
  }
  if (starts_with(rest, "mlp.experts.")) return {il, Component::kRoutedExperts, Placement::kExpert};
  if (starts_with(rest, "mlp.shared_experts.")) return {il, Component::kSharedExperts, Placement::kSplit};
  if (starts_with(rest, "mlp.gate.")) return {il, Component::kRouter, Placement::kReplicated};
  if (starts_with(rest, "mlp.gate_proj") || starts_with(rest, "mlp.up_proj") ||
      starts_with(rest, "mlp.down_proj"))
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
  for (int i = 0; i < int(Component::kCount); ++i) replicated[i] += o.replicated[i];
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

namespace {
// What one token touches: everything but the vision tower, unused layers and the routed experts
// not chosen (top-k of each MoE layer's E, all of the same size); of the embedding table either
// all of it (parameter counts, as published) or the one row a token reads (bytes).
Usage active_usage(const ModelReport& r, bool one_embedding_row) {
  Tally t = r.total();
  Usage n;
  for (int i = 0; i < int(Component::kCount); ++i) {
    auto c = Component(i);
    if (c == Component::kRoutedExperts || c == Component::kVision || c == Component::kUnused) continue;
    Usage u = t.component[i];
    if (c == Component::kEmbedding && one_embedding_row && r.config.vocab_size > 0) {
      u.bytes /= uint64_t(r.config.vocab_size);
      u.params /= uint64_t(r.config.vocab_size);
    }
    n += u;
  }
  for (int64_t il = 0; il < int64_t(r.layers.size()); ++il) {
    int64_t E = r.config.n_experts(il);
    if (E <= 0) continue;
    const Usage& u = r.layers[size_t(il)].component[int(Component::kRoutedExperts)];
    const uint64_t k = uint64_t(std::min(r.config.num_experts_per_tok, E));
    n += Usage{u.bytes / uint64_t(E) * k, u.params / uint64_t(E) * k};
  }
  return n;
}
}  // namespace

uint64_t ModelReport::active_params() const { return active_usage(*this, false).params; }

uint64_t ModelReport::active_bytes_per_token() const { return active_usage(*this, true).bytes; }

uint64_t ModelReport::kv_bytes_per_token(int bytes_per_value) const {
  return uint64_t(config.kv_lora_rank + config.qk_rope_head_dim) * uint64_t(config.num_hidden_layers) *
         uint64_t(bytes_per_value);
}

uint64_t ModelReport::loaded_bytes() const {
  Tally t = total();
  uint64_t b = 0;
  for (int i = 0; i < int(Component::kCount); ++i)
    if (Component(i) != Component::kUnused) b += t.component[i].bytes;
  return b;
}

ModelReport analyze(const ModelConfig& config, const std::vector<TensorEntry>& tensors,
                    const std::string& source) {
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
    if (ends_with(t.name, ".weight_packed") || ends_with(t.name, ".weight_scale") ||
        ends_with(t.name, ".weight_shape")) {
      std::string_view suf = ends_with(t.name, ".weight_packed")  ? ".weight_packed"
                             : ends_with(t.name, ".weight_scale") ? ".weight_scale"
                                                                  : ".weight_shape";
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
      std::string base =
          ends_with(t.name, ".weight_scale_inv") ? base_of(".weight_scale_inv") : base_of(".weight");
      auto w = by_name.find(base + ".weight");
      if (w != by_name.end() && w->second->dtype == DType::F8_E4M3) {
        enc = fmt::format("fp8-e4m3-b{}",
                          config.quant.method == QuantMethod::kFp8Block ? config.quant.block_rows : 128);
        if (t.dtype != DType::F8_E4M3) params = 0;  // the scales
      }
    }
    Usage u{t.nbytes, params};
    Tally& tally =
        (k.layer >= 0 && k.layer < config.num_hidden_layers) ? r.layers[size_t(k.layer)] : r.global;
    tally.component[int(k.component)] += u;
    tally.encoding[enc] += u;
    tally.placement_bytes[int(k.placement)] += t.nbytes;
    if (k.placement == Placement::kReplicated) tally.replicated[int(k.component)] += t.nbytes;
  }
  return r;
}

namespace {
std::vector<TensorEntry> entries_of(const Checkpoint& ck) {
  std::vector<TensorEntry> entries;
  for (const auto& f : ck.files())
    for (const auto& t : f->tensors()) entries.push_back(TensorEntry{t.name, t.dtype, t.shape, t.nbytes()});
  return entries;
}

// "model.layers.<il>.mlp.experts.<e>." in `name` (prefix already stripped): e, else -1.
int64_t expert_index(std::string_view name) {
  static constexpr std::string_view kExperts = ".mlp.experts.";
  size_t at = name.find(kExperts);
  if (!starts_with(name, "model.layers.") || at == std::string_view::npos) return -1;
  int64_t e = 0;
  size_t i = at + kExperts.size();
  if (i >= name.size() || name[i] < '0' || name[i] > '9') return -1;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) e = e * 10 + (name[i] - '0');
  return e;
}
}  // namespace

ModelReport analyze_checkpoint(const Checkpoint& ck) {
  ModelReport r = analyze(ck.config(), entries_of(ck), ck.dir().string());
  r.bytes_from = "safetensors headers";
  return r;
}

ModelReport analyze_plan(const SynthPlan& plan) {
  std::vector<TensorEntry> entries;
  for (const auto& t : plan.tensors) entries.push_back(TensorEntry{t.name, t.dtype, t.shape, t.nbytes()});
  ModelReport r = analyze(ModelConfig::from_json(plan.config, "synth plan"), entries, "synth plan");
  r.bytes_from = "synth plan";
  return r;
}

ModelReport analyze_source(const ModelSource& src) {
  ModelReport r = analyze(src.config, src.tensors, src.dir);
  r.bytes_from = src.bytes_from;
  return r;
}

ModelSource load_model_source(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  ModelSource s;
  fs::path dir = path;
  if (fs::is_regular_file(path, ec)) dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  bool has_shards = false;
  if (fs::is_directory(dir, ec) && !fs::is_regular_file(path, ec))
    for (const auto& e : fs::directory_iterator(dir, ec))
      has_shards |= e.path().extension() == ".safetensors";
  s.dir = path.string();
  if (has_shards) {
    auto ck = Checkpoint::open(dir);  // validates every shard and the layout against config.json
    s.root = ck->config_json();
    s.config = ck->config();
    s.tensors = entries_of(*ck);
    s.bytes_from = "safetensors headers";
    return s;
  }
  fs::path cfg = fs::is_regular_file(path, ec) ? path : dir / "config.json";
  if (!fs::exists(cfg, ec))
    fail("{}: no config.json and no *.safetensors files (expected a model directory or a config.json)",
         path.string());
  s.root = read_json_file(cfg);
  s.config = ModelConfig::from_json(s.root, cfg.string());
  s.tensors = tensors_from_config(s.root, s.config);
  s.bytes_from = "config.json";
  return s;
}

ModelSource with_experts(const ModelSource& src, int64_t keep) {
  const ModelConfig& c = src.config;
  if (!c.experts_per_layer.empty())
    fail(
        "--keep: {} has per-layer expert counts (sickle_experts_per_layer); a uniform what-if needs a "
        "uniform model",
        src.dir);
  if (keep <= 0 || keep > c.n_routed_experts)
    fail("--keep {}: must be in [1, n_routed_experts = {}]", keep, c.n_routed_experts);
  ModelSource out = src;
  out.config.n_routed_experts = keep;
  text_config_of(out.root)["n_routed_experts"] = keep;
  out.tensors.clear();
  const std::string& pre = c.tensor_prefix;
  for (const auto& t : src.tensors) {
    std::string_view name = t.name;
    if (!pre.empty() && starts_with(name, pre)) name = name.substr(pre.size());
    if (expert_index(name) >= keep) continue;
    TensorEntry e = t;
    if (starts_with(name, "model.layers.") &&
        (ends_with(name, ".mlp.gate.weight") || ends_with(name, ".mlp.gate.e_score_correction_bias")) &&
        !e.shape.empty() && e.shape[0] > 0) {
      e.nbytes = e.nbytes / uint64_t(e.shape[0]) * uint64_t(keep);
      e.shape[0] = keep;
    }
    out.tensors.push_back(std::move(e));
  }
  return out;
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
  if (!(t.gpu_memory_utilization > 0 && t.gpu_memory_utilization <= 1))
    fail("--gpu-memory-utilization must be in (0, 1], got {}", t.gpu_memory_utilization);
  if (t.block_size <= 0) fail("--block-size must be positive, got {}", t.block_size);
  if (t.max_num_seqs <= 0) fail("--max-num-seqs must be positive, got {}", t.max_num_seqs);
  if (t.kv_bytes_per_value != 1 && t.kv_bytes_per_value != 2)
    fail("KV cache values are 1 (fp8) or 2 (bf16) bytes");
  if (t.context < 0) fail("--context must not be negative, got {}", t.context);
  MemoryPlan p;
  p.target = t;
  p.usable = uint64_t(double(t.gpu_mem) * t.gpu_memory_utilization);
  const uint64_t N = uint64_t(t.n_gpus);
  Tally total = r.total();
  p.replicated = total.placement_bytes[int(Placement::kReplicated)];
  p.split_share = (total.placement_bytes[int(Placement::kSplit)] + N - 1) / N;
  for (int64_t il = 0; il < int64_t(r.layers.size()); ++il) {
    uint64_t routed = r.layers[size_t(il)].placement_bytes[int(Placement::kExpert)];
    int64_t E = r.config.n_experts(il);
    if (routed == 0 || E <= 0) continue;
    const int64_t busiest = (E + int64_t(N) - 1) / int64_t(N);  // determine_expert_map: the first E % N ranks
    if (t.expert_parallel) {
      p.experts_share += routed / uint64_t(E) * uint64_t(busiest);
      p.experts_busiest = std::max(p.experts_busiest, busiest);
    } else {
      p.experts_share += (routed + N - 1) / N;
    }
  }
  p.weights_per_device = p.replicated + p.split_share + p.experts_share;
  p.even_split = (r.loaded_bytes() + N - 1) / N;
  p.kv_room = int64_t(p.usable) - int64_t(p.weights_per_device) - int64_t(t.runtime_overhead);
  p.kv_bytes_per_token = r.kv_bytes_per_token(t.kv_bytes_per_value);
  const int64_t block_bytes = int64_t(p.kv_bytes_per_token) * t.block_size;
  p.blocks = p.kv_room > 0 && block_bytes > 0 ? p.kv_room / block_bytes : 0;
  p.tokens = p.blocks * t.block_size;
  p.max_context = std::min(p.tokens / t.max_num_seqs, r.config.max_position_embeddings);
  return p;
}

uint64_t MemoryPlan::shortfall() const {
  if (fits()) return 0;
  const int64_t want = std::max<int64_t>(target.context * target.max_num_seqs, 1);
  const int64_t blocks_needed = (want + target.block_size - 1) / target.block_size;
  const uint64_t need = weights_per_device + target.runtime_overhead +
                        uint64_t(blocks_needed * target.block_size) * kv_bytes_per_token;
  return need > usable ? need - usable : 1;
}

namespace {
std::string gb(double bytes) { return fmt::format("{:.2f} GB ({})", bytes / 1e9, format_bytes(bytes)); }
// One row of the plan tables: a label, bytes as decimal GB and as GiB, a note.
std::string plan_row(std::string_view label, double bytes, const std::string& note) {
  return fmt::format("  {:<18}{:>9.2f} {:>9.2f}   {}\n", label, bytes / 1e9, bytes / double(1ull << 30),
                     note);
}
std::string count(int64_t n) {  // 57344 -> "57,344"
  std::string s = std::to_string(n < 0 ? -n : n), o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) o += ',';
    o += s[i];
  }
  return n < 0 ? "-" + o : o;
}
}  // namespace

std::string format_memory_plan(const ModelReport& r, const MemoryPlan& p) {
  const auto& tg = p.target;
  const Tally t = r.total();
  std::string o = fmt::format(
      "memory plan: {} x {}, {}, gpu-memory-utilization {}\n", tg.n_gpus, format_bytes(double(tg.gpu_mem)),
      tg.expert_parallel
          ? fmt::format("expert parallel (whole routed experts per GPU) + tensor parallel {}", tg.n_gpus)
          : fmt::format("tensor parallel {} (every tensor split, experts too)", tg.n_gpus),
      tg.gpu_memory_utilization);
  o += fmt::format("  {:<18}{:>9} {:>9}\n", "per GPU (busiest)", "GB", "GiB");
  o += plan_row("usable", double(p.usable),
                fmt::format("{} x {}", format_bytes(double(tg.gpu_mem)), tg.gpu_memory_utilization));
  auto rep = [&](Component c) { return double(t.replicated[int(c)]) / 1e9; };
  o += plan_row(
      "replicated", double(p.replicated),
      fmt::format("MLA down-projections q_a/kv_a {:.2f} GB, routers {:.2f}, norms {:.2f}, vision {:.2f}",
                  rep(Component::kAttention), rep(Component::kRouter), rep(Component::kNorms),
                  rep(Component::kVision)));
  o += plan_row(fmt::format("split 1/{}", tg.n_gpus), double(p.split_share),
                "attention up/out-projections, dense + shared MLPs, embeddings, lm_head, vision blocks");
  const int64_t n_moe = r.n_moe_layers();
  o += plan_row("routed experts", double(p.experts_share),
                tg.expert_parallel
                    ? fmt::format("{} per MoE layer x {} layers (ceil({} / {}))", p.experts_busiest, n_moe,
                                  r.config.n_routed_experts, tg.n_gpus)
                    : fmt::format("1/{} of every expert (TP)", tg.n_gpus));
  o += plan_row(
      "= weights", double(p.weights_per_device),
      fmt::format("an even split (loaded {:.2f} GB / {}) would be {:.2f} GB ({:.2f} GiB); replicated "
                  "pieces and uneven shares add {:.2f} GB",
                  double(r.loaded_bytes()) / 1e9, tg.n_gpus, double(p.even_split) / 1e9,
                  double(p.even_split) / double(1ull << 30),
                  (double(p.weights_per_device) - double(p.even_split)) / 1e9));
  o += plan_row("overhead", double(tg.runtime_overhead),
                "--overhead: CUDA context, NCCL, activations, CUDA graphs");
  const double kv = double(p.blocks * tg.block_size) * double(p.kv_bytes_per_token);
  o += plan_row("KV cache", kv,
                fmt::format("{} MLA latent, {} B/token, not split by TP: {} tokens ({} blocks of {})",
                            tg.kv_bytes_per_value == 1 ? "fp8" : "bf16", p.kv_bytes_per_token,
                            count(p.tokens), count(p.blocks), tg.block_size));
  o += plan_row("free", std::max(0.0, double(p.kv_room) - kv), "");
  std::string need =
      tg.context ? fmt::format("; needs {} (--context) x {} sequences", count(tg.context), tg.max_num_seqs)
                 : "";
  if (p.fits())
    o += fmt::format("verdict      FITS: max context {} tokens per sequence (--max-num-seqs {}){}\n",
                     count(p.max_context), tg.max_num_seqs, need);
  else if (!p.loads())
    o += fmt::format("verdict      DOES NOT FIT: weights + overhead exceed the usable memory; short by {}\n",
                     gb(double(p.shortfall())));
  else
    o += fmt::format("verdict      DOES NOT FIT: max context {} tokens per sequence{}; short by {}\n",
                     count(p.max_context), need, gb(double(p.shortfall())));
  return o;
}

nlohmann::json memory_plan_json(const MemoryPlan& p) {
  const auto& t = p.target;
  return {{"gpus", t.n_gpus},
          {"gpu_mem", t.gpu_mem},
          {"expert_parallel", t.expert_parallel},
          {"gpu_memory_utilization", t.gpu_memory_utilization},
          {"runtime_overhead", t.runtime_overhead},
          {"kv_cache_dtype", t.kv_bytes_per_value == 1 ? "fp8" : "bf16"},
          {"block_size", t.block_size},
          {"max_num_seqs", t.max_num_seqs},
          {"context", t.context},
          {"usable", p.usable},
          {"replicated", p.replicated},
          {"split_share", p.split_share},
          {"experts_share", p.experts_share},
          {"experts_busiest", p.experts_busiest},
          {"weights_per_device", p.weights_per_device},
          {"even_split", p.even_split},
          {"kv_room", p.kv_room},
          {"kv_bytes_per_token", p.kv_bytes_per_token},
          {"blocks", p.blocks},
          {"tokens", p.tokens},
          {"max_context", p.max_context},
          {"fits", p.fits()},
          {"shortfall", p.shortfall()}};
}

CpuPlan plan_cpu(const ModelReport& r, const CpuTarget& t) {
  if (t.mem == 0) fail("--cpu-mem must be given for a CPU target (e.g. 768GiB)");
  if (!(t.bw_fraction > 0 && t.bw_fraction <= 1))
    fail("--bw-fraction must be in (0, 1], got {}", t.bw_fraction);
  if (t.max_num_seqs <= 0) fail("--max-num-seqs must be positive, got {}", t.max_num_seqs);
  if (t.want_tok_s < 0 || t.membw < 0) fail("--membw and --tok-s must not be negative");
  CpuPlan p;
  p.target = t;
  p.weights = r.loaded_bytes();
  p.kv_bytes_per_token = r.kv_bytes_per_token(4);  // sickle's latent cache is f32
  p.kv_room = int64_t(t.mem) - int64_t(p.weights) - int64_t(t.overhead);
  p.max_context = p.kv_room > 0 ? std::min(p.kv_room / int64_t(p.kv_bytes_per_token) / t.max_num_seqs,
                                           r.config.max_position_embeddings)
                                : 0;
  p.bytes_per_token = r.active_bytes_per_token();
  // Decode of one sequence reads the active weights and, with `context` tokens cached, the cache.
  const double at_ctx = double(p.bytes_per_token) + double(t.context) * double(p.kv_bytes_per_token);
  if (t.membw > 0) {
    p.tok_s = t.membw * t.bw_fraction / double(p.bytes_per_token);
    p.tok_s_at_context = t.membw * t.bw_fraction / at_ctx;
  }
  if (t.want_tok_s > 0) p.needed_membw = t.want_tok_s * at_ctx / t.bw_fraction;
  return p;
}

std::string format_cpu_plan(const ModelReport& r, const CpuPlan& p) {
  const auto& t = p.target;
  std::string o = fmt::format("cpu plan: {} of RAM{}\n", format_bytes(double(t.mem)),
                              t.membw > 0 ? fmt::format(", {:.1f} GB/s read bandwidth", t.membw / 1e9) : "");
  o += fmt::format("  {:<18}{:>9} {:>9}\n", "", "GB", "GiB");
  o += plan_row("weights", double(p.weights),
                "every loaded tensor, memory-mapped (keep them in RAM: decode reads them)");
  o += plan_row("overhead", double(t.overhead), "--overhead: scratch, the OS");
  o += plan_row("KV room", double(std::max<int64_t>(p.kv_room, 0)),
                fmt::format("f32 latent {} B/token: {} tokens per sequence (--max-num-seqs {})",
                            p.kv_bytes_per_token, count(p.max_context), t.max_num_seqs));
  o += fmt::format(
      "  decode reads {:.2f} GB of weights per token (attention, dense + shared MLPs, routers, top-{} of "
      "the routed experts, lm_head)\n",
      double(p.bytes_per_token) / 1e9, r.config.num_experts_per_tok);
  if (t.membw > 0) {
    o += fmt::format(
        "  expected decode {:.2f} tok/s = {:.2f} x {:.1f} GB/s / {:.2f} GB (--bw-fraction: measured on "
        "`mini`, "
        "README)\n",
        p.tok_s, t.bw_fraction, t.membw / 1e9, double(p.bytes_per_token) / 1e9);
    if (t.context)
      o += fmt::format("  at {} tokens of context: {:.2f} tok/s (the cache adds {:.2f} GB per token)\n",
                       count(t.context), p.tok_s_at_context,
                       double(t.context) * double(p.kv_bytes_per_token) / 1e9);
  }
  if (t.want_tok_s > 0)
    o += fmt::format("  {:.2f} tok/s needs {:.1f} GB/s of read bandwidth\n", t.want_tok_s,
                     p.needed_membw / 1e9);
  if (p.fits())
    o += fmt::format("verdict      FITS in RAM: max context {} tokens per sequence\n", count(p.max_context));
  else
    o += fmt::format(
        "verdict      DOES NOT FIT in RAM: {}\n",
        p.kv_room <= 0
            ? fmt::format("weights + overhead exceed it by {}", gb(double(-p.kv_room)))
            : fmt::format("max context {} < {} (--context)", count(p.max_context), count(t.context)));
  return o;
}

nlohmann::json cpu_plan_json(const CpuPlan& p) {
  const auto& t = p.target;
  return {{"cpu_mem", t.mem},
          {"membw", t.membw},
          {"bw_fraction", t.bw_fraction},
          {"overhead", t.overhead},
          {"context", t.context},
          {"max_num_seqs", t.max_num_seqs},
          {"weights", p.weights},
          {"kv_bytes_per_token", p.kv_bytes_per_token},
          {"kv_room", p.kv_room},
          {"max_context", p.max_context},
          {"bytes_per_token", p.bytes_per_token},
          {"tok_s", p.tok_s},
          {"tok_s_at_context", p.tok_s_at_context},
          {"want_tok_s", t.want_tok_s},
          {"needed_membw", p.needed_membw},
          {"fits", p.fits()}};
}

std::string format_report(const ModelReport& r, const MemoryPlan* plan) {
  const ModelConfig& c = r.config;
  std::string o;
  auto line = [&](std::string_view key, const std::string& v) { o += fmt::format("{:<11}{}\n", key, v); };
  line("model", fmt::format("{}  ({}, text model_type {}{}); bytes from {}", r.source,
                            c.architecture.empty() ? "?" : c.architecture, c.model_type,
                            c.is_nested ? ", nested: text_config, prefix language_model." : "",
                            r.bytes_from.empty() ? "?" : r.bytes_from));
  int64_t n_moe = r.n_moe_layers();
  line("layers",
       fmt::format("{}: {} dense + {} MoE{}", c.num_hidden_layers, c.num_hidden_layers - n_moe, n_moe,
                   r.scaled_from_layers ? fmt::format("   [extrapolated from the checkpoint's {} layers]",
                                                      r.scaled_from_layers)
                                        : ""));
  std::string experts = fmt::format("{}", c.n_routed_experts);
  if (!c.experts_per_layer.empty()) {
    int64_t lo = INT64_MAX, hi = 0;
    for (int64_t il = 0; il < c.num_hidden_layers; ++il)
      if (c.is_moe_layer(il)) {
        lo = std::min(lo, c.n_experts(il));
        hi = std::max(hi, c.n_experts(il));
      }
    experts = fmt::format("{}..{} (per layer)", lo, hi);
  }
  line(
      "experts",
      fmt::format("{} routed per MoE layer, top-{}, n_group {}, topk_group {}, {} / {}, scaling {}, "
                  "{} shared; width {} (dense MLP {})",
                  experts, c.num_experts_per_tok, c.n_group, c.topk_group, c.topk_method, c.scoring_func,
                  c.routed_scaling_factor, c.n_shared_experts, c.moe_intermediate_size, c.intermediate_size));
  line("attention", fmt::format("MLA, {} heads, hidden {}, q_lora {}, kv_lora {}, qk nope {} + rope {}, v {}",
                                c.num_attention_heads, c.hidden_size, c.q_lora_rank, c.kv_lora_rank,
                                c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim));
  RopeFacts rf = rope_facts(c);
  if (rf.is_yarn) {
    const auto& y = *c.rope_scaling;
    line(
        "rope",
        fmt::format("theta {}, yarn factor {} (original {} positions, beta_fast {}, beta_slow {}, mscale {}, "
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
  for (const auto& u : t.component) {
    params += u.params;
    bytes += u.bytes;
  }
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
  for (const auto& [enc, u] : t.encoding) o += row(enc, u);
  line("kv cache",
       fmt::format("{} bytes per token (MLA latent in bf16: ({} + {}) x {} layers x 2 B)",
                   r.kv_bytes_per_token(), c.kv_lora_rank, c.qk_rope_head_dim, c.num_hidden_layers));
  if (plan) o += format_memory_plan(r, *plan);
  return o;
}

json report_json(const ModelReport& r, const MemoryPlan* plan) {
  json j;
  j["source"] = r.source;
  j["bytes_from"] = r.bytes_from;
  j["config"] = r.config.to_json();
  Tally t = r.total();
  uint64_t params = 0, bytes = 0;
  for (const auto& u : t.component) {
    params += u.params;
    bytes += u.bytes;
  }
  j["layers"] = {{"total", r.config.num_hidden_layers},
                 {"moe", r.n_moe_layers()},
                 {"dense", r.config.num_hidden_layers - r.n_moe_layers()}};
  if (r.scaled_from_layers) j["layers"]["extrapolated_from"] = r.scaled_from_layers;
  json experts = json::array();
  for (int64_t il = 0; il < r.config.num_hidden_layers; ++il) experts.push_back(r.config.n_experts(il));
  j["experts_per_layer"] = experts;
  RopeFacts rf = rope_facts(r.config);
  j["rope"] = {{"theta", r.config.rope_theta},
               {"yarn", rf.is_yarn},
               {"attention_mscale", rf.mscale_all_dim},
               {"softmax_scale", rf.softmax_scale},
               {"cos_sin_scale", rf.cos_sin_scale}};
  j["params"] = {{"total", params}, {"active_per_token", r.active_params()}};
  j["bytes"] = bytes;
  json comp = json::object();
  for (int i = 0; i < int(Component::kCount); ++i)
    if (t.component[i].bytes)
      comp[component_name(Component(i))] = {{"bytes", t.component[i].bytes},
                                            {"params", t.component[i].params}};
  j["by_component"] = comp;
  json enc = json::object();
  for (const auto& [k, u] : t.encoding) enc[k] = {{"bytes", u.bytes}, {"params", u.params}};
  j["by_encoding"] = enc;
  j["kv_cache"] = {{"bytes_per_token", r.kv_bytes_per_token()},
                   {"dtype", "bf16"},
                   {"values_per_token_per_layer", r.config.kv_lora_rank + r.config.qk_rope_head_dim}};
  if (plan) j["plan"] = memory_plan_json(*plan);
  return j;
}

}  // namespace sickle
