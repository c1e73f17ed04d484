// sickle/prune/prune.h — `sickle prune` as a library call: statistics -> plan -> rewrite + report.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "prune/plan.h"
#include "prune/rewrite.h"
#include "prune/stats.h"

namespace sickle {

// Statistics expressed in a model's own expert numbering.
struct MappedStats {
  std::map<int64_t, LayerStats> layers;
  std::map<int64_t, std::vector<int64_t>> origin_ids;  // il -> id in the statistics' numbering
  std::string via;                                     // "direct" or how the statistics were mapped
};

// Statistics gathered on `ck` itself, or on an ancestor of it named in `ck`'s
// prune_report.json ("ancestors": fingerprint + per layer the ancestor's id of each expert).
// Throws when the statistics belong to another model.
MappedStats map_stats_to_model(const Checkpoint& ck, const ExpertStats& stats);

struct PruneRequest {
  std::filesystem::path model_dir, stats_path, out;
  PlanOptions plan;
  bool force = false;
  bool progress = true;
  uint64_t max_shard_bytes = 5ull << 30;
};

struct PruneOutcome {
  PrunePlan plan;
  RewriteResult rewrite;
  nlohmann::json report;
};

// The plan and report without writing anything (used by prune and its --dry-run).
PruneOutcome plan_prune(const Checkpoint& ck, const ExpertStats& stats, const PruneRequest& req);
PruneOutcome prune_model(const PruneRequest& req);

}  // namespace sickle
