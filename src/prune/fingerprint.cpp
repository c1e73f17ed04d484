#include "prune/fingerprint.h"

#include <algorithm>

#include "base/hash.h"

namespace sickle {

std::string model_fingerprint(const ModelConfig& config, std::vector<TensorSignature> tensors) {
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  Hasher h(0x5ec1e);
  h.update(config.to_json().dump());  // nlohmann::json objects are key-sorted: a stable text
  for (const auto& t : tensors) {
    h.update(t.name);
    h.update("|");
    h.update(dtype_name(t.dtype));
    for (int64_t d : t.shape) h.update(&d, sizeof d);
    h.update("\n");
  }
  return h.hex();
}

std::string model_fingerprint(const Checkpoint& ck) {
  std::vector<TensorSignature> sig;
  for (const auto& f : ck.files())
    for (const auto& t : f->tensors()) sig.push_back(TensorSignature{t.name, t.dtype, t.shape});
  return model_fingerprint(ck.config(), std::move(sig));
}

}  // namespace sickle
