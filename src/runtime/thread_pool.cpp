#include "runtime/thread_pool.h"

#include "base/cpu.h"
#include "base/error.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SICKLE_PAUSE() _mm_pause()
#else
#define SICKLE_PAUSE() ((void)0)
#endif

namespace sickle {

namespace {
// The pool whose task this thread is running (nested calls run inline).
thread_local const ThreadPool* tl_running_pool = nullptr;

// Spin about this long before sleeping in the kernel: a decode step issues parallel_for calls
// back to back, microseconds apart, and a futex wake-up costs tens of microseconds; on an
// oversubscribed machine spinning longer only steals time from the thread we wait for.
// (A time budget, not an iteration count: `pause` takes ~10 cycles on older cores, ~140 on
// Sapphire Rapids.)
constexpr auto kSpinTime = std::chrono::microseconds(50);

// Spins (checking the clock every 64 pauses) while `busy()` holds, for at most kSpinTime.
// Returns true if busy() stopped holding.
template <class Busy>
bool spin_while(Busy busy) {
  auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (!busy()) return true;
      SICKLE_PAUSE();
    }
    if (std::chrono::steady_clock::now() >= deadline) return !busy();
  }
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = cpu_features().n_cores;
  SICKLE_CHECK(n_threads >= 1 && n_threads <= 4096, "n_threads = {}", n_threads);
  n_threads_ = n_threads;
  slots_ = std::make_unique<Slot[]>(size_t(n_threads_));
  workers_.reserve(size_t(n_threads_ - 1));
  for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_main(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& w : workers_) w.join();
}

bool ThreadPool::in_parallel_region() const { return tl_running_pool == this; }

void ThreadPool::do_share(int tid) {
  if (chunk_ == 0) {
    if (tid >= n_active_) return;
    int64_t b = n_items_ * tid / n_active_, e = n_items_ * (tid + 1) / n_active_;
    if (b < e) task_.call(task_.obj, b, e, tid);
    return;
  }
  for (;;) {
    int64_t b = next_chunk_.fetch_add(chunk_, std::memory_order_relaxed);
    if (b >= n_items_) return;
    int64_t e = b + chunk_ < n_items_ ? b + chunk_ : n_items_;
    task_.call(task_.obj, b, e, tid);
  }
}

void ThreadPool::run(int64_t n_items, int64_t chunk, TaskRef task) {
  // Inline: a single thread, a single item (static split), or a nested call.
  bool tiny = chunk == 0 ? n_items <= 1 : n_items <= chunk;
  if (n_threads_ == 1 || tiny || tl_running_pool == this) {
    task.call(task.obj, 0, n_items, 0);
    return;
  }
  std::lock_guard<std::mutex> lock(call_mutex_);
  task_ = task;
  n_items_ = n_items;
  chunk_ = chunk;
  n_active_ = chunk == 0 ? int(n_items < n_threads_ ? n_items : n_threads_) : n_threads_;
  next_chunk_.store(0, std::memory_order_relaxed);
  // Static split: shares of threads past n_active are empty; don't post them at all.
  const int n_posted = chunk == 0 ? n_active_ : n_threads_;
  for (int t = 1; t < n_posted; ++t) slots_[size_t(t)].claim.store(kPosted, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();

  tl_running_pool = this;
  do_share(0);
  // Shares no worker has claimed yet: take them over (static split: run them here; dynamic:
  // the shared counter is exhausted, so there is nothing left to run).
  for (int t = 1; t < n_posted; ++t) {
    int expected = kPosted;
    if (slots_[size_t(t)].claim.compare_exchange_strong(expected, kCancelled, std::memory_order_acq_rel))
      do_share(t);
  }
  tl_running_pool = nullptr;
  for (int t = 1; t < n_posted; ++t) {
    std::atomic<int>& c = slots_[size_t(t)].claim;
    if (!spin_while([&] { return c.load(std::memory_order_acquire) == kRunning; }))
      while (c.load(std::memory_order_acquire) == kRunning) c.wait(kRunning, std::memory_order_acquire);
  }
}

void ThreadPool::worker_main(int tid) {
  Slot& slot = slots_[size_t(tid)];
  uint64_t seen =
      0;  // the generation at construction: a task or stop posted before this thread ran is still seen
  for (;;) {
    if (!spin_while([&] { return generation_.load(std::memory_order_acquire) == seen; }))
      while (generation_.load(std::memory_order_acquire) == seen)
        generation_.wait(seen, std::memory_order_acquire);
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    int expected = kPosted;
    if (!slot.claim.compare_exchange_strong(expected, kRunning, std::memory_order_acq_rel))
      continue;  // taken over
    tl_running_pool = this;
    do_share(tid);
    tl_running_pool = nullptr;
    slot.claim.store(kDone, std::memory_order_release);
    slot.claim.notify_one();
  }
}

}  // namespace sickle
