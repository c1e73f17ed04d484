#include "model/layout.h"

#include <fmt/format.h>

#include <regex>
#include <string_view>

#include "base/error.h"

namespace sickle {
using json = nlohmann::json;

namespace {

// compressed-tensors' module matching (match_name): "re:<pattern>" matches from the start of the
// module name (Python re.match), anything else names the module or its trailing components.
struct ModuleMatcher {
  std::vector<std::string> names;
  std::vector<std::regex> patterns;
  void add(const std::string& entry, const std::string& where) {
    if (entry.rfind("re:", 0) == 0) {
      try {
        patterns.emplace_back("(?:" + entry.substr(3) + ")[\\s\\S]*");
      } catch (const std::regex_error& e) {
        fail("{}: '{}' is not a regular expression: {}", where, entry, e.what());
      }
    } else {
      names.push_back(entry);
    }
  }
  bool matches(std::string_view module) const {
    for (const auto& n : names)
      if (module == n || (module.size() > n.size() && module.substr(module.size() - n.size()) == n &&
                          module[module.size() - n.size() - 1] == '.'))
        return true;
    for (const auto& re : patterns)
      if (std::regex_match(module.begin(), module.end(), re)) return true;
    return false;
  }
};

const json* quant_json_of(const json& root) {
  if (root.contains("text_config") && root["text_config"].is_object()) {
    const json& t = root["text_config"];
    if (t.contains("quantization_config") && !t["quantization_config"].is_null())
      return &t["quantization_config"];
  }
  if (root.contains("quantization_config") && !root["quantization_config"].is_null())
    return &root["quantization_config"];
  return nullptr;
}

DType float_dtype_of(const json& root) {
  const json* text =
      root.contains("text_config") && root["text_config"].is_object() ? &root["text_config"] : &root;
  for (const json* src : {text, &root})
    for (const char* key : {"torch_dtype", "dtype"}) {
      auto it = src->find(key);
      if (it == src->end() || !it->is_string()) continue;
      std::string s = it->get<std::string>();
      if (s == "bfloat16") return DType::BF16;
      if (s == "float32") return DType::F32;
      if (s == "float16") return DType::F16;
      fail("config.json: '{}' = '{}' is not bfloat16, float16 or float32", key, s);
    }
  return DType::BF16;
}

int64_t vision_int(const json& v, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = v.find(k);
    if (it != v.end() && it->is_number_integer() && it->get<int64_t>() > 0) return it->get<int64_t>();
  }
  fail("config.json: vision_config needs a positive integer '{}'", *keys.begin());
}

struct Lister {
  const ModelConfig& c;
  DType fdt;
  QuantMethod method;
  ModuleMatcher targets, ignore;
  bool all_linears;
  std::vector<TensorEntry>* out;

  void add(std::string name, DType dt, std::vector<int64_t> shape) {
    uint64_t n = dtype_size(dt);
    for (auto d : shape) n *= uint64_t(d);
    out->push_back(TensorEntry{std::move(name), dt, std::move(shape), n});
  }
  bool quantized(const std::string& module, bool text_layer) const {
    if (method == QuantMethod::kPackQuantizedInt4)
      return (all_linears || targets.matches(module)) && !ignore.matches(module);
    if (method == QuantMethod::kFp8Block) return text_layer && !ignore.matches(module);
    return false;
  }
  // A linear [rows, cols] under base name `module` (no ".weight").
  void linear(const std::string& module, int64_t rows, int64_t cols, bool text_layer = true) {
    if (!quantized(module, text_layer)) return add(module + ".weight", fdt, {rows, cols});
    if (method == QuantMethod::kPackQuantizedInt4) {
      const int64_t g = c.quant.group_size;
      if (cols % g || cols % 8)
        fail("config.json: '{}' has {} input columns, not a multiple of quantization_config group_size {}",
             module, cols, g);
      add(module + ".weight_packed", DType::I32, {rows, cols / 8});
      add(module + ".weight_scale", DType::BF16, {rows, cols / g});
      add(module + ".weight_shape", DType::I32, {2});
    } else {
      const int64_t br = c.quant.block_rows, bc = c.quant.block_cols;
      add(module + ".weight", DType::F8_E4M3, {rows, cols});
      add(module + ".weight_scale_inv", DType::F32, {(rows + br - 1) / br, (cols + bc - 1) / bc});
    }
  }
};

}  // namespace

std::vector<TensorEntry> tensors_from_config(const json& root, const ModelConfig& c) {
  std::vector<TensorEntry> out;
  Lister L{c, float_dtype_of(root), c.quant.method, {}, {}, false, &out};
  if (const json* q = quant_json_of(root)) {
    for (const char* key : {"ignore", "ignored_layers", "modules_to_not_convert"})
      if (q->contains(key) && (*q)[key].is_array())
        for (const auto& s : (*q)[key])
          if (s.is_string()) L.ignore.add(s.get<std::string>(), std::string("quantization_config.") + key);
    if (c.quant.method == QuantMethod::kPackQuantizedInt4) {
      const json& g = (*q)["config_groups"].begin().value();
      if (!g.contains("targets") || !g["targets"].is_array()) L.all_linears = true;
      else
        for (const auto& s : g["targets"])
          if (s.is_string()) {
            if (s.get<std::string>() == "Linear") L.all_linears = true;
            else L.targets.add(s.get<std::string>(), "quantization_config.config_groups.*.targets");
          }
    }
  }
  const std::string pre = c.tensor_prefix;
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  L.add(pre + "model.embed_tokens.weight", L.fdt, {c.vocab_size, H});
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) {
    const std::string P = fmt::format("{}model.layers.{}.", pre, il);
    L.add(P + "input_layernorm.weight", L.fdt, {H});
    L.add(P + "post_attention_layernorm.weight", L.fdt, {H});
    if (c.q_lora_rank > 0) {
      L.linear(P + "self_attn.q_a_proj", c.q_lora_rank, H);
      L.add(P + "self_attn.q_a_layernorm.weight", L.fdt, {c.q_lora_rank});
      L.linear(P + "self_attn.q_b_proj", nh * c.qk_head_dim(), c.q_lora_rank);
    } else {
      L.linear(P + "self_attn.q_proj", nh * c.qk_head_dim(), H);
    }
    L.linear(P + "self_attn.kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, H);
    L.add(P + "self_attn.kv_a_layernorm.weight", L.fdt, {c.kv_lora_rank});
    L.linear(P + "self_attn.kv_b_proj", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    L.linear(P + "self_attn.o_proj", H, nh * c.v_head_dim);
    if (!c.is_moe_layer(il)) {
      L.linear(P + "mlp.gate_proj", c.intermediate_size, H);
      L.linear(P + "mlp.up_proj", c.intermediate_size, H);
      L.linear(P + "mlp.down_proj", H, c.intermediate_size);
      continue;
    }
    const int64_t E = c.n_experts(il), I = c.moe_intermediate_size;
    L.add(P + "mlp.gate.weight", L.fdt, {E, H});
    if (c.topk_method == "noaux_tc") L.add(P + "mlp.gate.e_score_correction_bias", DType::F32, {E});
    if (c.n_shared_experts > 0) {
      const int64_t Is = I * c.n_shared_experts;
      L.linear(P + "mlp.shared_experts.gate_proj", Is, H);
      L.linear(P + "mlp.shared_experts.up_proj", Is, H);
      L.linear(P + "mlp.shared_experts.down_proj", H, Is);
    }
    for (int64_t e = 0; e < E; ++e) {
      const std::string X = fmt::format("{}mlp.experts.{}.", P, e);
      L.linear(X + "gate_proj", I, H);
      L.linear(X + "up_proj", I, H);
      L.linear(X + "down_proj", H, I);
    }
  }
  L.add(pre + "model.norm.weight", L.fdt, {H});
  if (!c.tie_word_embeddings) L.linear(pre + "lm_head", c.vocab_size, H, /*text_layer=*/false);

  if (c.has_vision && root["vision_config"].is_object()) {
    const json& v = root["vision_config"];
    // MoonViT-3D + patch merger (docs/formats.md §2b; vLLM kimi_k25_vit.py): every linear and
    // norm has a bias.
    const int64_t C = vision_int(v, {"vt_hidden_size", "hidden_size"});
    const int64_t I = vision_int(v, {"vt_intermediate_size", "intermediate_size"});
    const int64_t n = vision_int(v, {"vt_num_hidden_layers", "num_hidden_layers"});
    const int64_t p = vision_int(v, {"patch_size"});
    const int64_t ph = vision_int(v, {"init_pos_emb_height"}), pw = vision_int(v, {"init_pos_emb_width"});
    const int64_t T = v.contains("text_hidden_size") ? vision_int(v, {"text_hidden_size"}) : H;
    int64_t merge = 4;
    if (v.contains("merge_kernel_size")) {
      const json& m = v["merge_kernel_size"];
      if (!m.is_array() || m.size() != 2 || !m[0].is_number_integer() || !m[1].is_number_integer())
        fail("config.json: vision_config.merge_kernel_size must be [h, w]");
      merge = m[0].get<int64_t>() * m[1].get<int64_t>();
    }
    auto lin = [&](const std::string& base, int64_t rows, int64_t cols) {
      L.add(base + ".weight", L.fdt, {rows, cols});
      L.add(base + ".bias", L.fdt, {rows});
    };
    auto norm = [&](const std::string& base, int64_t n_) {
      L.add(base + ".weight", L.fdt, {n_});
      L.add(base + ".bias", L.fdt, {n_});
    };
    L.add("vision_tower.patch_embed.proj.weight", L.fdt, {C, 3, p, p});
    L.add("vision_tower.patch_embed.proj.bias", L.fdt, {C});
    L.add("vision_tower.patch_embed.pos_emb.weight", L.fdt, {ph, pw, C});
    for (int64_t i = 0; i < n; ++i) {
      const std::string B = fmt::format("vision_tower.encoder.blocks.{}.", i);
      norm(B + "norm0", C);
      norm(B + "norm1", C);
      lin(B + "wqkv", 3 * C, C);
      lin(B + "wo", C, C);
      lin(B + "mlp.fc0", I, C);
      lin(B + "mlp.fc1", C, I);
    }
    norm("vision_tower.encoder.final_layernorm", C);
    norm("mm_projector.pre_norm", C);
    lin("mm_projector.proj.0", merge * C, merge * C);
    lin("mm_projector.proj.2", T, merge * C);
  }
  return out;
}

}  // namespace sickle
