// sickle/runtime/membw.h — the machine's memory read bandwidth, the speed of light for decode,
// and its f32 FMA peak, the one for the dense prefill kernels.
//
// Streams a buffer larger than the last-level cache (default 1 GiB) with n_threads readers and
// reports bytes/s of the best of `reps` passes of each reader (plain loads, and on AVX2 CPUs the
// same loads with software prefetch: which is faster depends on the CPU). Used by bench/membw,
// bench/kernels_bench and by `sickle run` / bench/vs_llamacpp to print the fraction of the limit
// a decode reached.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sickle {

class ThreadPool;

struct MemBandwidth {
  double plain_bytes_per_s = 0;     // best pass of plain loads
  double prefetch_bytes_per_s = 0;  // best pass of loads with software prefetch (0: not run)
  size_t buffer_bytes = 0;
  int n_threads = 0;
  // The figure: the best pass of either reader.
  double read_bytes_per_s() const {
    return plain_bytes_per_s > prefetch_bytes_per_s ? plain_bytes_per_s : prefetch_bytes_per_s;
  }
};

// Uses `pool` (its size is the thread count); nullptr = one thread.
MemBandwidth measure_read_bandwidth(ThreadPool* pool, size_t buffer_bytes = size_t(1) << 30, int reps = 3);

// The same with the buffer kept between measurements: mapping and first touching it is most of
// a measurement's cost (256 MiB: ~0.6 s in a VM whose page faults cost ~10 us), so a caller that
// measures before and after a run pays it once. Holds buffer_bytes of memory while it lives.
class ReadBandwidthProbe {
 public:
  ReadBandwidthProbe(ThreadPool* pool, size_t buffer_bytes);
  ~ReadBandwidthProbe();
  ReadBandwidthProbe(const ReadBandwidthProbe&) = delete;
  ReadBandwidthProbe& operator=(const ReadBandwidthProbe&) = delete;
  MemBandwidth measure(int reps = 3);

 private:
  ThreadPool* pool_;
  size_t bytes_;
  uint64_t* words_ = nullptr;
};

// The f32 FMA throughput of the pool's threads (every thread runs 16 independent chains of the
// widest FMA the CPU has: 512-bit with AVX-512, else 256-bit with AVX2+FMA), in multiply-adds
// per second, best of `reps`; 0 on CPUs with neither. The prefill speed limit of the dense
// kernels (bf16 weights are widened to f32 and multiplied on these units).
double measure_fma_peak_macs(ThreadPool* pool, int reps = 3);

// The loops measure_read_bandwidth times, exposed for tests: each returns the sum (mod 2^64) of
// p[0, n). Plain loads of 8 / 32 / 64 bytes, or the same with software prefetch 4 KiB ahead.
namespace membw_detail {
enum class Reader { kScalar, kAvx2, kAvx2Prefetch, kAvx512, kAvx512Prefetch };
bool reader_runs(Reader r);  // the CPU has the instructions
uint64_t read_sum(Reader r, const uint64_t* p, size_t n);
}  // namespace membw_detail

}  // namespace sickle
