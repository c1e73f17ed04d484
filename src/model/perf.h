// sickle/model/perf.h — figures printed next to tok/s (style habit 12: measure against the
// speed of light).
#pragma once

#include <cstdint>
#include <string>

namespace sickle {

struct RunFigures {
  int64_t n_prompt = 0, n_generated = 0;  // generated = decode steps timed
  double prefill_s = 0, decode_s = 0;
  uint64_t active_bytes_per_token = 0;  // Model::active_bytes_per_token()
  double bandwidth = 0;                 // bytes/s of the machine (measured or given); 0 = unknown
};

// "prompt 12 tok in 0.10 s (120.0 tok/s) | generation 32 tok (8.1 tok/s) | 3.2 GB/s of weights
// (0.21 of 15.0 GB/s measured)".
std::string format_figures(const RunFigures& f, const char* bandwidth_source);

}  // namespace sickle
