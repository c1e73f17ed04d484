// sickle/model/perf.h — figures printed next to tok/s (style habit 12: measure against the
// speed of light).
#pragma once

#include <cstdint>
#include <string>

namespace sickle {

class ThreadPool;
class Model;

// Streaming read bandwidth of this machine in bytes/s: every thread of `pool` sums its slice of a
// 256 MiB buffer (larger than any LLC here), best of 3 passes after one warm-up. Takes ~0.3 s.
// On a shared machine this is what the pool's threads can get now, not the hardware peak.
double measure_read_bandwidth(ThreadPool& pool, uint64_t bytes = 256ull << 20);

struct RunFigures {
  int64_t n_prompt = 0, n_generated = 0;  // generated = decode steps timed
  double prefill_s = 0, decode_s = 0;
  uint64_t active_bytes_per_token = 0;     // Model::active_bytes_per_token()
  double bandwidth = 0;                    // bytes/s of the machine (measured or given); 0 = unknown
};

// "prompt 12 tok in 0.10 s (120.0 tok/s) | generation 32 tok (8.1 tok/s) | 3.2 GB/s of weights
// (0.21 of 15.0 GB/s measured)".
std::string format_figures(const RunFigures& f, const char* bandwidth_source);

}  // namespace sickle
