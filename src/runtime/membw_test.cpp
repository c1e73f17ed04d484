#include "runtime/membw.h"

#include <gtest/gtest.h>

#include <cmath>

#include "base/cpu.h"
#include "runtime/thread_pool.h"

namespace sickle {
namespace {

// The probes' bookkeeping, not their speed (no timing assertions: CI is a loaded machine).
TEST(MachineLimits, ReadBandwidthReportsItsBufferAndThreads) {
  ThreadPool pool(2);
  MemBandwidth bw = measure_read_bandwidth(&pool, (size_t(8) << 20) + 123, 1);
  EXPECT_EQ(bw.buffer_bytes, size_t(8) << 20);  // whole pages
  EXPECT_EQ(bw.n_threads, 2);
  EXPECT_TRUE(std::isfinite(bw.read_bytes_per_s));
  EXPECT_GT(bw.read_bytes_per_s, 0);
  EXPECT_EQ(measure_read_bandwidth(nullptr, size_t(1) << 20, 1).n_threads, 1);
}

TEST(MachineLimits, FmaPeakIsPositiveWhereTheCpuHasFmaUnits) {
  const CpuFeatures& f = cpu_features();
  ThreadPool pool(2);
  const double one = measure_fma_peak_macs(nullptr, 1), two = measure_fma_peak_macs(&pool, 1);
  if (!f.avx512f && !(f.avx2 && f.fma)) {
    EXPECT_EQ(one, 0);
    return;
  }
  EXPECT_TRUE(std::isfinite(one) && std::isfinite(two));
  EXPECT_GT(one, 0);
  EXPECT_GT(two, 0);
}

}  // namespace
}  // namespace sickle
