// sickle/prune/fingerprint.h — which weights a statistics file or an evaluation belongs to.
//
// The fingerprint hashes the text-model config fields (ModelConfig::to_json: layer count,
// experts per layer, routing fields...) and the sorted tensor index (name, dtype, shape). It
// does not read tensor bytes (a multi-TB checkpoint must fingerprint in milliseconds), so two
// checkpoints with the same layout but different weights share a fingerprint; data hashes in
// the statistics metadata cover the other side of provenance.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/config.h"
#include "io/dtype.h"

namespace sickle {

struct TensorSignature {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

// 16 hex digits. `tensors` may be in any order (sorted by name inside).
std::string model_fingerprint(const ModelConfig& config, std::vector<TensorSignature> tensors);
std::string model_fingerprint(const Checkpoint& ck);

}  // namespace sickle
