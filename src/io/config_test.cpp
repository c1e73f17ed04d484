// config.json in both shapes: flat and nested, rope_scaling / rope_parameters, quantization_config
// at either level; every required field, when missing or mistyped, is an error naming it.
#include "io/config.h"

#include <gtest/gtest.h>

#include "base/error.h"

namespace sickle {
namespace {
using json = nlohmann::json;

// Kimi-K2.5's text fields (docs/formats.md §1).
json kimi_text() {
  return json::parse(R"({
    "model_type": "kimi_k2", "hidden_size": 7168, "num_hidden_layers": 61, "first_k_dense_replace": 1,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 384,
    "num_experts_per_tok": 8, "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
    "num_attention_heads": 64, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "max_position_embeddings": 262144, "vocab_size": 163840,
    "rope_theta": 50000.0, "rms_norm_eps": 1e-5, "routed_scaling_factor": 2.827,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true,
    "rope_scaling": {"type": "yarn", "factor": 64.0, "original_max_position_embeddings": 4096,
                     "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}
  })");
}

json int4_quant() {
  return json::parse(R"({"quant_method": "compressed-tensors", "format": "pack-quantized",
    "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int",
    "strategy": "group", "group_size": 32, "symmetric": true}}}, "ignore": ["lm_head", "re:.*self_attn.*"]})");
}

std::string error_of(const json& root) {
  try {
    ModelConfig::from_json(root, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, FlatShape) {
  json root = kimi_text();
  root["architectures"] = {"DeepseekV3ForCausalLM"};
  ModelConfig c = ModelConfig::from_json(root, "cfg.json");
  EXPECT_FALSE(c.is_nested);
  EXPECT_EQ(c.tensor_prefix, "");
  EXPECT_EQ(c.architecture, "DeepseekV3ForCausalLM");
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.827);
  ASSERT_TRUE(c.rope_scaling);
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 64);
  EXPECT_DOUBLE_EQ(c.rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_EQ(c.quant.method, QuantMethod::kNone);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_EQ(c.n_experts(60), 384);
  EXPECT_EQ(c.n_experts(0), 0);
}

TEST(Config, NestedShapeWithQuantAtEitherLevel) {
  json root = {{"architectures", {"KimiK25ForConditionalGeneration"}},
               {"model_type", "kimi_k25"},
               {"text_config", kimi_text()},
               {"vision_config", {{"patch_size", 14}}}};
  root["quantization_config"] = int4_quant();
  ModelConfig c = ModelConfig::from_json(root, "cfg.json");
  EXPECT_TRUE(c.is_nested);
  EXPECT_TRUE(c.has_vision);
  EXPECT_EQ(c.tensor_prefix, "language_model.");
  EXPECT_EQ(c.model_type, "kimi_k2");
  EXPECT_EQ(c.quant.method, QuantMethod::kPackQuantizedInt4);
  EXPECT_EQ(c.quant.group_size, 32);
  EXPECT_EQ(c.quant.ignore.size(), 2u);
  // Inside text_config only.
  json r2 = root;
  r2.erase("quantization_config");
  r2["text_config"]["quantization_config"] = int4_quant();
  r2["text_config"]["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 64;
  EXPECT_EQ(ModelConfig::from_json(r2, "cfg.json").quant.group_size, 64);
  // Both: text_config's wins.
  json r3 = root;
  r3["text_config"]["quantization_config"] = r2["text_config"]["quantization_config"];
  EXPECT_EQ(ModelConfig::from_json(r3, "cfg.json").quant.group_size, 64);
  // text model_type deepseek_v3 is accepted too (who wrote the file differs).
  json r4 = root;
  r4["text_config"]["model_type"] = "deepseek_v3";
  EXPECT_EQ(ModelConfig::from_json(r4, "cfg.json").model_type, "deepseek_v3");
}

TEST(Config, RopeParametersWithThetaInside) {
  json t = kimi_text();
  t.erase("rope_scaling");
  t.erase("rope_theta");
  t["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0},
                          {"factor", 40.0},      {"original_max_position_embeddings", 4096},
                          {"beta_fast", 1.0},    {"beta_slow", 1.0},
                          {"mscale", 1.0},       {"mscale_all_dim", 1.0}};
  ModelConfig c = ModelConfig::from_json(t, "cfg.json");
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  ASSERT_TRUE(c.rope_scaling);
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 40.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling->beta_fast, 1.0);  // read from the file, not defaulted
  // rope_theta nowhere: an error naming it.
  t["rope_parameters"].erase("rope_theta");
  EXPECT_NE(error_of(t).find("'rope_theta'"), std::string::npos) << error_of(t);
  // A yarn block missing a field names it.
  t = kimi_text();
  t["rope_scaling"].erase("beta_slow");
  EXPECT_NE(error_of(t).find("'beta_slow'"), std::string::npos) << error_of(t);
  // No scaling at all.
  t = kimi_text();
  t["rope_scaling"] = nullptr;
  EXPECT_FALSE(ModelConfig::from_json(t, "cfg.json").rope_scaling);
  t["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_NE(error_of(t).find("'linear'"), std::string::npos);
}

TEST(Config, EveryRequiredFieldMissingIsNamed) {
  std::vector<std::string> fields = {"model_type", "q_lora_rank", "norm_topk_prob", "rope_theta"};
#define SICKLE_NAME(f) fields.push_back(#f);
  SICKLE_CONFIG_INT_FIELDS(SICKLE_NAME)
  SICKLE_CONFIG_FLOAT_FIELDS(SICKLE_NAME)
  SICKLE_CONFIG_STRING_FIELDS(SICKLE_NAME)
#undef SICKLE_NAME
  for (bool nested : {false, true}) {
    for (const auto& f : fields) {
      SCOPED_TRACE(f);
      json t = kimi_text();
      t.erase(f);
      json root =
          nested ? json{{"text_config", t}, {"architectures", {"KimiK25ForConditionalGeneration"}}} : t;
      std::string msg = error_of(root);
      EXPECT_NE(msg.find("'" + f + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
      if (nested) {
        EXPECT_NE(msg.find("text_config"), std::string::npos) << msg;
      }
    }
  }
}

TEST(Config, MistypedAndInconsistentFieldsAreNamed) {
  struct Case {
    const char* field;
    json value;
    const char* expect;
  };
  const Case cases[] = {
      {"hidden_size", "7168", "'hidden_size' must be an integer"},
      {"hidden_size", 7168.5, "'hidden_size' must be an integer"},
      {"rms_norm_eps", "small", "'rms_norm_eps' must be a number"},
      {"topk_method", 3, "'topk_method' must be a string"},
      {"q_lora_rank", "x", "'q_lora_rank' must be an integer or null"},
      {"num_experts_per_tok", 400, "'num_experts_per_tok' = 400 exceeds 'n_routed_experts' = 384"},
      {"n_group", 5, "'n_routed_experts' = 384 is not divisible by 'n_group' = 5"},
      {"topk_group", 2, "'topk_group' = 2 outside [1, n_group = 1]"},
      {"first_k_dense_replace", 62, "'first_k_dense_replace' = 62"},
      {"qk_rope_head_dim", 63, "'qk_rope_head_dim' must be even"},
      {"scoring_func", "relu", "'scoring_func' = 'relu'"},
      {"hidden_size", 0, "'hidden_size' must be positive"},
      {"model_type", "llama", "model_type 'llama'"},
      {"norm_topk_prob", 1, "'norm_topk_prob'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.field);
    json t = kimi_text();
    t[c.field] = c.value;
    std::string msg = error_of(t);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
  // q_lora_rank null = no query compression.
  json t = kimi_text();
  t["q_lora_rank"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(t, "cfg.json").q_lora_rank, 0);
  // Routing impossible with groups: 8 groups of 48, keep 1 group, top-64 > 48.
  t = kimi_text();
  t["n_group"] = 8;
  t["topk_group"] = 1;
  t["num_experts_per_tok"] = 64;
  EXPECT_NE(error_of(t).find("routing impossible"), std::string::npos) << error_of(t);
  EXPECT_NE(error_of(json::array()).find("not a JSON object"), std::string::npos);
}

// Sizes and counts are bounded where they are read: negative or beyond int32 is an error naming
// the field (qk_nope_head_dim + qk_rope_head_dim of 2^62 each overflowed int64 in qk_head_dim()).
TEST(Config, IntegerFieldsAreWithinInt32) {
  std::vector<const char*> fields = {
#define SICKLE_NAME(name) #name,
      SICKLE_CONFIG_INT_FIELDS(SICKLE_NAME)
#undef SICKLE_NAME
          "q_lora_rank",
      "moe_layer_freq"};
  for (const char* f : fields) {
    for (int64_t v : {int64_t(1) << 62, int64_t(1) << 31, int64_t(-1)}) {
      SCOPED_TRACE(std::string(f) + " = " + std::to_string(v));
      if (v == -1 && std::string_view(f) == "moe_layer_freq") continue;  // its own check says "positive"
      json t = kimi_text();
      t[f] = v;
      std::string msg = error_of(t);
      EXPECT_NE(msg.find(fmt::format("'{}' = {}", f, v)), std::string::npos) << msg;
    }
  }
  json t = kimi_text();
  t["qk_nope_head_dim"] = (int64_t(1) << 31) - 1;
  t["qk_rope_head_dim"] = (int64_t(1) << 31) - 2;
  EXPECT_EQ(ModelConfig::from_json(t, "cfg.json").qk_head_dim(), (int64_t(1) << 32) - 3);
}

TEST(Config, QuantizationConfigErrors) {
  auto with_quant = [](json q) {
    json t = kimi_text();
    t["quantization_config"] = std::move(q);
    return t;
  };
  json q = int4_quant();
  q["config_groups"]["group_0"]["weights"]["group_size"] = 12;
  EXPECT_NE(error_of(with_quant(q)).find("group_size 12"), std::string::npos);
  q = int4_quant();
  q["config_groups"]["group_0"]["weights"]["symmetric"] = false;
  EXPECT_NE(error_of(with_quant(q)).find("asymmetric"), std::string::npos);
  q = int4_quant();
  q["config_groups"]["group_0"]["weights"].erase("symmetric");
  EXPECT_NE(error_of(with_quant(q)).find("'symmetric'"), std::string::npos);
  q = int4_quant();
  q["config_groups"]["group_0"]["weights"]["num_bits"] = 8;
  EXPECT_NE(error_of(with_quant(q)).find("num_bits 8"), std::string::npos);
  q = int4_quant();
  q["format"] = "float-quantized";
  EXPECT_NE(error_of(with_quant(q)).find("'float-quantized'"), std::string::npos);
  json fp8 = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {128, 128}}};
  ModelConfig c = ModelConfig::from_json(with_quant(fp8), "cfg.json");
  EXPECT_EQ(c.quant.method, QuantMethod::kFp8Block);
  EXPECT_EQ(c.quant.block_rows, 128);
  fp8["weight_block_size"] = {128};
  EXPECT_NE(error_of(with_quant(fp8)).find("weight_block_size"), std::string::npos);
  EXPECT_NE(error_of(with_quant({{"quant_method", "gptq"}})).find("'gptq'"), std::string::npos);
}

TEST(Config, ToJsonRoundTripsTheFieldList) {
  ModelConfig c = ModelConfig::from_json(kimi_text(), "cfg.json");
  json j = c.to_json();
#define SICKLE_CHECK_FIELD(f) EXPECT_EQ(j[#f], c.f) << #f;
  SICKLE_CONFIG_INT_FIELDS(SICKLE_CHECK_FIELD)
  SICKLE_CONFIG_FLOAT_FIELDS(SICKLE_CHECK_FIELD)
  SICKLE_CONFIG_STRING_FIELDS(SICKLE_CHECK_FIELD)
#undef SICKLE_CHECK_FIELD
  EXPECT_EQ(j["rope_scaling"]["factor"], 64.0);
}

}  // namespace
}  // namespace sickle
