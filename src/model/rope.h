// sickle/model/rope.h — YaRN RoPE parameters of the DeepSeek-V3 family (docs/formats.md §5,
// HF modeling_deepseek DeepseekV3YarnRotaryEmbedding and the attention's softmax_scale).
#pragma once

#include <vector>

#include "io/config.h"

namespace sickle {

struct RopeParams {
  std::vector<float> inv_freq;  // [qk_rope_head_dim / 2]
  float cos_sin_scale = 1;      // mscale(factor, mscale) / mscale(factor, mscale_all_dim)
  float softmax_scale = 1;  // qk_head_dim^-0.5 * mscale(factor, mscale_all_dim)^2 (when mscale_all_dim != 0)
};

// yarn_get_mscale: 1 for factor <= 1, else 0.1 * mscale * ln(factor) + 1.
double yarn_mscale(double factor, double mscale);
RopeParams rope_params(const ModelConfig& c);

}  // namespace sickle
