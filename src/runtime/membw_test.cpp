#include "runtime/membw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

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
  EXPECT_TRUE(std::isfinite(bw.read_bytes_per_s()));
  EXPECT_GT(bw.read_bytes_per_s(), 0);
  // Both readers ran where the CPU has them (the prefetching one on AVX2 CPUs).
  EXPECT_GT(bw.plain_bytes_per_s, 0);
  EXPECT_EQ(bw.prefetch_bytes_per_s > 0, cpu_features().avx2);
  EXPECT_EQ(measure_read_bandwidth(nullptr, size_t(1) << 20, 1).n_threads, 1);
}

// A kept probe measures again over the same buffer (sickle run: before and after the timed run).
TEST(MachineLimits, KeptProbeMeasuresRepeatedly) {
  ThreadPool pool(2);
  ReadBandwidthProbe probe(&pool, (size_t(4) << 20) + 5);
  for (int i = 0; i < 2; ++i) {
    MemBandwidth bw = probe.measure(1);
    EXPECT_EQ(bw.buffer_bytes, size_t(4) << 20);
    EXPECT_EQ(bw.n_threads, 2);
    EXPECT_GT(bw.read_bytes_per_s(), 0);
    EXPECT_TRUE(std::isfinite(bw.read_bytes_per_s()));
  }
}

// Every reader the CPU runs visits each word exactly once: its sum matches a plain loop's, at
// lengths around its step (32 words for the 64-byte loop) and its prefetch distance.
TEST(MachineLimits, EveryReaderSumsEachWordOnce) {
  using membw_detail::Reader;
  std::vector<uint64_t> words(5000);
  for (size_t i = 0; i < words.size(); ++i) words[i] = (uint64_t(i) + 1) * 0x9E3779B97F4A7C15ull;
  int ran = 0;
  for (Reader r :
       {Reader::kScalar, Reader::kAvx2, Reader::kAvx2Prefetch, Reader::kAvx512, Reader::kAvx512Prefetch}) {
    if (!membw_detail::reader_runs(r)) continue;
    ++ran;
    for (size_t n :
         {size_t(0), size_t(1), size_t(15), size_t(16), size_t(31), size_t(33), size_t(600), size_t(4999)})
      for (size_t off : {size_t(0), size_t(1)}) {
        uint64_t want = 0;
        for (size_t i = 0; i < n; ++i) want += words[off + i];
        EXPECT_EQ(membw_detail::read_sum(r, words.data() + off, n), want)
            << "reader " << int(r) << ", " << n << " words from " << off;
      }
  }
  EXPECT_GE(ran, 1);
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
