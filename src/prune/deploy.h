// sickle/prune/deploy.h — `sickle plan`: how far to prune for a deployment, decided before the
// download ("why 72?").
//
// From config.json alone or a checkpoint's headers (model/inspect.h ModelSource):
//  - what-if: --keep N / --ratio R weigh the model `sickle prune` would write (the same routing
//    rules refuse the same budgets: prune/plan.h make_plan), without writing it;
//  - fit: the largest keep whose memory plan fits the target (GPUs: model/inspect.h plan_memory,
//    vLLM's placement; else the CPU target's RAM) with `context` tokens for each of max_num_seqs
//    sequences, restricted to routable counts (>= num_experts_per_tok, the n_group rules) and,
//    with even_experts, to multiples of the GPU count (vLLM's EPLB asserts an even split). Memory
//    grows with keep, so the answer is found by bisection over the routable counts; the report
//    says which term binds at the next larger count.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/inspect.h"

namespace sickle {

struct DeployRequest {
  int64_t keep = 0;           // experts kept per MoE layer (0: as is, or solved by fit)
  double ratio = -1;          // fraction removed, as prune's --ratio (used when keep == 0 and ratio >= 0)
  bool fit = false;           // solve keep (when neither keep nor ratio is given)
  bool even_experts = false;  // fit: keep must be a multiple of the GPU count
  int64_t scale_layers = 0;   // report the model as if it had N layers (model/inspect.h scale_layers)
  std::optional<PlanTarget> gpu;
  std::optional<CpuTarget> cpu;
};

struct FitOutcome {
  int64_t keep = 0;                 // the answer (0: nothing routable fits)
  std::vector<int64_t> candidates;  // routable counts considered, ascending
  int64_t next_keep = 0;            // the next larger candidate (0: keep is the model's whole count)
  std::string binds;                // why next_keep (or the smallest candidate) does not fit
};

struct Deployment {
  std::string source;
  int64_t experts = 0;  // routed experts per MoE layer of the source
  int64_t keep = 0;     // what the report shows (== experts when unchanged)
  ModelReport report;
  std::optional<MemoryPlan> gpu;
  std::optional<CpuPlan> cpu;
  std::optional<FitOutcome> fit;
};

// The routed-expert count `sickle prune` keeps for --keep `keep` (or --ratio `ratio` when keep is
// 0) in every MoE layer of `c`; throws prune's error when routing would be impossible.
int64_t routable_keep(const ModelConfig& c, int64_t keep, double ratio);

Deployment plan_deployment(const ModelSource& src, const DeployRequest& req);
std::string format_deployment(const Deployment& d);
nlohmann::json deployment_json(const Deployment& d);

}  // namespace sickle
