#include "model/synth.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/numeric.h"
#include "io/weights.h"
#include "io/writer.h"

namespace sickle {
using json = nlohmann::json;

namespace {

// ---- presets -------------------------------------------------------------------------------

struct Preset {
  const char* name;
  bool is_nested;  // KimiK25ForConditionalGeneration layout
  const char* text_model_type;
  int64_t hidden, n_layers, first_dense, intermediate, moe_intermediate;
  int64_t n_experts, top_k, n_shared, n_group, topk_group;
  int64_t n_heads, q_lora, kv_lora, nope, rope, v_head, vocab, max_pos;
  double rope_theta, rms_eps, routed_scaling;
  double yarn_factor, yarn_orig, beta_fast, beta_slow;  // yarn_factor 0: no rope scaling
  bool use_rope_parameters;  // write `rope_parameters` (with rope_theta inside) instead of rope_scaling
  const char* default_quant;
  int64_t bos, eos;  // -1: vocab - 256 / vocab - 255 (Kimi places its specials there)
};

// Real-model rows follow docs/formats.md §1. tiny-* keep every ratio that matters to code paths
// (q_lora > kv_lora, nope != v is avoided as in the real models, int4 group divides every
// expert dimension, fp8 blocks are partial at these sizes) at sizes a unit test runs in ms.
// mini: hidden 2048, 12 layers (1 dense), 64 experts x 1024 wide, top-8, 16 heads of 128+64,
// q_lora 512, kv_lora 512, dense width 5632 (Kimi's 18432/7168 ratio), vocab 32000:
// 4.84 B parameters, 0.93 B active per token, ~3.2 GB with int4 experts.
const Preset kPresets[] = {
    {"tiny-kimi", true,  "kimi_k2", 64,     3,    1,   128,   32,     16,  4,      1,
     1,           1,     4,         48,     32,   16,  8,     16,     512, 262144, 50000.0,
     1e-5,        2.827, 64.0,      4096.0, 32.0, 1.0, false, "int4", -1,  -1},
    {"tiny-dsv3", false,  "deepseek_v3",
     64,          3,      1,
     128,         32,     16,
     4,           1,      4,
     2,           4,      48,
     32,          16,     8,
     16,          512,    163840,
     10000.0,     1e-6,   2.5,
     40.0,        4096.0, 32.0,
     1.0,         true,   "fp8",
     0,           1},
    {"mini", false, "kimi_k2", 2048,   12,   1,   5632,  1024,   64,    8,      1,
     1,      1,     16,        512,    512,  128, 64,    128,    32000, 262144, 50000.0,
     1e-5,   2.827, 64.0,      4096.0, 32.0, 1.0, false, "int4", -1,    -1},
    {"kimi-k2.5-layers",
     true,
     "kimi_k2",
     7168,
     3,
     1,
     18432,
     2048,
     384,
     8,
     1,
     1,
     1,
     64,
     1536,
     512,
     128,
     64,
     128,
     163840,
     262144,
     50000.0,
     1e-5,
     2.827,
     64.0,
     4096.0,
     32.0,
     1.0,
     false,
     "int4",
     -1,
     -1},
};
constexpr int64_t kInt4Group = 32;  // Kimi-K2-Thinking / K2.5's group size
constexpr int64_t kFp8Block = 128;  // DeepSeek-V3's weight_block_size

// The MoonViT tower + patch-merger projector a nested (Kimi-K2.5) preset carries, in the real
// layout (docs/formats.md §2b): tiny-kimi a small one whose 8x8 position table forces the bicubic
// interpolation at every other grid, kimi-k2.5-layers the released one.
struct VisionPreset {
  int64_t hidden, heads, intermediate, layers, pos_h, pos_w;
  int64_t in_patch_limit, patch_limit_on_one_side;  // preprocessor_config.json media_proc_cfg
};
constexpr VisionPreset kTinyVision{32, 2, 64, 2, 8, 8, 1024, 64};
constexpr VisionPreset kRealVision{1152, 16, 4304, 27, 64, 64, 16384, 512};
constexpr int64_t kVisionPatch = 14;

const Preset& find_preset(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return p;
  std::string all;
  for (const auto& p : kPresets) all += std::string(all.empty() ? "" : ", ") + p.name;
  fail("synth: unknown preset '{}' (one of: {})", name, all);
}

// ---- counter-based random values -----------------------------------------------------------

inline uint64_t mix64(uint64_t x) {  // splitmix64's finalizer (Steele, Lea, Flood 2014)
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline uint64_t bits_at(uint64_t key, uint64_t i) { return mix64(key + (i + 1) * 0x9E3779B97F4A7C15ull); }
// Irwin-Hall(4) rescaled to unit variance: sum of four 16-bit uniforms at (k + 0.5) / 65536.
inline float normal_at(uint64_t key, uint64_t i) {
  uint64_t h = bits_at(key, i);
  uint32_t s =
      uint32_t(h & 0xffff) + uint32_t((h >> 16) & 0xffff) + uint32_t((h >> 32) & 0xffff) + uint32_t(h >> 48);
  return ((float(s) + 2.0f) * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}
inline float uniform_at(uint64_t key, uint64_t i) {
  return float(bits_at(key, i) >> 40) * (1.0f / 16777216.0f);
}

constexpr uint64_t kScaleStream = 0x5CA1E5CA1E5CA1E5ull;  // a weight's scales: key ^ this
constexpr float kInt4Spread = 2.5f;  // q = round(2.5 z): std(q) = sqrt(6.25 + 1/12) = 2.517
constexpr float kInt4QStd = 2.517f;
constexpr float kFp8Range = 5.0f;  // scale_inv = std * 5 / 448: |z| <= 3.46 never saturates

inline float int4_scale(const SynthGen& g, uint64_t i) {
  return g.std / kInt4QStd * (0.75f + 0.5f * uniform_at(g.key ^ kScaleStream, i));
}
inline float fp8_scale(const SynthGen& g, uint64_t i) {
  return g.std * kFp8Range / 448.0f * (0.75f + 0.5f * uniform_at(g.key ^ kScaleStream, i));
}

// ---- plan building -------------------------------------------------------------------------

enum class Quant { kNone, kInt4, kFp8 };

struct Builder {
  const SynthOptions& opt;
  Quant quant;
  std::vector<SynthTensor>* out;

  uint64_t key_of(const std::string& name) const {
    return hash64(name.data(), name.size(), opt.seed * 0x2545F4914F6CDD1Dull + 1);
  }

  void add(const std::string& name, DType dt, std::vector<int64_t> shape, SynthGen g) {
    g.key = key_of(name);
    out->push_back(SynthTensor{name, dt, std::move(shape), g});
  }
  void normal(const std::string& name, std::vector<int64_t> shape, float std) {
    SynthGen g;
    g.kind = SynthGen::Kind::kNormal;
    g.std = std;
    add(name, opt.dtype, std::move(shape), g);
  }
  void norm(const std::string& name, int64_t n) {
    SynthGen g;
    g.kind = SynthGen::Kind::kNorm;
    add(name, opt.dtype, {n}, g);
  }
  // A linear weight [rows, cols] (base name without ".weight"), std 1/sqrt(fan_in).
  void linear(const std::string& base, int64_t rows, int64_t cols, Quant q) {
    const float std = 1.0f / std::sqrt(float(cols));
    SynthGen g;
    g.std = std;
    g.rows = rows;
    g.cols = cols;
    g.key = key_of(base);  // weight and scale share the stream key (scale uses key ^ kScaleStream)
    if (q == Quant::kInt4) {
      if (cols % kInt4Group)
        fail("synth: '{}' has {} columns, not a multiple of the int4 group {}", base, cols, kInt4Group);
      g.group = kInt4Group;
      g.kind = SynthGen::Kind::kInt4Packed;
      out->push_back(SynthTensor{base + ".weight_packed", DType::I32, {rows, cols / 8}, g});
      g.kind = SynthGen::Kind::kInt4Scale;
      out->push_back(SynthTensor{base + ".weight_scale", DType::BF16, {rows, cols / kInt4Group}, g});
      g.kind = SynthGen::Kind::kShape;
      out->push_back(SynthTensor{base + ".weight_shape", DType::I32, {2}, g});
    } else if (q == Quant::kFp8) {
      g.group = kFp8Block;
      g.kind = SynthGen::Kind::kFp8;
      out->push_back(SynthTensor{base + ".weight", DType::F8_E4M3, {rows, cols}, g});
      g.kind = SynthGen::Kind::kFp8Scale;
      out->push_back(SynthTensor{base + ".weight_scale_inv",
                                 DType::F32,
                                 {(rows + kFp8Block - 1) / kFp8Block, (cols + kFp8Block - 1) / kFp8Block},
                                 g});
    } else {
      g.kind = SynthGen::Kind::kNormal;
      out->push_back(SynthTensor{base + ".weight", opt.dtype, {rows, cols}, g});
    }
  }
};

json rope_json(const Preset& p) {
  json r = {{"beta_fast", p.beta_fast}, {"beta_slow", p.beta_slow},
            {"factor", p.yarn_factor},  {"mscale", 1.0},
            {"mscale_all_dim", 1.0},    {"original_max_position_embeddings", int64_t(p.yarn_orig)}};
  if (p.use_rope_parameters) {
    r["rope_type"] = "yarn";
    r["rope_theta"] = p.rope_theta;
  } else {
    r["type"] = "yarn";
  }
  return r;
}

json quant_json(Quant q, bool nested) {
  if (q == Quant::kInt4) {
    // As Kimi-K2-Thinking / K2.5 ship it (compressed-tensors pack-quantized, routed experts only).
    json ignore = {"lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
                   "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"};
    if (nested) {
      ignore.push_back("re:.*vision_tower.*");
      ignore.push_back("re:.*mm_projector.*");
    }
    return {{"config_groups",
             {{"group_0",
               {{"input_activations", nullptr},
                {"output_activations", nullptr},
                {"targets", {"Linear"}},
                {"weights",
                 {{"actorder", nullptr},
                  {"block_structure", nullptr},
                  {"dynamic", false},
                  {"group_size", kInt4Group},
                  {"num_bits", 4},
                  {"observer", "minmax"},
                  {"observer_kwargs", json::object()},
                  {"strategy", "group"},
                  {"symmetric", true},
                  {"type", "int"}}}}}}},
            {"format", "pack-quantized"},
            {"ignore", ignore},
            {"kv_cache_scheme", nullptr},
            {"quant_method", "compressed-tensors"},
            {"quantization_status", "compressed"}};
  }
  // As DeepSeek-V3 ships it.
  return {{"activation_scheme", "dynamic"},
          {"fmt", "e4m3"},
          {"quant_method", "fp8"},
          {"weight_block_size", {kFp8Block, kFp8Block}}};
}

}  // namespace

uint64_t SynthTensor::nbytes() const {
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return n * dtype_size(dtype);
}

uint64_t SynthPlan::total_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.nbytes();
  return n;
}

const std::vector<std::string>& synth_presets() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& p : kPresets) v.push_back(p.name);
    return v;
  }();
  return names;
}

SynthPlan synth_plan(const SynthOptions& opt) {
  const Preset& p = find_preset(opt.preset);
  if (opt.dtype != DType::BF16 && opt.dtype != DType::F32) fail("synth: --dtype must be bf16 or f32");
  std::string qname = opt.quant.empty() ? p.default_quant : opt.quant;
  Quant quant;
  if (qname == "int4") quant = Quant::kInt4;
  else if (qname == "fp8") quant = Quant::kFp8;
  else if (qname == "none") quant = Quant::kNone;
  else fail("synth: --quant '{}' is not one of int4, fp8, none", qname);
  const int64_t n_layers = opt.n_layers > 0 ? opt.n_layers : p.n_layers;
  if (opt.n_layers < 0) fail("synth: --layers must be positive, got {}", opt.n_layers);
  const int64_t first_dense = std::min(p.first_dense, n_layers);
  const int64_t E = opt.n_experts > 0 ? opt.n_experts : p.n_experts;
  if (opt.n_experts < 0) fail("synth: --experts must be positive, got {}", opt.n_experts);
  if (E % p.n_group)
    fail("synth: --experts {} is not divisible by n_group {} of preset {}", E, p.n_group, p.name);
  if (E < p.top_k || p.topk_group * (E / p.n_group) < p.top_k)
    fail("synth: --experts {} too few for top-{} routing with n_group {} / topk_group {}", E, p.top_k,
         p.n_group, p.topk_group);

  SynthPlan plan;
  const VisionPreset& vp = p.hidden >= 4096 ? kRealVision : kTinyVision;
  // ---- config.json ----
  json text = {
      {"architectures", {"DeepseekV3ForCausalLM"}},
      {"model_type", p.text_model_type},
      {"vocab_size", p.vocab},
      {"hidden_size", p.hidden},
      {"intermediate_size", p.intermediate},
      {"moe_intermediate_size", p.moe_intermediate},
      {"num_hidden_layers", n_layers},
      {"num_nextn_predict_layers", 0},
      {"num_attention_heads", p.n_heads},
      {"num_key_value_heads", p.n_heads},
      {"n_shared_experts", p.n_shared},
      {"n_routed_experts", E},
      {"ep_size", 1},
      {"routed_scaling_factor", p.routed_scaling},
      {"kv_lora_rank", p.kv_lora},
      {"q_lora_rank", p.q_lora},
      {"qk_rope_head_dim", p.rope},
      {"v_head_dim", p.v_head},
      {"qk_nope_head_dim", p.nope},
      {"topk_method", "noaux_tc"},
      {"n_group", p.n_group},
      {"topk_group", p.topk_group},
      {"num_experts_per_tok", p.top_k},
      {"moe_layer_freq", 1},
      {"first_k_dense_replace", first_dense},
      {"norm_topk_prob", true},
      {"scoring_func", "sigmoid"},
      {"aux_loss_alpha", 0.001},
      {"seq_aux", true},
      {"hidden_act", "silu"},
      {"max_position_embeddings", p.max_pos},
      {"initializer_range", 0.02},
      {"rms_norm_eps", p.rms_eps},
      {"use_cache", true},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", p.bos >= 0 ? p.bos : p.vocab - 256},
      {"eos_token_id", p.eos >= 0 ? p.eos : p.vocab - 255},
      {"torch_dtype", opt.dtype == DType::F32 ? "float32" : "bfloat16"},
  };
  if (p.use_rope_parameters) {
    text["rope_parameters"] = rope_json(p);  // rope_theta lives inside (newer transformers)
  } else {
    text["rope_theta"] = p.rope_theta;
    text["rope_scaling"] = rope_json(p);
  }
  json synth_note = {{"preset", p.name},
                     {"seed", opt.seed},
                     {"quant", qname},
                     {"dtype", opt.dtype == DType::F32 ? "f32" : "bf16"}};
  if (p.is_nested) {
    json root = {
        {"architectures", {"KimiK25ForConditionalGeneration"}},
        {"model_type", "kimi_k25"},
        {"text_config", text},
        // Key names as Kimi-K2.5's release spells them (vt_*), its defaults written out.
        {"vision_config",
         {{"model_type", "moonvit"},
          {"patch_size", kVisionPatch},
          {"vt_hidden_size", vp.hidden},
          {"vt_num_attention_heads", vp.heads},
          {"vt_num_hidden_layers", vp.layers},
          {"vt_intermediate_size", vp.intermediate},
          {"init_pos_emb_height", vp.pos_h},
          {"init_pos_emb_width", vp.pos_w},
          {"init_pos_emb_time", 4},
          {"pos_emb_type", "divided_fixed"},
          {"merge_kernel_size", {2, 2}},
          {"merge_type", "sd2_tpool"},
          {"video_attn_type", "spatial_temporal"},
          {"mm_projector_type", "patchmerger"},
          {"mm_hidden_size", vp.hidden},
          {"projector_hidden_act", "gelu"},
          {"projector_ln_eps", 1e-5},
          {"text_hidden_size", p.hidden}}},
        {"media_placeholder_token_id", p.vocab - 256 + 21},
        {"pad_token_id", p.vocab - 1},
        {"bos_token_id", text["bos_token_id"]},
        {"eos_token_id", text["eos_token_id"]},
        {"tie_word_embeddings", false},
        {"torch_dtype", text["torch_dtype"]},
        {"sickle_synth", synth_note},
    };
    if (quant != Quant::kNone) root["quantization_config"] = quant_json(quant, true);
    plan.config = std::move(root);
    plan.preprocessor = {{"media_proc_cfg",
                          {{"in_patch_limit", vp.in_patch_limit},
                           {"patch_size", kVisionPatch},
                           {"image_mean", {0.5, 0.5, 0.5}},
                           {"image_std", {0.5, 0.5, 0.5}},
                           {"merge_kernel_size", 2},
                           {"fixed_output_tokens", nullptr},
                           {"patch_limit_on_one_side", vp.patch_limit_on_one_side},
                           {"in_patch_limit_each_frame", 4096},
                           {"temporal_merge_kernel_size", 4}}}};
  } else {
    text["sickle_synth"] = synth_note;
    if (quant != Quant::kNone) text["quantization_config"] = quant_json(quant, false);
    plan.config = std::move(text);
  }

  // ---- tensors, in layer order ----
  Builder b{opt, quant, &plan.tensors};
  const std::string pre = p.is_nested ? "language_model." : "";
  const Quant dense_q = quant == Quant::kFp8 ? Quant::kFp8 : Quant::kNone;  // int4: routed experts only
  const int64_t H = p.hidden;
  b.normal(pre + "model.embed_tokens.weight", {p.vocab, H}, 1.0f);  // [vocab, hidden]
  for (int64_t il = 0; il < n_layers; ++il) {
    const std::string L = fmt::format("{}model.layers.{}.", pre, il);
    b.norm(L + "input_layernorm.weight", H);
    b.norm(L + "post_attention_layernorm.weight", H);
    b.linear(L + "self_attn.q_a_proj", p.q_lora, H, dense_q);  // [q_lora, hidden]
    b.norm(L + "self_attn.q_a_layernorm.weight", p.q_lora);
    b.linear(L + "self_attn.q_b_proj", p.n_heads * (p.nope + p.rope), p.q_lora,
             dense_q);  // [heads*(nope+rope), q_lora]
    b.linear(L + "self_attn.kv_a_proj_with_mqa", p.kv_lora + p.rope, H, dense_q);  // [kv_lora+rope, hidden]
    b.norm(L + "self_attn.kv_a_layernorm.weight", p.kv_lora);
    b.linear(L + "self_attn.kv_b_proj", p.n_heads * (p.nope + p.v_head), p.kv_lora,
             dense_q);                                                   // [heads*(nope+v), kv_lora]
    b.linear(L + "self_attn.o_proj", H, p.n_heads * p.v_head, dense_q);  // [hidden, heads*v]
    if (il < first_dense) {
      b.linear(L + "mlp.gate_proj", p.intermediate, H, dense_q);  // [inter, hidden]
      b.linear(L + "mlp.up_proj", p.intermediate, H, dense_q);    // [inter, hidden]
      b.linear(L + "mlp.down_proj", H, p.intermediate, dense_q);  // [hidden, inter]
      continue;
    }
    b.linear(L + "mlp.gate", E, H, Quant::kNone);  // router [n_experts, hidden], never quantized
    SynthGen bias;
    bias.kind = SynthGen::Kind::kBias;
    b.add(L + "mlp.gate.e_score_correction_bias", DType::F32, {E}, bias);  // [n_experts], f32
    const int64_t Is = p.moe_intermediate * p.n_shared;
    b.linear(L + "mlp.shared_experts.gate_proj", Is, H, dense_q);
    b.linear(L + "mlp.shared_experts.up_proj", Is, H, dense_q);
    b.linear(L + "mlp.shared_experts.down_proj", H, Is, dense_q);
    for (int64_t e = 0; e < E; ++e) {
      const std::string X = fmt::format("{}mlp.experts.{}.", L, e);
      b.linear(X + "gate_proj", p.moe_intermediate, H, quant);  // [moe_inter, hidden]
      b.linear(X + "up_proj", p.moe_intermediate, H, quant);    // [moe_inter, hidden]
      b.linear(X + "down_proj", H, p.moe_intermediate, quant);  // [hidden, moe_inter]
    }
  }
  b.norm(pre + "model.norm.weight", H);
  b.normal(pre + "lm_head.weight", {p.vocab, H}, 1.0f / std::sqrt(float(H)));  // [vocab, hidden]
  if (p.is_nested) {
    const int64_t C = vp.hidden, I = vp.intermediate, P = kVisionPatch;
    auto lin = [&](const std::string& base, int64_t rows, int64_t cols) {
      b.normal(base + ".weight", {rows, cols}, 1.0f / std::sqrt(float(cols)));
      b.normal(base + ".bias", {rows}, 0.02f);
    };
    auto layernorm = [&](const std::string& base, int64_t n) {
      b.norm(base + ".weight", n);
      SynthGen bias;
      bias.kind = SynthGen::Kind::kBias;
      b.add(base + ".bias", opt.dtype, {n}, bias);
    };
    b.normal("vision_tower.patch_embed.proj.weight", {C, 3, P, P}, 1.0f / std::sqrt(3.0f * P * P));
    b.normal("vision_tower.patch_embed.proj.bias", {C}, 0.02f);
    b.normal("vision_tower.patch_embed.pos_emb.weight", {vp.pos_h, vp.pos_w, C}, 0.5f);
    for (int64_t i = 0; i < vp.layers; ++i) {
      const std::string B = fmt::format("vision_tower.encoder.blocks.{}.", i);
      layernorm(B + "norm0", C);
      layernorm(B + "norm1", C);
      lin(B + "wqkv", 3 * C, C);
      lin(B + "wo", C, C);
      lin(B + "mlp.fc0", I, C);
      lin(B + "mlp.fc1", C, I);
    }
    layernorm("vision_tower.encoder.final_layernorm", C);
    layernorm("mm_projector.pre_norm", C);
    lin("mm_projector.proj.0", 4 * C, 4 * C);  // 2x2 patch merge
    lin("mm_projector.proj.2", H, 4 * C);
  }
  return plan;
}

void synth_fill(const SynthTensor& t, uint64_t offset, std::byte* dst, size_t n) {
  const size_t es = dtype_size(t.dtype);
  SICKLE_CHECK(offset % es == 0 && n % es == 0 && offset + n <= t.nbytes(), "{}: fill [{}, +{})", t.name,
               offset, n);
  const uint64_t i0 = offset / es, count = n / es;
  const SynthGen& g = t.gen;
  auto put_float = [&](uint64_t k, float v) {
    if (t.dtype == DType::F32) std::memcpy(dst + k * 4, &v, 4);
    else {
      uint16_t h = f32_to_bf16(v);
      std::memcpy(dst + k * 2, &h, 2);
    }
  };
  switch (g.kind) {
    case SynthGen::Kind::kNormal:
      for (uint64_t k = 0; k < count; ++k) put_float(k, g.std * normal_at(g.key, i0 + k));
      break;
    case SynthGen::Kind::kNorm:
      for (uint64_t k = 0; k < count; ++k) put_float(k, 1.0f + 0.1f * normal_at(g.key, i0 + k));
      break;
    case SynthGen::Kind::kBias:
      for (uint64_t k = 0; k < count; ++k) put_float(k, 0.1f * normal_at(g.key, i0 + k));
      break;
    case SynthGen::Kind::kInt4Packed:
      for (uint64_t k = 0; k < count; ++k) {
        int8_t q[8];
        for (int j = 0; j < 8; ++j) {
          float v = std::nearbyint(kInt4Spread * normal_at(g.key, (i0 + k) * 8 + uint64_t(j)));
          q[j] = int8_t(std::clamp(v, -8.0f, 7.0f));
        }
        uint32_t w = pack_int4_word(q);
        std::memcpy(dst + k * 4, &w, 4);
      }
      break;
    case SynthGen::Kind::kInt4Scale:
      for (uint64_t k = 0; k < count; ++k) {
        uint16_t h = f32_to_bf16(int4_scale(g, i0 + k));
        std::memcpy(dst + k * 2, &h, 2);
      }
      break;
    case SynthGen::Kind::kShape:
      for (uint64_t k = 0; k < count; ++k) {
        int32_t v = int32_t((i0 + k) == 0 ? g.rows : g.cols);
        std::memcpy(dst + k * 4, &v, 4);
      }
      break;
    case SynthGen::Kind::kFp8: {
      const uint64_t cols = uint64_t(g.cols), B = uint64_t(g.group), nbc = (cols + B - 1) / B;
      for (uint64_t k = 0; k < count; ++k) {
        uint64_t i = i0 + k, r = i / cols, c = i % cols;
        float s = fp8_scale(g, (r / B) * nbc + c / B);
        dst[k] = std::byte(f32_to_fp8_e4m3(g.std * normal_at(g.key, i) / s));
      }
      break;
    }
    case SynthGen::Kind::kFp8Scale:
      for (uint64_t k = 0; k < count; ++k) {
        float s = fp8_scale(g, i0 + k);
        std::memcpy(dst + k * 4, &s, 4);
      }
      break;
  }
}

void synth_write(const SynthPlan& plan, const std::filesystem::path& out_dir, const SynthOptions& opt) {
  WriterOptions wo;
  wo.max_shard_bytes = opt.max_shard_bytes;
  wo.force = opt.force;
  CheckpointWriter writer(out_dir, wo);
  const uint64_t total = plan.total_bytes();
  std::unique_ptr<Progress> progress;
  if (opt.progress) progress = std::make_unique<Progress>("synth " + out_dir.filename().string(), total, "B");
  writer.on_bytes = [&](uint64_t n) {
    if (progress) progress->add(n);
  };
  writer.write_text("config.json", plan.config.dump(2) + "\n");
  if (!plan.preprocessor.is_null())
    writer.write_text("preprocessor_config.json", plan.preprocessor.dump(2) + "\n");
  for (const auto& t : plan.tensors) {
    const SynthTensor* tp = &t;  // plan outlives the writer's commit below
    writer.add(t.name, t.dtype, t.shape,
               TensorSource::generated(size_t(t.nbytes()), [tp](uint64_t off, std::byte* dst, size_t n) {
                 synth_fill(*tp, off, dst, n);
               }));
  }
  writer.commit();
  if (progress) progress->finish();
}

}  // namespace sickle
