#include "prune/observer.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace sickle {

StatsObserver::StatsObserver(const ModelConfig& cfg) {
  for (int64_t il = 0; il < cfg.num_hidden_layers; ++il)
    if (cfg.is_moe_layer(il)) layers_.emplace(il, LayerStats(cfg.n_experts(il)));
}

void StatsObserver::on_moe_layer(const MoeLayerEvent& e) {
  auto it = layers_.find(e.layer);
  SICKLE_CHECK(it != layers_.end(), "MoE event for layer {} that the config calls dense", e.layer);
  SICKLE_CHECK(e.expert_out != nullptr, "observer asked for expert outputs but got none (layer {})", e.layer);
  LayerStats& l = it->second;
  const int64_t n_exp = l.n_experts();
  ++n_events_;
  l.tokens += double(e.n_tokens);
  for (int64_t t = 0; t < e.n_tokens; ++t) {
    for (int64_t k = 0; k < e.k; ++k) {
      const int64_t slot = t * e.k + k;
      const int32_t j = e.experts[slot];
      if (j < 0) continue;  // no expert in this slot (mask left fewer than k)
      SICKLE_CHECK(j < n_exp, "expert {} of layer {} with {} experts", j, e.layer, n_exp);
      const float* f = e.expert_out + slot * e.hidden;  // [hidden]
      double sq = 0, mx = 0;
      for (int64_t i = 0; i < e.hidden; ++i) {
        const double v = f[i];
        sq += v * v;
        mx = std::max(mx, std::fabs(v));
      }
      const double norm = std::sqrt(sq);
      const double g = e.weights[slot];
      // A NaN/Inf output or gate weight would poison the statistics (prune refuses them later).
      if (!std::isfinite(norm) || !std::isfinite(g))
        fail("layer {} (expert {} output): non-finite activation ({}) in the observed statistics", e.layer, j,
             std::isnan(norm) || std::isnan(g) ? "NaN" : "Inf");
      l.count[size_t(j)] += 1;
      l.gate_sum[size_t(j)] += g;
      l.reap_sum[size_t(j)] += g * norm;
      l.ean_sum[size_t(j)] += norm;
      l.ean_sq_sum[size_t(j)] += sq;
      l.max_act[size_t(j)] = std::max(l.max_act[size_t(j)], mx);
    }
  }
}

}  // namespace sickle
