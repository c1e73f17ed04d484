// sickle/runtime/thread_pool.h — a persistent pool of worker threads for the token path.
//
// Habit 5 of shared/design/style.md: nothing allocates and no thread starts per call. The
// callable is passed type-erased by reference (a function_ref: pointer + trampoline), the
// workers are woken by bumping a generation counter (spin a little, then futex-wait through
// std::atomic::wait), and the calling thread does its share (thread_id 0) before waiting for
// the others.
//
//   ThreadPool pool(2);                        // 0 = all online cores
//   pool.parallel_for(n_rows, [&](int64_t begin, int64_t end, int tid) { ... });
//   parallel_for(nullptr, n, fn);              // free function: no pool = run inline
//
// Work split: parallel_for hands thread t the contiguous static range
// [n*t/T, n*(t+1)/T) with T = min(size(), n_items) (best for streaming weight rows: each thread
// reads its own contiguous slice). parallel_for_dynamic hands out chunks of `chunk` items from a
// shared counter (best for uneven items, e.g. experts with different token counts).
// A call made from inside a running task (nested) or with n_items <= 1 runs inline on the
// caller as one range. Calls from several outside threads are serialized by a mutex.
//
// Robust to oversubscription (a machine shared with other busy processes): each worker claims
// its share with a compare-and-swap; when the caller has finished its own share it cancels the
// shares of workers that have not woken up yet and runs them itself (with their thread_id), so
// a descheduled worker delays a call by nothing instead of a scheduler time slice. A thread_id
// is never used by two threads at once within a call.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace sickle {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Threads that run work, the caller included.
  int size() const { return n_threads_; }

  // fn(int64_t begin, int64_t end, int thread_id), thread_id in [0, size()).
  template <class F>
  void parallel_for(int64_t n_items, F&& fn) {
    if (n_items <= 0) return;
    using Fn = std::remove_reference_t<F>;
    run(n_items, 0, TaskRef{const_cast<void*>(static_cast<const void*>(&fn)), &trampoline<Fn>});
  }

  // Same contract, but items are handed out in chunks of `chunk` from a shared counter; fn may
  // be called several times per thread.
  template <class F>
  void parallel_for_dynamic(int64_t n_items, int64_t chunk, F&& fn) {
    if (n_items <= 0) return;
    using Fn = std::remove_reference_t<F>;
    run(n_items, chunk < 1 ? 1 : chunk,
        TaskRef{const_cast<void*>(static_cast<const void*>(&fn)), &trampoline<Fn>});
  }

  // True on a pool worker while it runs a task, and on the caller during parallel_for.
  bool in_parallel_region() const;

 private:
  struct TaskRef {
    void* obj = nullptr;
    void (*call)(void*, int64_t, int64_t, int) = nullptr;
  };
  template <class Fn>
  static void trampoline(void* obj, int64_t b, int64_t e, int tid) {
    (*static_cast<Fn*>(obj))(b, e, tid);
  }

  void run(int64_t n_items, int64_t chunk, TaskRef task);
  void worker_main(int tid);
  void do_share(int tid);

  // Per worker: who runs its share of the current call.
  enum Claim : int { kPosted = 0, kRunning = 1, kDone = 2, kCancelled = 3 };
  struct alignas(64) Slot {
    std::atomic<int> claim{kDone};
  };

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::unique_ptr<Slot[]> slots_;  // [n_threads]; slot 0 (the caller) unused
  std::mutex call_mutex_;          // one parallel_for at a time from outside threads

  // Current task; written by the caller before the generation bump (release), read by
  // workers after they observe it (acquire).
  TaskRef task_;
  int64_t n_items_ = 0, chunk_ = 0;
  int n_active_ = 0;
  alignas(64) std::atomic<int64_t> next_chunk_{0};
  alignas(64) std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

// Runs fn over [0, n_items) on `pool`, or inline as one range (thread_id 0) when pool is null.
template <class F>
void parallel_for(ThreadPool* pool, int64_t n_items, F&& fn) {
  if (n_items <= 0) return;
  if (pool == nullptr) {
    fn(int64_t(0), n_items, 0);
    return;
  }
  pool->parallel_for(n_items, fn);
}

template <class F>
void parallel_for_dynamic(ThreadPool* pool, int64_t n_items, int64_t chunk, F&& fn) {
  if (n_items <= 0) return;
  if (pool == nullptr) {
    fn(int64_t(0), n_items, 0);
    return;
  }
  pool->parallel_for_dynamic(n_items, chunk, fn);
}

// Threads a caller may index per-thread scratch by: pool ? pool->size() : 1.
inline int pool_size(const ThreadPool* pool) { return pool ? pool->size() : 1; }

}  // namespace sickle
