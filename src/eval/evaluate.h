// sickle/eval/evaluate.h — run a model (and optionally its teacher) over token windows and
// collect quality metrics, expert load and sanity findings. The forward pass is model/'s; this
// file only feeds it and scores what comes out.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "eval/metrics.h"
#include "io/checkpoint.h"
#include "model/model.h"

namespace sickle {

struct EvalOptions {
  int64_t chunk = 256;  // positions per forward call (bounds the [chunk, vocab] logits buffers)
  bool show_progress = true;
  // [vocab]: 1 for tokens whose text contains a newline (line_end_tokens); empty = no
  // next-line exact-match metric.
  std::vector<uint8_t> line_end;
};

struct EvalResult {
  EvalTotals totals;
  // Per MoE layer: how many times each expert was chosen by the student (its own numbering).
  std::map<int64_t, std::vector<int64_t>> expert_load;
  int64_t n_windows = 0;
  double seconds = 0;
  // Findings that make a checkpoint suspect: non-finite logits, experts never chosen, ...
  std::vector<std::string> warnings;
  int64_t dead_experts() const;  // experts never chosen, summed over layers
  // totals.values() plus dead_experts, windows, seconds.
  std::map<std::string, double> values() const;
};

// Scores next-token prediction over each window (targets are window[1:]). With a teacher, the
// two models run in lockstep, chunk by chunk, over the same tokens. `rows` (empty, or one entry
// per window as WindowImages::rows): the input rows of image positions, fed to both models;
// only the positions scored_position() accepts are scored (metrics.h), while every position,
// image ones included, counts in the expert load.
EvalResult evaluate(Model& student, Model* teacher, const std::vector<std::vector<int32_t>>& windows,
                    const EvalOptions& options = {}, const std::vector<std::vector<const float*>>& rows = {});

// Scans stored weights for NaN/Inf (bf16/f16/f32 exponent all ones, fp8 e4m3 0x7f/0xff, int4
// scales). Returns "tensor: n bad values" lines. Tensors are skipped once `max_bytes` have been
// scanned (0 = no limit); `scanned_all` tells whether everything was covered.
std::vector<std::string> scan_weights(const Checkpoint& ck, uint64_t max_bytes, bool* scanned_all);

}  // namespace sickle
