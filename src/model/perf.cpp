// sickle/model/perf.cpp — see perf.h.
#include "model/perf.h"

#include <fmt/format.h>

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
  if (f.bandwidth > 0)
    s += fmt::format(" = {:.2f} of {:.1f} GB/s {}", gbs * 1e9 / f.bandwidth, f.bandwidth / 1e9,
                     bandwidth_source);
  return s;
}

}  // namespace sickle
