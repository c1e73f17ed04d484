// sickle/prune/observer.h — the ForwardObserver that accumulates REAP statistics.
//
// Per MoE layer event (model/hooks.h), for each token x and each chosen expert j with gate
// weight g and raw output f = f_j(x): count += 1, gate_sum += g, reap_sum += g*||f||,
// ean_sum += ||f||, ean_sq_sum += ||f||^2, max_act = max(max_act, max_i |f_i|); tokens += 1.
// Norms and sums in f64 so shards merge exactly regardless of order up to f64 rounding.
#pragma once

#include <cstdint>
#include <map>

#include "io/config.h"
#include "model/hooks.h"
#include "prune/stats.h"

namespace sickle {

class StatsObserver : public ForwardObserver {
 public:
  explicit StatsObserver(const ModelConfig& cfg);
  bool wants_expert_outputs() const override { return true; }
  void on_moe_layer(const MoeLayerEvent& e) override;

  const std::map<int64_t, LayerStats>& layers() const { return layers_; }
  std::map<int64_t, LayerStats> take() { return std::move(layers_); }
  int64_t n_events() const { return n_events_; }

 private:
  std::map<int64_t, LayerStats> layers_;
  int64_t n_events_ = 0;
};

}  // namespace sickle
