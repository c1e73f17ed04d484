// sickle/vision/config.h — Kimi-K2.5's vision settings: the MoonViT tower and projector from
// config.json's `vision_config`, the media processor from preprocessor_config.json.
//
// vision_config keys, as Kimi-K2.5's release spells them (vt_*) or as vLLM's KimiK25VisionConfig
// does (plain): hidden / intermediate / heads / layers, patch_size, init_pos_emb_{height,width,
// time}, merge_kernel_size ([2, 2]), text_hidden_size (else the text model's hidden size). The
// variants sickle runs are the released ones; any other value of pos_emb_type (divided_fixed),
// merge_type (sd2_tpool), mm_projector_type (patchmerger), video_attn_type (spatial_temporal),
// norm_type (layernorm), activation_func (gelu_pytorch_tanh), projector_hidden_act (gelu) is an
// error naming the key.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace sickle::vision {

struct VisionConfig {
  int64_t hidden = 0;        // C
  int64_t intermediate = 0;  // MLP width
  int64_t heads = 0;
  int64_t head_dim = 0;  // C / heads, a multiple of 4 (2-D rotary)
  int64_t layers = 0;
  int64_t patch = 14;
  int64_t pos_h = 0, pos_w = 0, pos_t = 4;  // learnable position table [pos_h, pos_w, C]
  int64_t merge_h = 2, merge_w = 2;
  int64_t text_hidden = 0;  // projector output width
  float ln_eps = 1e-5f;     // encoder LayerNorms (torch default)
  float projector_ln_eps = 1e-5f;
  static constexpr int64_t kRopeMax = 512;  // MoonViT's 2-D rotary table: grids up to 512 x 512

  // `root` is config.json's root; `text_hidden` the text model's hidden size. Throws Error naming
  // `where` and the key.
  static VisionConfig from_json(const nlohmann::json& root, int64_t text_hidden, const std::string& where);
};

// preprocessor_config.json `media_proc_cfg` (defaults: Kimi-K2.5's release).
struct MediaConfig {
  int64_t patch = 14;
  int64_t merge = 2;
  int64_t in_patch_limit = 16384;
  int64_t patch_limit_on_one_side = 512;
  std::array<double, 3> mean{0.5, 0.5, 0.5};
  std::array<double, 3> std{0.5, 0.5, 0.5};

  static MediaConfig from_json(const nlohmann::json& root, const std::string& where);
  // The model directory's preprocessor_config.json, the defaults when it has none.
  static MediaConfig load(const std::filesystem::path& model_dir);
};

// What `sickle inspect` says about a model's vision tower: its shape, the processor's limits and
// the placeholder tokens per image at a few common resolutions (kInspectSizes). Empty string /
// null JSON when config.json has no vision_config. `model_path` is the model directory or its
// config.json (preprocessor_config.json is read beside it when present).
inline constexpr int64_t kInspectSizes[][2] = {{1024, 1024}, {1920, 1080}, {4032, 3024}};
std::string format_vision(const nlohmann::json& root, int64_t text_hidden,
                          const std::filesystem::path& model_path);
nlohmann::json vision_json(const nlohmann::json& root, int64_t text_hidden,
                           const std::filesystem::path& model_path);

}  // namespace sickle::vision
