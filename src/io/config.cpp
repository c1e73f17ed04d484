#include "io/config.h"

#include <fstream>
#include <sstream>

#include "base/error.h"

namespace sickle {
using json = nlohmann::json;

namespace {

const json* find_field(const json& obj, const char* name) {
  auto it = obj.find(name);
  return it == obj.end() ? nullptr : &*it;
}

// Sizes and counts of this family are far below 2^31 (Kimi-K2: vocab 163840, positions 262144),
// and fields up to that bound keep sums and products of two in int64 wherever they are combined.
constexpr int64_t kMaxConfigInt = INT32_MAX;

int64_t checked_int(const json& v, const char* name, const std::string& label) {
  if (!v.is_number_integer()) fail("{}: field '{}' must be an integer, got {}", label, name, v.dump());
  if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(kMaxConfigInt)
                             : v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxConfigInt)
    fail("{}: field '{}' = {} is outside [0, {}]", label, name, v.dump(), kMaxConfigInt);
  return v.get<int64_t>();
}

int64_t req_int(const json& obj, const char* name, const std::string& label) {
  const json* v = find_field(obj, name);
  if (!v) fail("{}: missing required field '{}'", label, name);
  return checked_int(*v, name, label);
}

double req_float(const json& obj, const char* name, const std::string& label) {
  const json* v = find_field(obj, name);
  if (!v) fail("{}: missing required field '{}'", label, name);
  if (!v->is_number()) fail("{}: field '{}' must be a number, got {}", label, name, v->dump());
  return v->get<double>();
}

std::string req_string(const json& obj, const char* name, const std::string& label) {
  const json* v = find_field(obj, name);
  if (!v) fail("{}: missing required field '{}'", label, name);
  if (!v->is_string()) fail("{}: field '{}' must be a string, got {}", label, name, v->dump());
  return v->get<std::string>();
}

QuantConfig parse_quant(const json& q, const std::string& label) {
  QuantConfig out;
  if (!q.is_object()) fail("{}: 'quantization_config' must be an object", label);
  std::string method = q.value("quant_method", "");
  if (q.contains("ignore") && q["ignore"].is_array())
    for (const auto& s : q["ignore"])
      if (s.is_string()) out.ignore.push_back(s.get<std::string>());
  if (method == "compressed-tensors") {
    std::string format = q.value("format", "");
    if (format != "pack-quantized")
      fail("{}: quantization_config.format '{}' is not supported (only 'pack-quantized')", label, format);
    const json* groups = find_field(q, "config_groups");
    if (!groups || !groups->is_object() || groups->empty())
      fail("{}: quantization_config.config_groups missing or empty", label);
    if (groups->size() != 1)
      fail("{}: quantization_config.config_groups has {} groups; sickle supports one", label, groups->size());
    const json& g = groups->begin().value();
    const json* w = find_field(g, "weights");
    if (!w || !w->is_object()) fail("{}: quantization_config.config_groups.*.weights missing", label);
    std::string l2 = label + " quantization_config.config_groups." + groups->begin().key() + ".weights";
    out.num_bits = int(req_int(*w, "num_bits", l2));
    if (out.num_bits != 4) fail("{}: num_bits {} not supported (only 4)", l2, out.num_bits);
    std::string type = w->value("type", "int");
    if (type != "int") fail("{}: type '{}' not supported (only int)", l2, type);
    std::string strategy = w->value("strategy", "group");
    if (strategy != "group") fail("{}: strategy '{}' not supported (only group)", l2, strategy);
    out.group_size = req_int(*w, "group_size", l2);
    if (out.group_size <= 0 || out.group_size % 8)
      fail("{}: group_size {} must be a positive multiple of 8", l2, out.group_size);
    const json* sym = find_field(*w, "symmetric");
    if (!sym || !sym->is_boolean()) fail("{}: missing boolean field 'symmetric'", l2);
    out.symmetric = sym->get<bool>();
    if (!out.symmetric) fail("{}: asymmetric int4 is not supported", l2);
    out.method = QuantMethod::kPackQuantizedInt4;
  } else if (method == "fp8") {
    out.method = QuantMethod::kFp8Block;
    std::string fmt_name = q.value("fmt", "e4m3");
    if (fmt_name != "e4m3")
      fail("{}: quantization_config.fmt '{}' not supported (only e4m3)", label, fmt_name);
    const json* bs = find_field(q, "weight_block_size");
    if (!bs || !bs->is_array() || bs->size() != 2 || !(*bs)[0].is_number_integer() ||
        !(*bs)[1].is_number_integer())
      fail("{}: quantization_config.weight_block_size must be [rows, cols]", label);
    out.block_rows = (*bs)[0].get<int64_t>();
    out.block_cols = (*bs)[1].get<int64_t>();
    if (out.block_rows <= 0 || out.block_cols <= 0) fail("{}: weight_block_size must be positive", label);
    out.num_bits = 8;
  } else {
    fail("{}: quantization_config.quant_method '{}' not supported (compressed-tensors or fp8)", label,
         method);
  }
  return out;
}

}  // namespace

std::string QuantConfig::describe() const {
  switch (method) {
    case QuantMethod::kNone: return "none";
    case QuantMethod::kPackQuantizedInt4:
      return "int4 pack-quantized, group " + std::to_string(group_size) + ", symmetric";
    case QuantMethod::kFp8Block:
      return "fp8 e4m3, " + std::to_string(block_rows) + "x" + std::to_string(block_cols) + " block scales";
  }
  return "?";
}

json& text_config_of(json& root) {
  if (root.contains("text_config") && root["text_config"].is_object()) return root["text_config"];
  return root;
}

bool ModelConfig::is_moe_layer(int64_t il) const {
  if (il < first_k_dense_replace) return false;
  if (n_routed_experts <= 0) return false;
  return moe_layer_freq <= 1 || (il % moe_layer_freq) == 0;
}

int64_t ModelConfig::n_experts(int64_t il) const {
  if (!is_moe_layer(il)) return 0;
  if (!experts_per_layer.empty()) return experts_per_layer.at(size_t(il));
  return n_routed_experts;
}

ModelConfig ModelConfig::from_json(const json& root, const std::string& label) {
  if (!root.is_object()) fail("{}: config is not a JSON object", label);
  ModelConfig c;
  if (root.contains("architectures") && root["architectures"].is_array() && !root["architectures"].empty() &&
      root["architectures"][0].is_string())
    c.architecture = root["architectures"][0].get<std::string>();
  const json* text = &root;
  std::string tlabel = label;
  if (root.contains("text_config")) {
    if (!root["text_config"].is_object()) fail("{}: 'text_config' must be an object", label);
    text = &root["text_config"];
    tlabel = label + " text_config";
    c.is_nested = true;
    c.tensor_prefix = "language_model.";
    c.has_vision = root.contains("vision_config");
  }
  c.model_type = req_string(*text, "model_type", tlabel);
  static const char* kTypes[] = {"deepseek_v3", "kimi_k2", "deepseek_v2", "kimi_k25"};
  bool known = false;
  for (auto t : kTypes) known |= c.model_type == t;
  if (!known)
    fail("{}: model_type '{}' is not a DeepSeek-V3-family model (deepseek_v3, kimi_k2)", tlabel,
         c.model_type);

#define SICKLE_READ_INT(name) c.name = req_int(*text, #name, tlabel);
  // rope_theta may instead sit inside rope_parameters (newer transformers): read below.
  const bool has_top_rope_theta = find_field(*text, "rope_theta") != nullptr;
#define SICKLE_READ_FLOAT(name) \
  if (std::string_view(#name) != "rope_theta" || has_top_rope_theta) c.name = req_float(*text, #name, tlabel);
#define SICKLE_READ_STRING(name) c.name = req_string(*text, #name, tlabel);
  SICKLE_CONFIG_INT_FIELDS(SICKLE_READ_INT)
  SICKLE_CONFIG_FLOAT_FIELDS(SICKLE_READ_FLOAT)
  SICKLE_CONFIG_STRING_FIELDS(SICKLE_READ_STRING)
#undef SICKLE_READ_INT
#undef SICKLE_READ_FLOAT
#undef SICKLE_READ_STRING

  const json* ql = find_field(*text, "q_lora_rank");
  if (!ql)
    fail("{}: missing required field 'q_lora_rank' (null if the model has no query compression)", tlabel);
  if (ql->is_null()) c.q_lora_rank = 0;
  else if (ql->is_number_integer()) c.q_lora_rank = checked_int(*ql, "q_lora_rank", tlabel);
  else fail("{}: field 'q_lora_rank' must be an integer or null, got {}", tlabel, ql->dump());
  const json* ntp = find_field(*text, "norm_topk_prob");
  if (!ntp || !ntp->is_boolean()) fail("{}: missing boolean field 'norm_topk_prob'", tlabel);
  c.norm_topk_prob = ntp->get<bool>();
  if (const json* f = find_field(*text, "moe_layer_freq")) {
    if (!f->is_number_integer() || f->get<int64_t>() < 1)
      fail("{}: field 'moe_layer_freq' must be a positive integer", tlabel);
    c.moe_layer_freq = checked_int(*f, "moe_layer_freq", tlabel);
  }
  if (const json* t = find_field(*text, "tie_word_embeddings"); t && t->is_boolean())
    c.tie_word_embeddings = t->get<bool>();
  for (const json* src : {text, &root}) {
    if (!c.bos_token_id)
      if (const json* b = find_field(*src, "bos_token_id"); b && b->is_number_integer())
        c.bos_token_id = b->get<int64_t>();
    if (!c.eos_token_id)
      if (const json* e = find_field(*src, "eos_token_id"); e && e->is_number_integer())
        c.eos_token_id = e->get<int64_t>();
  }

  const json* rope = find_field(*text, "rope_scaling");
  std::string rope_key = "rope_scaling";
  if (!rope || rope->is_null()) {
    rope = find_field(*text, "rope_parameters");
    rope_key = "rope_parameters";
  }
  if (rope && !rope->is_null()) {
    if (!rope->is_object()) fail("{}: '{}' must be an object or null", tlabel, rope_key);
    std::string rl = tlabel + " " + rope_key;
    std::string type =
        rope->contains("type") ? req_string(*rope, "type", rl) : req_string(*rope, "rope_type", rl);
    if (type == "yarn") {
      RopeScaling r;
      r.type = type;
      r.factor = req_float(*rope, "factor", rl);
      r.original_max_position_embeddings = req_float(*rope, "original_max_position_embeddings", rl);
      r.beta_fast = req_float(*rope, "beta_fast", rl);
      r.beta_slow = req_float(*rope, "beta_slow", rl);
      r.mscale = req_float(*rope, "mscale", rl);
      r.mscale_all_dim = req_float(*rope, "mscale_all_dim", rl);
      if (r.factor <= 0) fail("{}: factor must be positive, got {}", rl, r.factor);
      c.rope_scaling = r;
    } else if (type != "default") {
      fail("{}: rope type '{}' not supported (yarn or default)", rl, type);
    }
    // rope_parameters may carry rope_theta too (newer transformers).
    if (rope_key == "rope_parameters" && rope->contains("rope_theta")) {
      c.rope_theta = req_float(*rope, "rope_theta", rl);
    } else if (!has_top_rope_theta) {
      fail("{}: missing required field 'rope_theta' (at top level or inside rope_parameters)", tlabel);
    }
  } else if (!has_top_rope_theta) {
    fail("{}: missing required field 'rope_theta'", tlabel);
  }
  if (c.rope_theta <= 0) fail("{}: field 'rope_theta' must be positive, got {}", tlabel, c.rope_theta);

  const json* qtext = find_field(*text, "quantization_config");
  const json* qroot = text != &root ? find_field(root, "quantization_config") : nullptr;
  if (qtext && !qtext->is_null()) c.quant = parse_quant(*qtext, tlabel);
  else if (qroot && !qroot->is_null()) c.quant = parse_quant(*qroot, label);

  if (const json* epl = find_field(*text, "sickle_experts_per_layer")) {
    if (!epl->is_array() || int64_t(epl->size()) != c.num_hidden_layers)
      fail("{}: 'sickle_experts_per_layer' must be an array of num_hidden_layers ({}) integers", tlabel,
           c.num_hidden_layers);
    for (const auto& v : *epl) {
      c.experts_per_layer.push_back(checked_int(v, "sickle_experts_per_layer", tlabel));
    }
  }

  // Internal consistency (each message names the field).
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) fail("{}: field '{}' must be positive, got {}", tlabel, name, v);
  };
  positive("hidden_size", c.hidden_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("kv_lora_rank", c.kv_lora_rank);
  positive("qk_rope_head_dim", c.qk_rope_head_dim);
  positive("v_head_dim", c.v_head_dim);
  positive("vocab_size", c.vocab_size);
  positive("num_experts_per_tok", c.num_experts_per_tok);
  positive("n_group", c.n_group);
  if (c.qk_rope_head_dim % 2)
    fail("{}: field 'qk_rope_head_dim' must be even, got {}", tlabel, c.qk_rope_head_dim);
  if (c.first_k_dense_replace < 0 || c.first_k_dense_replace > c.num_hidden_layers)
    fail("{}: field 'first_k_dense_replace' = {} outside [0, num_hidden_layers = {}]", tlabel,
         c.first_k_dense_replace, c.num_hidden_layers);
  if (c.num_experts_per_tok > c.n_routed_experts)
    fail("{}: field 'num_experts_per_tok' = {} exceeds 'n_routed_experts' = {}", tlabel,
         c.num_experts_per_tok, c.n_routed_experts);
  if (c.n_routed_experts % c.n_group)
    fail("{}: field 'n_routed_experts' = {} is not divisible by 'n_group' = {}", tlabel, c.n_routed_experts,
         c.n_group);
  if (c.topk_group < 1 || c.topk_group > c.n_group)
    fail("{}: field 'topk_group' = {} outside [1, n_group = {}]", tlabel, c.topk_group, c.n_group);
  if (c.topk_group * (c.n_routed_experts / c.n_group) < c.num_experts_per_tok)
    fail("{}: topk_group ({}) x experts per group ({}) < num_experts_per_tok ({}): routing impossible",
         tlabel, c.topk_group, c.n_routed_experts / c.n_group, c.num_experts_per_tok);
  if (c.scoring_func != "sigmoid" && c.scoring_func != "softmax")
    fail("{}: field 'scoring_func' = '{}' not supported (sigmoid or softmax)", tlabel, c.scoring_func);
  if (c.topk_method != "noaux_tc" && c.topk_method != "greedy" && c.topk_method != "group_limited_greedy")
    fail("{}: field 'topk_method' = '{}' not supported", tlabel, c.topk_method);
  if (c.rms_norm_eps <= 0) fail("{}: field 'rms_norm_eps' must be positive", tlabel);
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  json root;
  try {
    root = json::parse(ss.str());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
  return from_json(root, path.string());
}

json ModelConfig::to_json() const {
  json j;
#define SICKLE_OUT(name) j[#name] = name;
  SICKLE_CONFIG_INT_FIELDS(SICKLE_OUT)
  SICKLE_CONFIG_FLOAT_FIELDS(SICKLE_OUT)
  SICKLE_CONFIG_STRING_FIELDS(SICKLE_OUT)
#undef SICKLE_OUT
  j["q_lora_rank"] = q_lora_rank;
  j["moe_layer_freq"] = moe_layer_freq;
  j["norm_topk_prob"] = norm_topk_prob;
  j["architecture"] = architecture;
  j["model_type"] = model_type;
  j["is_nested"] = is_nested;
  j["tensor_prefix"] = tensor_prefix;
  if (rope_scaling) {
    j["rope_scaling"] = {{"type", rope_scaling->type},
                         {"factor", rope_scaling->factor},
                         {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings},
                         {"beta_fast", rope_scaling->beta_fast},
                         {"beta_slow", rope_scaling->beta_slow},
                         {"mscale", rope_scaling->mscale},
                         {"mscale_all_dim", rope_scaling->mscale_all_dim}};
  }
  j["quantization"] = quant.describe();
  if (!experts_per_layer.empty()) j["sickle_experts_per_layer"] = experts_per_layer;
  return j;
}

}  // namespace sickle
