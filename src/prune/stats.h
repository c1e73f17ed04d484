// sickle/prune/stats.h — per-layer, per-expert raw sums gathered by `sickle observe`.
//
// Only raw sums and counts are kept (reap.md: "keep the raw sums ... so any criterion can be
// computed later and shards merge exactly"). File format: safetensors, one F64 tensor
// `layers.<L>.<stat>` of shape [n_experts] per MoE layer L (the model's layer index) and stat
// in kStatNames, plus `layers.<L>.tokens` F64 [1]; provenance in the string metadata.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sickle {

struct LayerStats {
  double tokens = 0;               // tokens that passed through this layer
  std::vector<double> count;       // [n_experts] tokens routed to the expert (|X_j|)
  std::vector<double> gate_sum;    // [n_experts] sum of g_j(x)
  std::vector<double> reap_sum;    // [n_experts] sum of g_j(x) * ||f_j(x)||_2
  std::vector<double> ean_sum;     // [n_experts] sum of ||f_j(x)||_2
  std::vector<double> ean_sq_sum;  // [n_experts] sum of ||f_j(x)||_2^2
  // [n_experts] max over X_j of max_i |f_j(x)_i|: the largest output element, the quantity the
  // "super experts" analysis (Su et al. 2025, arXiv 2507.23279) flags as an outlier.
  std::vector<double> max_act;

  explicit LayerStats(int64_t n_experts = 0);
  int64_t n_experts() const { return int64_t(count.size()); }
  // Exact merge: sums add, max_act takes the max. Sizes must agree (SICKLE_CHECK).
  void add(const LayerStats& o);
  // The experts `ids` of this layer, in that order (for mapping stats through a prune report).
  LayerStats select(const std::vector<int64_t>& ids) const;
};

struct DataFileInfo {
  std::string path;
  std::string hash;  // hash64 hex of the file's bytes
  uint64_t bytes = 0;
};

struct StatsMeta {
  std::string model_fingerprint;
  std::string model_dir;
  std::vector<DataFileInfo> data;
  std::string data_format;   // text|jsonl|chat-jsonl|tokens
  std::string data_options;  // packing/long/samples settings that define the sequence set
  int64_t samples = 0;       // calibration sequences observed
  int64_t tokens = 0;        // tokens observed
  int64_t seq_len = 0;
  int64_t n_shards = 1;
  std::vector<int64_t> shards = {0};  // which shards of n_shards these sums include
  std::string sickle_version = SICKLE_VERSION;
  std::string created;  // UTC ISO-8601

  // Same data and settings (so shards of it may be merged).
  std::string data_key() const;
};

struct ExpertStats {
  StatsMeta meta;
  std::map<int64_t, LayerStats> layers;  // model layer index -> sums

  void save(const std::filesystem::path& path) const;  // atomic: temp file + rename
  static ExpertStats load(const std::filesystem::path& path);
};

// The most shards one observation may be split into (a statistics file lists the shards it
// holds; merging lists the missing ones).
inline constexpr int64_t kMaxShards = 1 << 16;

// Names of the per-expert statistics, in file order.
inline constexpr const char* kStatNames[] = {"count",   "gate_sum",   "reap_sum",
                                             "ean_sum", "ean_sq_sum", "max_act"};

struct MergeOptions {
  bool allow_different_data = false;  // sum statistics of different calibration sets
  bool require_complete = false;      // refuse when shards of n are missing (default: warn)
};

// Sums `parts` exactly. Refuses different model fingerprints, overlapping or inconsistent
// shards, and (unless allowed) different data. `missing` receives the shard indices of n that
// no part covers (empty when complete or when data differ).
ExpertStats merge_stats(const std::vector<ExpertStats>& parts, const std::vector<std::string>& labels,
                        const MergeOptions& opt, std::vector<int64_t>* missing);

// A readable summary (`sickle stats show`): per layer tokens, experts never chosen, top and
// bottom experts by REAP score, load imbalance.
std::string describe_stats(const ExpertStats& s, int64_t n_top = 5);

std::string utc_now_iso();

}  // namespace sickle
