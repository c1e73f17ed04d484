// sickle/eval/sweep.h — prune to each (criterion, keep) point in a temporary place, evaluate
// against the original, and write a report directory: results.csv, results.json, plot.svg/.png
// and index.html.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/evaluate.h"
#include "prune/plan.h"

namespace sickle {

struct SweepRequest {
  std::filesystem::path model_dir, stats_path, out_dir;
  std::vector<std::string> criteria;  // names as prune's --criterion
  std::vector<int64_t> keeps;         // experts kept per layer
  Budget budget = Budget::kUniform;
  uint64_t seed = 0;
  int n_threads = 0;
  EvalOptions eval;
  bool force = false;
  // Provenance shown in the report.
  std::vector<std::string> data_files;
  std::string data_desc;
};

struct SweepPoint {
  std::string criterion;
  int64_t keep = 0;  // per layer (uniform) or the average (global)
  double pruned_fraction = 0;
  EvalResult result;
};

struct SweepReport {
  EvalResult original;  // the unpruned model alone
  std::vector<SweepPoint> points;
  nlohmann::json provenance;
};

SweepReport run_sweep(const SweepRequest& req, const std::vector<std::vector<int32_t>>& windows);

// Writes results.csv, results.json, plot.svg (+ plot.png when rsvg-convert exists) and
// index.html into req.out_dir (via a temporary directory renamed into place).
void write_sweep_report(const SweepRequest& req, const SweepReport& report);

// A fixed-width text table of the sweep (also used by `make demo`).
std::string sweep_table(const SweepReport& report);

}  // namespace sickle
