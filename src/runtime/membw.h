// sickle/runtime/membw.h — the machine's memory read bandwidth, the speed of light for decode,
// and its f32 FMA peak, the one for the dense prefill kernels.
//
// Streams a buffer larger than the last-level cache (default 1 GiB) with n_threads readers and
// reports bytes/s of the best of `reps` passes. Used by bench/membw, bench/kernels_bench and by
// `sickle run` / bench/vs_llamacpp to print the fraction of the limit a decode reached.
#pragma once

#include <cstddef>

namespace sickle {

class ThreadPool;

struct MemBandwidth {
  double read_bytes_per_s = 0;  // best pass
  size_t buffer_bytes = 0;
  int n_threads = 0;
};

// Uses `pool` (its size is the thread count); nullptr = one thread.
MemBandwidth measure_read_bandwidth(ThreadPool* pool, size_t buffer_bytes = size_t(1) << 30, int reps = 3);

// The f32 FMA throughput of the pool's threads (every thread runs 16 independent chains of the
// widest FMA the CPU has: 512-bit with AVX-512, else 256-bit with AVX2+FMA), in multiply-adds
// per second, best of `reps`; 0 on CPUs with neither. The prefill speed limit of the dense
// kernels (bf16 weights are widened to f32 and multiplied on these units).
double measure_fma_peak_macs(ThreadPool* pool, int reps = 3);

}  // namespace sickle
