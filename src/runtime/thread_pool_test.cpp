#include "runtime/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "runtime/scratch.h"

namespace sickle {
namespace {

// Every item in [0, n) is visited exactly once, ranges are non-empty and thread ids in range.
void expect_exact_cover(ThreadPool* pool, int64_t n, bool dynamic, int64_t chunk = 3) {
  std::vector<std::atomic<int>> hits(size_t(n > 0 ? n : 1));
  for (auto& h : hits) h.store(0);
  std::atomic<int> bad{0};
  auto fn = [&](int64_t b, int64_t e, int tid) {
    if (b >= e || b < 0 || e > n || tid < 0 || tid >= pool_size(pool)) bad.fetch_add(1);
    for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
  };
  if (dynamic) parallel_for_dynamic(pool, n, chunk, fn);
  else parallel_for(pool, n, fn);
  EXPECT_EQ(bad.load(), 0) << "n=" << n;
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "item " << i << " of " << n;
}

TEST(ThreadPool, SizeDefaultsToCores) {
  ThreadPool all(0);
  EXPECT_GE(all.size(), 1);
  ThreadPool three(3);
  EXPECT_EQ(three.size(), 3);
}

TEST(ThreadPool, EveryItemExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 1000, 4097}) {
      expect_exact_cover(&pool, n, false);
      expect_exact_cover(&pool, n, true, 1);
      expect_exact_cover(&pool, n, true, 7);
    }
  }
}

TEST(ThreadPool, NullPoolRunsInlineAsOneRange) {
  int calls = 0;
  parallel_for(nullptr, 10, [&](int64_t b, int64_t e, int tid) {
    ++calls;
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 10);
    EXPECT_EQ(tid, 0);
  });
  EXPECT_EQ(calls, 1);
  parallel_for(nullptr, 0, [&](int64_t, int64_t, int) { ++calls; });
  EXPECT_EQ(calls, 1);
  expect_exact_cover(nullptr, 17, false);
}

TEST(ThreadPool, StaticSplitUsesAllThreadsWithContiguousRanges) {
  ThreadPool pool(4);
  std::vector<std::pair<int64_t, int64_t>> range(4, {-1, -1});
  pool.parallel_for(10, [&](int64_t b, int64_t e, int tid) { range[size_t(tid)] = {b, e}; });
  // n*t/T split: [0,2) [2,5) [5,7) [7,10)
  EXPECT_EQ(range[0], std::make_pair(int64_t(0), int64_t(2)));
  EXPECT_EQ(range[1], std::make_pair(int64_t(2), int64_t(5)));
  EXPECT_EQ(range[2], std::make_pair(int64_t(5), int64_t(7)));
  EXPECT_EQ(range[3], std::make_pair(int64_t(7), int64_t(10)));
}

TEST(ThreadPool, ManyCallsInARow) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  for (int call = 0; call < 5000; ++call) {
    int64_t n = call % 5;  // includes 0 and 1 (inline) between parallel calls
    pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) sum.fetch_add(i + 1);
    });
  }
  // per 5 calls: n=0..4 -> 0 + 1 + 3 + 6 + 10 = 20
  EXPECT_EQ(sum.load(), 20 * (5000 / 5));
}

TEST(ThreadPool, NestedCallRunsInline) {
  ThreadPool pool(2);
  std::atomic<int> inner_items{0}, inner_calls{0};
  pool.parallel_for(2, [&](int64_t b, int64_t e, int tid) {
    EXPECT_TRUE(pool.in_parallel_region());
    pool.parallel_for(6, [&](int64_t ib, int64_t ie, int itid) {
      inner_calls.fetch_add(1);
      EXPECT_EQ(itid, 0);
      inner_items.fetch_add(int(ie - ib));
    });
  });
  EXPECT_FALSE(pool.in_parallel_region());
  EXPECT_EQ(inner_items.load(), 12);
  EXPECT_EQ(inner_calls.load(), 2);
}

TEST(ThreadPool, CallsFromTwoOutsideThreadsAreSerialized) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  auto body = [&] {
    for (int i = 0; i < 2000; ++i)
      pool.parallel_for(8, [&](int64_t b, int64_t e, int) { total.fetch_add(e - b); });
  };
  std::thread a(body), b(body);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 2000 * 8);
}

// More threads than cores: workers are often not running when a call is posted, so the caller
// takes their shares over. A thread_id must still never be in use by two threads at once
// (callers index per-thread scratch by it), and every item must still run exactly once.
TEST(ThreadPool, OversubscribedTakeoverKeepsThreadIdsExclusive) {
  ThreadPool pool(8);
  std::vector<std::atomic<int>> in_use(8);
  for (auto& u : in_use) u.store(0);
  std::atomic<int> clashes{0};
  std::atomic<int64_t> total{0};
  for (int call = 0; call < 3000; ++call) {
    auto fn = [&](int64_t b, int64_t e, int tid) {
      if (in_use[size_t(tid)].exchange(1) != 0) clashes.fetch_add(1);
      total.fetch_add(e - b);
      in_use[size_t(tid)].store(0);
    };
    if (call % 2) pool.parallel_for(37, fn);
    else pool.parallel_for_dynamic(37, 2, fn);
  }
  EXPECT_EQ(clashes.load(), 0);
  EXPECT_EQ(total.load(), 3000 * 37);
  for (int rep = 0; rep < 50; ++rep) expect_exact_cover(&pool, 1 + rep * 13, rep % 2 == 1, 1 + rep % 4);
}

TEST(Scratch, GrowsAlignedAndKeepsCapacity) {
  ScratchBuffer buf;
  void* p = buf.get(100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  EXPECT_EQ(buf.get(50), p);  // no reallocation when it fits
  void* q = buf.get(1 << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q) % 64, 0u);
  EXPECT_GE(buf.capacity(), size_t(1) << 20);
  ScratchArena arena(buf, 3 * 128);
  float* a = arena.alloc<float>(3);
  int8_t* b = arena.alloc<int8_t>(5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  EXPECT_GE(reinterpret_cast<uint8_t*>(b) - reinterpret_cast<uint8_t*>(a), 12);
}

}  // namespace
}  // namespace sickle
