// bench/membw — the machine's memory read bandwidth (the decode speed limit) and f32 FMA peak
// (the dense prefill kernels' limit), both with `threads` threads.
//   build-*/bench/membw [threads=2] [MiB=1024]
#include <cstdio>
#include <cstdlib>

#include "runtime/membw.h"
#include "runtime/thread_pool.h"

int main(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  size_t mib = argc > 2 ? size_t(std::atoll(argv[2])) : 1024;
  sickle::ThreadPool pool(threads);
  sickle::MemBandwidth bw = sickle::measure_read_bandwidth(&pool, mib << 20, 5);
  std::printf("memory read bandwidth: %.2f GB/s (%d threads, %zu MiB buffer, best of 5)\n",
              bw.read_bytes_per_s() / 1e9, bw.n_threads, bw.buffer_bytes >> 20);
  if (bw.prefetch_bytes_per_s > 0)
    std::printf("  plain loads %.2f GB/s, with software prefetch 4 KiB ahead %.2f GB/s\n",
                bw.plain_bytes_per_s / 1e9, bw.prefetch_bytes_per_s / 1e9);
  const double macs = sickle::measure_fma_peak_macs(&pool);
  if (macs > 0) std::printf("f32 FMA peak: %.1f GFLOP/s (%d threads)\n", 2 * macs / 1e9, pool.size());
  return 0;
}
