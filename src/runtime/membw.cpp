#include "runtime/membw.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "base/cpu.h"
#include "runtime/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sickle {

namespace {

// Sum of 64-bit words with 4 independent chains, so the loads and not the adds set the pace
// (the compiler vectorizes it; either way one core issues far more than memory delivers).
uint64_t read_range(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

#if defined(__x86_64__)
// The same with 32-byte loads (kernels read with SIMD loads; so should the yardstick), with or
// without software prefetch 4 KB ahead. Which reads faster depends on the CPU: on the Xeon of
// the first sessions one core kept too few misses in flight without it; on the Zen 5 guest of
// later ones the prefetching pass read 10-40% slower (its hardware prefetchers do better
// alone). The yardstick is the best the machine does, so it runs both (measure_read_bandwidth).
template <bool kPrefetch>
__attribute__((target("avx2"))) uint64_t read_range_avx2(const uint64_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    if constexpr (kPrefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(p + i + 512), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p + i + 520), _MM_HINT_T0);
    }
    a = _mm256_add_epi64(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    b = _mm256_add_epi64(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    c = _mm256_add_epi64(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    d = _mm256_add_epi64(d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + read_range(p + i, n - i);
}

// The same with 64-byte loads, 256 bytes a step: one Zen 5 core reads 28 GB/s with the AVX2
// loop and 31-38 GB/s with this one (fewer instructions per byte in flight).
template <bool kPrefetch>
__attribute__((target("avx512f"))) uint64_t read_range_avx512(const uint64_t* p, size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    if constexpr (kPrefetch)
      for (int l = 0; l < 4; ++l)
        _mm_prefetch(reinterpret_cast<const char*>(p + i + 512 + 8 * l), _MM_HINT_T0);
    a = _mm512_add_epi64(a, _mm512_loadu_si512(p + i));
    b = _mm512_add_epi64(b, _mm512_loadu_si512(p + i + 8));
    a = _mm512_add_epi64(a, _mm512_loadu_si512(p + i + 16));
    b = _mm512_add_epi64(b, _mm512_loadu_si512(p + i + 24));
  }
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(a, b));
  return read_range(lanes, 8) + read_range(p + i, n - i);
}

// 16 independent chains of FMAs, `iters` steps: the units' throughput, not their latency.
__attribute__((target("avx512f"))) double fma_chains_avx512(int64_t iters) {
  __m512 acc[16];
  for (auto& a : acc) a = _mm512_set1_ps(1.0f);
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 16
    for (auto& a : acc) a = _mm512_fmadd_ps(a, x, y);
  __m512 s = acc[0];
  for (int k = 1; k < 16; ++k) s = _mm512_add_ps(s, acc[k]);
  alignas(64) float l[16];
  _mm512_store_ps(l, s);
  double sum = 0;
  for (float v : l) sum += double(v);
  return sum;
}
__attribute__((target("avx2,fma"))) double fma_chains_avx2(int64_t iters) {
  __m256 acc[16];
  for (auto& a : acc) a = _mm256_set1_ps(1.0f);
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 16
    for (auto& a : acc) a = _mm256_fmadd_ps(a, x, y);
  __m256 s = acc[0];
  for (int k = 1; k < 16; ++k) s = _mm256_add_ps(s, acc[k]);
  alignas(32) float l[8];
  _mm256_store_ps(l, s);
  return double(l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7]);
}
#endif

}  // namespace

namespace membw_detail {

bool reader_runs(Reader r) {
  switch (r) {
    case Reader::kScalar: return true;
#if defined(__x86_64__)
    case Reader::kAvx2:
    case Reader::kAvx2Prefetch: return cpu_features().avx2;
    case Reader::kAvx512:
    case Reader::kAvx512Prefetch: return cpu_features().avx512f;
#endif
    default: return false;
  }
}

uint64_t read_sum(Reader r, const uint64_t* p, size_t n) {
  switch (r) {
#if defined(__x86_64__)
    case Reader::kAvx2: return read_range_avx2<false>(p, n);
    case Reader::kAvx2Prefetch: return read_range_avx2<true>(p, n);
    case Reader::kAvx512: return read_range_avx512<false>(p, n);
    case Reader::kAvx512Prefetch: return read_range_avx512<true>(p, n);
#endif
    default: return read_range(p, n);
  }
}

}  // namespace membw_detail

ReadBandwidthProbe::ReadBandwidthProbe(ThreadPool* pool, size_t buffer_bytes)
    : pool_(pool), bytes_(buffer_bytes & ~size_t(4095)) {
  void* mem = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::bad_alloc();
  words_ = static_cast<uint64_t*>(mem);
  // Touch every page from the thread that will read it (first-touch placement), non-zero data.
  parallel_for(pool_, int64_t(bytes_ / 8), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) words_[i] = uint64_t(i) * 0x9E3779B97F4A7C15ull;
  });
}

ReadBandwidthProbe::~ReadBandwidthProbe() { munmap(words_, bytes_); }

MemBandwidth ReadBandwidthProbe::measure(int reps) {
  MemBandwidth r;
  r.buffer_bytes = bytes_;
  r.n_threads = pool_size(pool_);
  const size_t n_words = bytes_ / 8;
  std::vector<uint64_t> sink(size_t(r.n_threads) * 8, 0);
  // The widest loads the CPU has, plain and with software prefetch. Each rep passes once per
  // reader, alternating (a change in the host's load during the measurement touches both); the
  // best pass of either is the figure.
  using membw_detail::Reader;
  const Reader plain = membw_detail::reader_runs(Reader::kAvx512) ? Reader::kAvx512
                       : membw_detail::reader_runs(Reader::kAvx2) ? Reader::kAvx2
                                                                  : Reader::kScalar;
  const bool both = plain != Reader::kScalar;
  const Reader prefetching = plain == Reader::kAvx512 ? Reader::kAvx512Prefetch : Reader::kAvx2Prefetch;
  for (int pass = 0; pass < reps * (both ? 2 : 1); ++pass) {
    const bool prefetch = both && pass % 2 == 1;
    const Reader reader = prefetch ? prefetching : plain;
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(pool_, int64_t(n_words), [&](int64_t b, int64_t e, int tid) {
      sink[size_t(tid) * 8] += membw_detail::read_sum(reader, words_ + b, size_t(e - b));
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double& best = prefetch ? r.prefetch_bytes_per_s : r.plain_bytes_per_s;
    best = std::max(best, double(r.buffer_bytes) / s);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  return r;
}

MemBandwidth measure_read_bandwidth(ThreadPool* pool, size_t buffer_bytes, int reps) {
  return ReadBandwidthProbe(pool, buffer_bytes).measure(reps);
}

double measure_fma_peak_macs(ThreadPool* pool, int reps) {
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  const int lanes = f.avx512f ? 16 : f.avx2 && f.fma ? 8 : 0;
  if (lanes == 0) return 0;
  const int64_t iters = 4'000'000;  // 16 chains x 4M steps: ~15 ms per thread at 4 GHz
  const int n = pool_size(pool);
  std::vector<double> sink(size_t(n) * 8, 0);
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    parallel_for(pool, n, [&](int64_t b, int64_t e, int tid) {
      for (int64_t k = b; k < e; ++k)
        sink[size_t(tid) * 8] += lanes == 16 ? fma_chains_avx512(iters) : fma_chains_avx2(iters);
    });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(n) * double(iters) * 16 * lanes / s);
  }
  volatile double keep = 0;
  for (double v : sink) keep = keep + v;
  return best;
#else
  (void)pool;
  (void)reps;
  return 0;
#endif
}

}  // namespace sickle
