// sickle/prune/rewrite.h — stream a checkpoint to its pruned form (docs/formats.md §7).
//
// Drops every tensor of each dropped expert; renames kept experts' tensors to contiguous new
// ids in original order (bytes untouched: packed int4, fp8, scales, shapes); slices the rows of
// `mlp.gate.weight` and the entries of `mlp.gate.e_score_correction_bias` in the same order;
// copies every other tensor byte for byte (copy_file_range where the kernel offers it) and
// every non-safetensors file; rewrites config.json. Never dequantizes. Each output tensor's
// checksum (as re-read from disk by CheckpointWriter::commit) is compared with a hash of its
// source bytes. Output goes to a temporary directory renamed into place; on any error nothing
// is left behind; the source is only read.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "prune/plan.h"

namespace sickle {

struct RewriteOptions {
  std::filesystem::path out;
  bool force = false;
  uint64_t max_shard_bytes = 5ull << 30;
  bool progress = true;  // progress bar (bytes/s) on stderr
};

struct RewriteResult {
  uint64_t tensor_bytes = 0;   // bytes of tensor data written
  int64_t n_tensors = 0;       // tensors written
  int64_t n_renamed = 0;       // kept experts' tensors under a new id
  int64_t n_sliced = 0;        // router tensors sliced
  int64_t n_dropped = 0;       // tensors of dropped experts
  int64_t n_files_copied = 0;  // non-safetensors files
  int64_t n_verified = 0;      // output tensors whose checksum matched the source
  double seconds = 0;
  // Where the time went: queuing + writing all shards but the last; commit (last shard, fsync,
  // re-read + checksum of every shard); waiting for the source checksums after that.
  double seconds_copy = 0, seconds_commit = 0, seconds_source_hash_wait = 0;
  std::string out_fingerprint;
  nlohmann::json config;  // the written config.json
};

// The config.json of the pruned model: n_routed_experts (text_config for nested configs),
// and `sickle_experts_per_layer` when layers keep different counts.
nlohmann::json pruned_config(const Checkpoint& src, const PrunePlan& plan);

// Writes the pruned checkpoint to opt.out with `report` (completed with "output_fingerprint")
// as prune_report.json.
RewriteResult rewrite_pruned(const Checkpoint& src, const PrunePlan& plan, nlohmann::json report,
                             const RewriteOptions& opt);

// Compares names with digit runs as numbers ("layers.2" < "layers.10"): the output's tensor order.
bool natural_less(const std::string& a, const std::string& b);

}  // namespace sickle
