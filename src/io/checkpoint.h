// sickle/io/checkpoint.h — a model directory: config.json + safetensors (sharded or not).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"

namespace sickle {

// Reads and parses a JSON file; errors name the file (and the parse position).
nlohmann::json read_json_file(const std::filesystem::path& path);

class Checkpoint;
// Tensor `name` of any float dtype (F32 / BF16 / F16) as f32, row-major; errors name the tensor
// and directory when it is missing, holds other than n elements, or is not a float.
std::vector<float> read_f32_tensor(const Checkpoint& ck, const std::string& name, int64_t n);

// Tensor names of the DeepSeek-V3 family (docs/formats.md §2), prefix-aware.
struct TensorNames {
  std::string prefix;  // "" (DeepSeek-V3, Kimi-K2) or "language_model." (Kimi-K2.5)
  std::string embed() const { return prefix + "model.embed_tokens.weight"; }
  std::string final_norm() const { return prefix + "model.norm.weight"; }
  std::string lm_head() const { return prefix + "lm_head.weight"; }
  std::string layer(int64_t il, std::string_view rest) const;
  // Base name (no ".weight") of routed expert e's projection ("gate_proj", "up_proj", "down_proj").
  std::string expert(int64_t il, int64_t e, std::string_view proj) const;
  // Prefix of all of layer il's tensors ("model.layers.<il>.").
  std::string layer_prefix(int64_t il) const;
};

class Checkpoint {
 public:
  // Reads config.json and model.safetensors.index.json (or every *.safetensors if there is no
  // index), maps and validates every shard, and checks the index against the shards.
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const nlohmann::json& config_json() const { return config_json_; }
  const ModelConfig& config() const { return config_; }
  const TensorNames& names() const { return names_; }

  bool has(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;  // throws naming the tensor and directory
  TensorView tensor(std::string_view name) const;
  const SafetensorsFile& file_of(std::string_view name) const;
  std::vector<std::string> tensor_names() const;  // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t tensor_bytes() const;  // sum of all tensors' bytes

  // A linear weight by base name (without ".weight"), in its native encoding. Throws naming the
  // tensor if parts are missing or their shapes disagree.
  bool has_weight(const std::string& base) const;
  WeightView weight(const std::string& base) const;

  // Checks every tensor the forward pass needs exists with the shape config.json implies.
  // Errors name the config field and the tensor. Called by open().
  void validate_layout() const;

 private:
  std::filesystem::path dir_;
  nlohmann::json config_json_;
  ModelConfig config_;
  TensorNames names_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>, std::less<>> index_;
};

}  // namespace sickle
