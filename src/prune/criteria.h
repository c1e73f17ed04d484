// sickle/prune/criteria.h — expert saliency criteria, all computed from the raw sums
// (reap.md, "Criteria worth offering"). Experts never chosen score 0 (except `random`).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "prune/stats.h"

namespace sickle {

enum class Criterion { kReap, kFrequency, kWeightedFrequency, kEan, kEanMean, kWeightedEan, kRandom };

Criterion parse_criterion(std::string_view name);  // throws Error listing the valid names
std::string_view criterion_name(Criterion c);
std::vector<std::string> criterion_names();

// Scores of one layer's experts, [n_experts]. `origin_ids` (may be empty = identity) name each
// expert in the numbering the statistics were gathered in, so `random` gives an expert the
// same score in a pruned model as in its parent: score = uniform(0, 1] from hash(seed, il, id).
//   reap               reap_sum / count          (REAP, arXiv 2510.13999 eq. 9)
//   frequency          count
//   weighted_frequency gate_sum
//   ean                ean_sum
//   ean_mean           ean_sum / count
//   weighted_ean       reap_sum
std::vector<double> expert_scores(const LayerStats& l, Criterion c, int64_t il, uint64_t seed,
                                  const std::vector<int64_t>& origin_ids = {});

}  // namespace sickle
