// sickle/model/synth_testing.h — for tests only: synth options and Kimi-K2.5's released
// vision_config, shared by the inspect and plan tests.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "model/synth.h"

namespace sickle::test_util {

// A preset with the given layer / expert counts (0: the preset's), seed 1, no progress bar.
inline SynthOptions synth_options(const std::string& preset, int64_t layers = 0, int64_t experts = 0) {
  SynthOptions o;
  o.preset = preset;
  o.seed = 1;
  o.n_layers = layers;
  o.n_experts = experts;
  o.progress = false;
  return o;
}

// Kimi-K2.5's released vision_config (docs/formats.md §2b): MoonViT-3D, 27 blocks of width 1152.
inline nlohmann::json kimi_k25_vision_config() {
  return {{"model_type", "moonvit"},      {"vt_hidden_size", 1152},     {"vt_intermediate_size", 4304},
          {"vt_num_attention_heads", 16}, {"vt_num_hidden_layers", 27}, {"patch_size", 14},
          {"init_pos_emb_height", 64},    {"init_pos_emb_width", 64},   {"init_pos_emb_time", 4},
          {"merge_kernel_size", {2, 2}},  {"mm_hidden_size", 1152},     {"text_hidden_size", 7168}};
}

}  // namespace sickle::test_util
