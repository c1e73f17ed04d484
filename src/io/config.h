// sickle/io/config.h — the DeepSeek-V3-family config.json, read explicitly.
//
// Two shapes (docs/formats.md §1): flat (DeepseekV3ForCausalLM; model_type deepseek_v3 or
// kimi_k2) and nested (KimiK25ForConditionalGeneration; text fields under `text_config`,
// tensors prefixed `language_model.`). `rope_scaling` or `rope_parameters`;
// `quantization_config` at top level, inside text_config, or both. Every field the forward
// pass needs is required: a missing or mistyped field is an error naming it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace sickle {

// One list of fields (style habit 8): name, C++ type, whether required. Parsing, JSON output
// and the printed summary all iterate this list.
#define SICKLE_CONFIG_INT_FIELDS(X)                                                                    \
  X(hidden_size)                                                                                       \
  X(num_hidden_layers) X(first_k_dense_replace) X(intermediate_size) X(moe_intermediate_size)          \
      X(n_routed_experts) X(num_experts_per_tok) X(n_shared_experts) X(n_group) X(topk_group)          \
          X(num_attention_heads) X(kv_lora_rank) X(qk_nope_head_dim) X(qk_rope_head_dim) X(v_head_dim) \
              X(max_position_embeddings) X(vocab_size)
#define SICKLE_CONFIG_FLOAT_FIELDS(X) X(rope_theta) X(rms_norm_eps) X(routed_scaling_factor)
#define SICKLE_CONFIG_STRING_FIELDS(X) X(topk_method) X(scoring_func)

struct RopeScaling {
  std::string type;  // "yarn" is the only type this family uses
  double factor = 1, original_max_position_embeddings = 0, beta_fast = 32, beta_slow = 1, mscale = 1,
         mscale_all_dim = 0;
};

enum class QuantMethod { kNone, kPackQuantizedInt4, kFp8Block };

struct QuantConfig {
  QuantMethod method = QuantMethod::kNone;
  int num_bits = 0;
  int64_t group_size = 0;  // int4: elements per scale
  bool symmetric = true;
  int64_t block_rows = 128, block_cols = 128;  // fp8 weight_block_size
  std::vector<std::string> ignore;
  std::string describe() const;
};

struct ModelConfig {
#define SICKLE_DECL_INT(name) int64_t name = 0;
#define SICKLE_DECL_FLOAT(name) double name = 0;
#define SICKLE_DECL_STRING(name) std::string name;
  SICKLE_CONFIG_INT_FIELDS(SICKLE_DECL_INT)
  SICKLE_CONFIG_FLOAT_FIELDS(SICKLE_DECL_FLOAT)
  SICKLE_CONFIG_STRING_FIELDS(SICKLE_DECL_STRING)
#undef SICKLE_DECL_INT
#undef SICKLE_DECL_FLOAT
#undef SICKLE_DECL_STRING
  int64_t q_lora_rank = 0;  // 0 when the config says null (q_proj instead of q_a/q_b)
  int64_t moe_layer_freq = 1;
  bool norm_topk_prob = true;
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id, eos_token_id;
  std::optional<RopeScaling> rope_scaling;
  QuantConfig quant;

  std::string architecture;  // architectures[0]
  std::string model_type;    // of the text model
  bool is_nested = false;    // KimiK25: text_config + language_model. prefix
  bool has_vision = false;
  std::string tensor_prefix;  // "" or "language_model."
  // sickle extension for non-uniform (global-budget) pruning: experts per layer (0 for dense).
  std::vector<int64_t> experts_per_layer;

  bool is_moe_layer(int64_t il) const;
  int64_t n_experts(int64_t il) const;  // routed experts in layer il (0 if dense)
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }

  // Parses config.json's root object. `label` names the file in errors.
  static ModelConfig from_json(const nlohmann::json& root, const std::string& label);
  static ModelConfig load(const std::filesystem::path& config_path);
  // The text-model fields as a flat JSON object (for `inspect --json`).
  nlohmann::json to_json() const;
};

// Where the text-model fields live in a config.json root (root or root["text_config"]).
nlohmann::json& text_config_of(nlohmann::json& root);

}  // namespace sickle
