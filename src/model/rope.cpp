// sickle/model/rope.cpp — see rope.h. Formulas from HF modeling_deepseek (yarn_find_correction_dim,
// yarn_find_correction_range, yarn_linear_ramp_mask, yarn_get_mscale), computed in f32 as torch does
// except the scalar correction range, which HF computes in Python doubles.
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "base/error.h"

namespace sickle {

double yarn_mscale(double factor, double mscale) {
  if (factor <= 1) return 1.0;
  return 0.1 * mscale * std::log(factor) + 1.0;
}

RopeParams rope_params(const ModelConfig& c) {
  const int64_t d = c.qk_rope_head_dim, half = d / 2;
  const double base = c.rope_theta;
  RopeParams p;
  p.inv_freq.resize(size_t(half));
  // freq_extra_i = 1 / base^(2i/d), computed as torch: base ** (arange(0, d, 2).float() / d).
  std::vector<float> extra(static_cast<size_t>(half)), powers(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    float expo = float(2 * i) / float(d);
    powers[i] = std::pow(float(base), expo);
    extra[i] = 1.0f / powers[i];
  }
  double softmax_scale = 1.0 / std::sqrt(double(c.qk_head_dim()));
  const bool is_yarn = c.rope_scaling && (c.rope_scaling->type == "yarn" || c.rope_scaling->type.empty()) &&
                       c.rope_scaling->factor != 1.0;
  if (c.rope_scaling && !c.rope_scaling->type.empty() && c.rope_scaling->type != "yarn" &&
      c.rope_scaling->type != "default" && c.rope_scaling->type != "none")
    fail("config: rope_scaling type '{}' is not supported (yarn)", c.rope_scaling->type);
  if (!is_yarn) {
    p.inv_freq = extra;
    p.softmax_scale = float(softmax_scale);
    return p;
  }
  const RopeScaling& rs = *c.rope_scaling;
  const double factor = rs.factor, orig = rs.original_max_position_embeddings;
  if (!(orig > 0)) fail("config: rope_scaling.original_max_position_embeddings must be positive");
  auto find_dim = [&](double n_rot) {
    return double(d) * std::log(orig / (n_rot * 2 * std::numbers::pi)) / (2 * std::log(base));
  };
  double low = std::max(std::floor(find_dim(rs.beta_fast)), 0.0);
  double high = std::min(std::ceil(find_dim(rs.beta_slow)), double(d - 1));
  if (low == high) high += 0.001;  // yarn_linear_ramp_mask: avoid a zero division
  for (int64_t i = 0; i < half; ++i) {
    float inter = 1.0f / (float(factor) * powers[i]);  // freq_inter = 1 / (factor * base^(2i/d))
    float ramp = std::clamp((float(i) - float(low)) / (float(high) - float(low)), 0.0f, 1.0f);
    float mask = 1.0f - ramp;  // inv_freq_mask
    p.inv_freq[i] = inter * (1.0f - mask) + extra[i] * mask;
  }
  p.cos_sin_scale = float(yarn_mscale(factor, rs.mscale) / yarn_mscale(factor, rs.mscale_all_dim));
  if (rs.mscale_all_dim != 0) {
    double m = yarn_mscale(factor, rs.mscale_all_dim);
    softmax_scale *= m * m;
  }
  p.softmax_scale = float(softmax_scale);
  return p;
}

}  // namespace sickle
