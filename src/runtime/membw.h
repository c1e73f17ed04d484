// sickle/runtime/membw.h — the machine's memory read bandwidth, the speed of light for decode.
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

}  // namespace sickle
