// sickle/model/perf.cpp — see perf.h.
#include "model/perf.h"

#include <fmt/format.h>

#include "io/config.h"

namespace sickle {

std::string format_figures(const RunFigures& f, const char* bandwidth_source) {
  double pp = f.prefill_s > 0 ? double(f.n_prompt) / f.prefill_s : 0;
  double tg = f.decode_s > 0 ? double(f.n_generated) / f.decode_s : 0;
  double gbs = double(f.active_bytes_per_token) * tg / 1e9;
  std::string s = fmt::format(
      "prompt {} tok in {:.2f} s ({:.1f} tok/s) | generation {} tok in {:.2f} s ({:.2f} tok/s) | {:.2f} GB/s "
      "of weights ({:.1f} MB/token)",
      f.n_prompt, f.prefill_s, pp, f.n_generated, f.decode_s, tg, gbs,
      double(f.active_bytes_per_token) / 1e6);
  const double cache_gbs = double(f.cache_bytes_per_token) * tg / 1e9;
  if (f.cache_bytes_per_token > 0)
    s += fmt::format(" + {:.2f} GB/s of KV cache ({:.1f} MB/token)", cache_gbs,
                     double(f.cache_bytes_per_token) / 1e6);
  if (f.bandwidth > 0)
    s += fmt::format(" = {:.2f} of {:.1f} GB/s {}", (gbs + cache_gbs) * 1e9 / f.bandwidth, f.bandwidth / 1e9,
                     bandwidth_source);
  return s;
}

uint64_t decode_cache_bytes_per_token(const ModelConfig& c, int64_t n_prompt, int64_t n_generated) {
  if (n_generated <= 0) return 0;
  const double row = double(c.kv_lora_rank + c.qk_rope_head_dim) * sizeof(float);
  const double mean_ctx = double(n_prompt) + double(n_generated + 1) / 2;
  return uint64_t(double(c.num_hidden_layers) * row * mean_ctx + 0.5);
}

}  // namespace sickle
