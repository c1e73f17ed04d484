// sickle/prune/plan.h — which experts each MoE layer keeps (reap.md, "Budgets").
//
// Uniform: the same count in every layer (--keep N, or --ratio R = fraction removed).
// Global: the same total as uniform, spent where normalized scores (score / the layer's max
// score) are highest, with a floor of num_experts_per_tok per layer. Grouped routers
// (n_group > 1) keep the same count in every contiguous group: at least 2, and
// topk_group * per_group >= num_experts_per_tok, else routing is impossible.
// Super experts (--keep-super-experts): an expert whose max_act exceeds mean + 3 sd of the
// max_act of the layer's chosen experts is kept whatever its score.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/config.h"
#include "prune/criteria.h"
#include "prune/stats.h"

namespace sickle {

enum class Budget { kUniform, kGlobal };

struct PlanOptions {
  Criterion criterion = Criterion::kReap;
  int64_t keep = 0;   // experts kept per layer (uniform), or the per-layer average (global)
  double ratio = -1;  // used when keep == 0: fraction of each layer's experts removed
  Budget budget = Budget::kUniform;
  bool keep_super_experts = false;
  double super_sigma = 3.0;
  uint64_t seed = 0;
};

struct LayerPlan {
  int64_t il = 0;
  int64_t n_experts = 0;
  std::vector<double> scores;          // [n_experts]
  std::vector<int64_t> kept;           // ascending: new expert i is old expert kept[i]
  std::vector<int64_t> dropped;        // ascending
  std::vector<int64_t> super_experts;  // flagged outliers (kept when keep_super_experts)
  // The check "every kept score >= every dropped score".
  bool order_ok = true;
  double min_kept_score = 0, max_dropped_score = 0;
  std::vector<int64_t> ties;          // experts (kept or dropped) scoring exactly the boundary score
  std::vector<int64_t> out_of_order;  // kept experts scoring below a dropped one (super/group rules)
};

struct PrunePlan {
  PlanOptions options;
  std::map<int64_t, LayerPlan> layers;  // every MoE layer
  int64_t total_kept = 0;
  bool is_uniform = true;  // every layer keeps the same count
  std::vector<std::string> warnings;
};

// `stats` must hold every MoE layer of `cfg` with cfg.n_experts(il) experts; `origin_ids`
// (optional, per layer) names experts in the statistics' original numbering (for `random`).
// Throws Error naming the layer and the rule when the budget makes routing impossible.
PrunePlan make_plan(const ModelConfig& cfg, const std::map<int64_t, LayerStats>& stats,
                    const std::map<int64_t, std::vector<int64_t>>& origin_ids, const PlanOptions& opt);

// Super experts of one layer: chosen experts with max_act > mean + sigma * sd over chosen experts.
std::vector<int64_t> find_super_experts(const LayerStats& l, double sigma);

}  // namespace sickle
