#include "io/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "base/error.h"
#include "base/numeric.h"

namespace sickle {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::string TensorNames::layer_prefix(int64_t il) const {
  return fmt::format("{}model.layers.{}.", prefix, il);
}
std::string TensorNames::layer(int64_t il, std::string_view rest) const {
  return layer_prefix(il) + std::string(rest);
}
std::string TensorNames::expert(int64_t il, int64_t e, std::string_view proj) const {
  return fmt::format("{}model.layers.{}.mlp.experts.{}.{}", prefix, il, e, proj);
}

json read_json_file(const fs::path& p) {
  std::ifstream in(p);
  if (!in) fail("{}: cannot open", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", p.string(), e.what());
  }
}

std::unique_ptr<Checkpoint> Checkpoint::open(const fs::path& dir) {
  auto ck = std::unique_ptr<Checkpoint>(new Checkpoint());
  ck->dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail("{}: not a directory (expected a model directory with config.json)", dir.string());
  fs::path cfg = dir / "config.json";
  if (!fs::exists(cfg, ec)) fail("{}: no config.json", dir.string());
  ck->config_json_ = read_json_file(cfg);
  ck->config_ = ModelConfig::from_json(ck->config_json_, cfg.string());
  ck->names_.prefix = ck->config_.tensor_prefix;

  fs::path idx = dir / "model.safetensors.index.json";
  std::vector<std::string> shard_names;
  json weight_map;
  if (fs::exists(idx, ec)) {
    json index = read_json_file(idx);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: missing object 'weight_map'", idx.string());
    weight_map = index["weight_map"];
    std::set<std::string> uniq;
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
      if (!it.value().is_string()) fail("{}: weight_map['{}'] is not a string", idx.string(), it.key());
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        fail("{}: weight_map['{}'] = '{}' is not a plain file name", idx.string(), it.key(), f);
      uniq.insert(f);
    }
    shard_names.assign(uniq.begin(), uniq.end());
    for (const auto& s : shard_names)
      if (!fs::exists(dir / s, ec)) fail("{}: shard '{}' named in the index is missing", idx.string(), s);
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") shard_names.push_back(e.path().filename().string());
    std::sort(shard_names.begin(), shard_names.end());
    if (shard_names.empty())
      fail("{}: no model.safetensors.index.json and no *.safetensors files", dir.string());
  }
  for (const auto& s : shard_names) {
    ck->files_.push_back(SafetensorsFile::open(dir / s));
    size_t fi = ck->files_.size() - 1;
    for (const auto& t : ck->files_.back()->tensors()) {
      auto [it, inserted] = ck->index_.emplace(t.name, std::make_pair(fi, &t));
      if (!inserted)
        fail("{}: tensor '{}' appears in both {} and {}", dir.string(), t.name,
             ck->files_[it->second.first]->path().filename().string(), s);
      if (!weight_map.is_null()) {
        auto w = weight_map.find(t.name);
        if (w == weight_map.end())
          fail("{}: tensor '{}' is in shard {} but not in the index", idx.string(), t.name, s);
        if (w->get<std::string>() != s)
          fail("{}: index says tensor '{}' is in {} but it is in {}", idx.string(), t.name,
               w->get<std::string>(), s);
      }
    }
  }
  if (!weight_map.is_null())
    for (auto it = weight_map.begin(); it != weight_map.end(); ++it)
      if (!ck->index_.count(it.key()))
        fail("{}: tensor '{}' is listed in the index (in {}) but that shard does not contain it",
             idx.string(), it.key(), it.value().get<std::string>());
  ck->validate_layout();
  return ck;
}

bool Checkpoint::has(std::string_view name) const { return index_.find(name) != index_.end(); }

const TensorInfo& Checkpoint::info(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: tensor '{}' not found in the checkpoint", dir_.string(), name);
  return *it->second.second;
}

TensorView Checkpoint::tensor(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: tensor '{}' not found in the checkpoint", dir_.string(), name);
  return files_[it->second.first]->view(*it->second.second);
}

const SafetensorsFile& Checkpoint::file_of(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: tensor '{}' not found in the checkpoint", dir_.string(), name);
  return *files_[it->second.first];
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [n, _] : index_) out.push_back(n);
  return out;
}

uint64_t Checkpoint::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& [_, v] : index_) n += v.second->nbytes();
  return n;
}

bool Checkpoint::has_weight(const std::string& base) const {
  return has(base + ".weight") || has(base + ".weight_packed");
}

WeightView Checkpoint::weight(const std::string& base) const {
  WeightView w;
  w.name = base;
  const std::string where = dir_.string();
  if (has(base + ".weight_packed")) {
    TensorView packed = tensor(base + ".weight_packed");
    if (!has(base + ".weight_scale"))
      fail("{}: '{}.weight_packed' has no '{}.weight_scale'", where, base, base);
    if (!has(base + ".weight_shape"))
      fail("{}: '{}.weight_packed' has no '{}.weight_shape'", where, base, base);
    TensorView scale = tensor(base + ".weight_scale");
    TensorView shape = tensor(base + ".weight_shape");
    if (shape.dtype != DType::I32 && shape.dtype != DType::I64)
      fail("{}: '{}.weight_shape' has dtype {}, expected I32", where, base, dtype_name(shape.dtype));
    if (shape.numel() != 2)
      fail("{}: '{}.weight_shape' has {} elements, expected 2", where, base, shape.numel());
    int64_t rows, cols;
    if (shape.dtype == DType::I32) {
      int32_t v[2];
      std::memcpy(v, shape.data, 8);
      rows = v[0];
      cols = v[1];
    } else {
      int64_t v[2];
      std::memcpy(v, shape.data, 16);
      rows = v[0];
      cols = v[1];
    }
    if (rows <= 0 || cols <= 0 || cols % 8)
      fail("{}: '{}.weight_shape' = [{}, {}] is not a valid int4 shape (in % 8 == 0)", where, base, rows,
           cols);
    if (packed.dtype != DType::I32 && packed.dtype != DType::U32)
      fail("{}: '{}.weight_packed' has dtype {}, expected I32", where, base, dtype_name(packed.dtype));
    if (packed.shape != std::vector<int64_t>{rows, cols / 8})
      fail("{}: '{}.weight_packed' has shape {}, expected [{}, {}] from weight_shape [{}, {}]", where, base,
           packed.shape_str(), rows, cols / 8, rows, cols);
    if (scale.dtype != DType::BF16)
      fail("{}: '{}.weight_scale' has dtype {}, expected BF16", where, base, dtype_name(scale.dtype));
    if (scale.shape.size() != 2 || scale.shape[0] != rows || scale.shape[1] <= 0 || cols % scale.shape[1])
      fail("{}: '{}.weight_scale' has shape {}, expected [{}, in/group] with in = {}", where, base,
           scale.shape_str(), rows, cols);
    int64_t group = cols / scale.shape[1];
    if (config_.quant.method == QuantMethod::kPackQuantizedInt4 && group != config_.quant.group_size)
      fail("{}: '{}.weight_scale' implies group size {} but quantization_config says group_size {}", where,
           base, group, config_.quant.group_size);
    w.encoding = WeightEncoding::kInt4Group;
    w.rows = rows;
    w.cols = cols;
    w.data = packed.data;
    w.scale_bf16 = reinterpret_cast<const uint16_t*>(scale.data);
    w.group_size = group;
    w.scale_cols = scale.shape[1];
    return w;
  }
  TensorView t = tensor(base + ".weight");
  if (t.shape.size() != 2)
    fail("{}: '{}.weight' has shape {}, expected 2 dimensions", where, base, t.shape_str());
  w.rows = t.shape[0];
  w.cols = t.shape[1];
  w.data = t.data;
  switch (t.dtype) {
    case DType::BF16: w.encoding = WeightEncoding::kBF16; break;
    case DType::F16: w.encoding = WeightEncoding::kF16; break;
    case DType::F32: w.encoding = WeightEncoding::kF32; break;
    case DType::F8_E4M3: {
      w.encoding = WeightEncoding::kFp8Block;
      if (!has(base + ".weight_scale_inv"))
        fail("{}: fp8 weight '{}.weight' has no '{}.weight_scale_inv'", where, base, base);
      TensorView s = tensor(base + ".weight_scale_inv");
      w.block_rows = config_.quant.method == QuantMethod::kFp8Block ? config_.quant.block_rows : 128;
      w.block_cols = config_.quant.method == QuantMethod::kFp8Block ? config_.quant.block_cols : 128;
      int64_t br = (w.rows + w.block_rows - 1) / w.block_rows,
              bc = (w.cols + w.block_cols - 1) / w.block_cols;
      if (s.dtype != DType::F32)
        fail("{}: '{}.weight_scale_inv' has dtype {}, expected F32", where, base, dtype_name(s.dtype));
      if (s.shape != std::vector<int64_t>{br, bc})
        fail("{}: '{}.weight_scale_inv' has shape {}, expected [{}, {}] for weight {} with {}x{} blocks",
             where, base, s.shape_str(), br, bc, t.shape_str(), w.block_rows, w.block_cols);
      w.scale_f32 = reinterpret_cast<const float*>(s.data);
      w.scale_cols = bc;
      break;
    }
    default:
      fail("{}: '{}.weight' has dtype {}, which is not a weight encoding sickle runs", where, base,
           dtype_name(t.dtype));
  }
  return w;
}

void Checkpoint::validate_layout() const {
  const ModelConfig& c = config_;
  const std::string where = (dir_ / "config.json").string();
  // Row/column expressions: a bare field name, or an expression with the fields already quoted.
  auto quoted = [](const char* f) {
    return std::strchr(f, '\'') ? std::string(f) : fmt::format("field '{}'", f);
  };
  static constexpr const char* kQHeads = "'num_attention_heads' x ('qk_nope_head_dim' + 'qk_rope_head_dim')";
  auto expect_weight = [&](const std::string& base, int64_t rows, int64_t cols, const char* row_field,
                           const char* col_field) {
    if (!has_weight(base)) fail("{}: tensor '{}.weight' (or .weight_packed) is missing", dir_.string(), base);
    WeightView w = weight(base);
    if (w.rows != rows)
      fail("{}: config {} implies {} rows for '{}' but the tensor has shape [{}, {}]", where,
           quoted(row_field), rows, base, w.rows, w.cols);
    if (w.cols != cols)
      fail("{}: config {} implies {} columns for '{}' but the tensor has shape [{}, {}]", where,
           quoted(col_field), cols, base, w.rows, w.cols);
  };
  auto expect_vec = [&](const std::string& name, int64_t n, const char* field) {
    const TensorInfo& t = info(name);
    if (t.shape != std::vector<int64_t>{n})
      fail("{}: field '{}' = {} but tensor '{}' has shape {}", where, field, n, name,
           shape_to_string(t.shape));
  };
  const int64_t H = c.hidden_size;
  expect_weight(names_.embed().substr(0, names_.embed().size() - 7), c.vocab_size, H, "vocab_size",
                "hidden_size");
  expect_vec(names_.final_norm(), H, "hidden_size");
  if (has(names_.lm_head()) || !c.tie_word_embeddings)
    expect_weight(names_.lm_head().substr(0, names_.lm_head().size() - 7), c.vocab_size, H, "vocab_size",
                  "hidden_size");
  const int64_t nh = c.num_attention_heads;
  for (int64_t il = 0; il < c.num_hidden_layers; ++il) {
    auto L = [&](const char* rest) { return names_.layer(il, rest); };
    if (!has(L("input_layernorm.weight")))
      fail("{}: field 'num_hidden_layers' = {} but tensor '{}' is missing", where, c.num_hidden_layers,
           L("input_layernorm.weight"));
    expect_vec(L("input_layernorm.weight"), H, "hidden_size");
    expect_vec(L("post_attention_layernorm.weight"), H, "hidden_size");
    if (c.q_lora_rank > 0) {
      expect_weight(L("self_attn.q_a_proj"), c.q_lora_rank, H, "q_lora_rank", "hidden_size");
      expect_vec(L("self_attn.q_a_layernorm.weight"), c.q_lora_rank, "q_lora_rank");
      expect_weight(L("self_attn.q_b_proj"), nh * c.qk_head_dim(), c.q_lora_rank, kQHeads, "'q_lora_rank'");
    } else {
      expect_weight(L("self_attn.q_proj"), nh * c.qk_head_dim(), H, kQHeads, "'hidden_size'");
    }
    expect_weight(L("self_attn.kv_a_proj_with_mqa"), c.kv_lora_rank + c.qk_rope_head_dim, H,
                  "'kv_lora_rank' + 'qk_rope_head_dim'", "'hidden_size'");
    expect_vec(L("self_attn.kv_a_layernorm.weight"), c.kv_lora_rank, "kv_lora_rank");
    expect_weight(L("self_attn.kv_b_proj"), nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank,
                  "'num_attention_heads' x ('qk_nope_head_dim' + 'v_head_dim')", "'kv_lora_rank'");
    expect_weight(L("self_attn.o_proj"), H, nh * c.v_head_dim, "'hidden_size'",
                  "'num_attention_heads' x 'v_head_dim'");
    if (!c.is_moe_layer(il)) {
      expect_weight(L("mlp.gate_proj"), c.intermediate_size, H, "intermediate_size", "hidden_size");
      expect_weight(L("mlp.up_proj"), c.intermediate_size, H, "intermediate_size", "hidden_size");
      expect_weight(L("mlp.down_proj"), H, c.intermediate_size, "hidden_size", "intermediate_size");
      continue;
    }
    const int64_t E = c.n_experts(il);
    const char* efield = c.experts_per_layer.empty() ? "n_routed_experts" : "sickle_experts_per_layer";
    expect_weight(L("mlp.gate"), E, H, efield, "hidden_size");
    if (c.topk_method == "noaux_tc") {
      expect_vec(L("mlp.gate.e_score_correction_bias"), E, efield);
    }
    if (c.n_shared_experts > 0) {
      int64_t I = c.moe_intermediate_size * c.n_shared_experts;
      const char* shared = "'moe_intermediate_size' x 'n_shared_experts'";
      expect_weight(L("mlp.shared_experts.gate_proj"), I, H, shared, "hidden_size");
      expect_weight(L("mlp.shared_experts.up_proj"), I, H, shared, "hidden_size");
      expect_weight(L("mlp.shared_experts.down_proj"), H, I, "hidden_size", shared);
    }
    for (int64_t e = 0; e < E; ++e) {
      if (!has_weight(names_.expert(il, e, "gate_proj")))
        fail("{}: field '{}' = {} but expert {} of layer {} is missing ('{}')", where, efield, E, e, il,
             names_.expert(il, e, "gate_proj"));
      expect_weight(names_.expert(il, e, "gate_proj"), c.moe_intermediate_size, H, "moe_intermediate_size",
                    "hidden_size");
      expect_weight(names_.expert(il, e, "up_proj"), c.moe_intermediate_size, H, "moe_intermediate_size",
                    "hidden_size");
      expect_weight(names_.expert(il, e, "down_proj"), H, c.moe_intermediate_size, "hidden_size",
                    "moe_intermediate_size");
    }
    if (has_weight(names_.expert(il, E, "gate_proj")))
      fail("{}: field '{}' = {} but layer {} has an expert {} ('{}')", where, efield, E, il, E,
           names_.expert(il, E, "gate_proj"));
  }
  // Extra layers past num_hidden_layers (DeepSeek-V3's MTP layer 61) are ignored by inference.
}

std::vector<float> read_f32_tensor(const Checkpoint& ck, const std::string& name, int64_t n) {
  TensorView t = ck.tensor(name);
  if (t.numel() != n)
    fail("{}: tensor '{}' has {} elements, expected {}", ck.dir().string(), name, t.numel(), n);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::F32: v[i] = t.as<float>()[i]; break;
      case DType::BF16: v[i] = bf16_to_f32(t.as<uint16_t>()[i]); break;
      case DType::F16: v[i] = f16_to_f32(t.as<uint16_t>()[i]); break;
      default:
        fail("{}: tensor '{}' has dtype {}, expected F32, BF16 or F16", ck.dir().string(), name,
             dtype_name(t.dtype));
    }
  }
  return v;
}

}  // namespace sickle
