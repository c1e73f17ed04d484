// sickle/model/perf.cpp — see perf.h.
#include "model/perf.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "runtime/thread_pool.h"

namespace sickle {

double measure_read_bandwidth(ThreadPool& pool, uint64_t bytes) {
  const int64_t n = int64_t(bytes / sizeof(uint64_t));
  std::vector<uint64_t> buf(static_cast<size_t>(n));
  // Touch every page (in parallel, so the pages spread over the threads' nodes).
  pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) buf[i] = uint64_t(i);
  });
  std::vector<uint64_t> sums(static_cast<size_t>(pool.size()) * 8);
  double best = 0;
  for (int pass = 0; pass < 4; ++pass) {
    auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, [&](int64_t b, int64_t e, int tid) {
      uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      int64_t i = b;
      for (; i + 4 <= e; i += 4) {
        a0 += buf[i];
        a1 += buf[i + 1];
        a2 += buf[i + 2];
        a3 += buf[i + 3];
      }
      for (; i < e; ++i) a0 += buf[i];
      sums[size_t(tid) * 8] += a0 + a1 + a2 + a3;  // one cache line per thread
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pass > 0) best = std::max(best, double(bytes) / s);
  }
  volatile uint64_t sink = 0;
  for (uint64_t v : sums) sink = sink + v;
  (void)sink;
  return best;
}

std::string format_figures(const RunFigures& f, const char* bandwidth_source) {
  double pp = f.prefill_s > 0 ? double(f.n_prompt) / f.prefill_s : 0;
  double tg = f.decode_s > 0 ? double(f.n_generated) / f.decode_s : 0;
  double gbs = double(f.active_bytes_per_token) * tg / 1e9;
  std::string s = fmt::format("prompt {} tok in {:.2f} s ({:.1f} tok/s) | generation {} tok in {:.2f} s ({:.2f} tok/s) | {:.2f} GB/s of weights ({:.1f} MB/token)",
                              f.n_prompt, f.prefill_s, pp, f.n_generated, f.decode_s, tg, gbs,
                              double(f.active_bytes_per_token) / 1e6);
  if (f.bandwidth > 0)
    s += fmt::format(" = {:.2f} of {:.1f} GB/s {}", gbs * 1e9 / f.bandwidth, f.bandwidth / 1e9, bandwidth_source);
  return s;
}

}  // namespace sickle
