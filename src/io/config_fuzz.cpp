// libFuzzer target for config.json (ModelConfig::from_json): any bytes must give either a
// config whose invariants hold or a sickle::Error, never a crash, hang, leak or UB.
#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "io/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return 0;
  try {
    sickle::ModelConfig c = sickle::ModelConfig::from_json(root, "fuzz");
    // What the loaders compute from a config that validated.
    if (c.qk_head_dim() <= 0 || c.num_experts_per_tok > c.n_routed_experts) __builtin_trap();
    const int64_t n_layers = std::min<int64_t>(c.num_hidden_layers, 4096);
    for (int64_t il = 0; il < n_layers; ++il)
      if (c.n_experts(il) < 0) __builtin_trap();
    (void)c.to_json().dump();
    (void)c.quant.describe();
  } catch (const sickle::Error&) {
  }
  return 0;
}
