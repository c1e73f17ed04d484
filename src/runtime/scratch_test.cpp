// Large allocations: alignment, zero fill, growth across the small/large boundary, and the
// huge-page advice as the kernel records it in /proc/self/smaps.
#include "runtime/scratch.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>

namespace sickle {
namespace {

// The VmFlags line of the /proc/self/smaps entry whose range contains p ("" when none).
std::string vm_flags_of(const void* p) {
  std::ifstream in("/proc/self/smaps");
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find('-')) {
      inside = addr >= lo && addr < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

TEST(LargeAlloc, AlignedZeroFilledAndWritable) {
  for (size_t bytes : {kLargeAllocBytes, kLargeAllocBytes + 1, size_t(9) << 20, size_t(5000)}) {
    auto* p = static_cast<uint8_t*>(alloc_large(bytes));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kLargeAllocBytes, 0u) << bytes;
    size_t nonzero = 0;
    for (size_t i = 0; i < bytes; ++i) nonzero += p[i] != 0;
    EXPECT_EQ(nonzero, 0u) << bytes;
    for (size_t i = 0; i < bytes; ++i) p[i] = uint8_t(i * 7 + 1);
    size_t wrong = 0;
    for (size_t i = 0; i < bytes; ++i) wrong += p[i] != uint8_t(i * 7 + 1);
    EXPECT_EQ(wrong, 0u) << bytes;
    free_large(p, bytes);
  }
}

TEST(LargeAlloc, AdvisedAsHugePagesWhereTheKernelHasThem) {
  if (!std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled"))
    GTEST_SKIP() << "kernel without transparent huge pages";
  const size_t bytes = size_t(6) << 20;
  void* p = alloc_large(bytes);
  const std::string flags = vm_flags_of(p);
  ASSERT_FALSE(flags.empty()) << "no smaps entry for the allocation";
  EXPECT_NE((flags + " ").find(" hg "), std::string::npos) << flags;
  free_large(p, bytes);
  // Small vectors come from operator new, 64-byte aligned.
  LargeVector<float> small(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, 0u);
}

TEST(LargeAlloc, VectorKeepsItsContentsWhenGrowingPastTheThreshold) {
  LargeVector<int32_t> v(1000);
  std::iota(v.begin(), v.end(), 0);
  v.resize(kLargeAllocBytes / sizeof(int32_t) * 3 + 5);  // heap -> mapped
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % kLargeAllocBytes, 0u);
  for (int32_t i = 0; i < 1000; ++i) ASSERT_EQ(v[size_t(i)], i);
  for (size_t i = 1000; i < v.size(); ++i) ASSERT_EQ(v[i], 0) << i;
  v.back() = 42;
  LargeVector<int32_t> w = v;  // copy: mapped -> mapped
  EXPECT_EQ(w.back(), 42);
  EXPECT_EQ(w[999], 999);
  v.resize(10);
  v.shrink_to_fit();  // mapped -> heap
  EXPECT_EQ(v[9], 9);
}

TEST(LargeAlloc, ScratchBufferTakesTheLargePathAndBack) {
  ScratchBuffer buf;
  void* big = buf.get(kLargeAllocBytes + 100);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big) % kLargeAllocBytes, 0u);
  EXPECT_GE(buf.capacity(), kLargeAllocBytes + 100);
  static_cast<uint8_t*>(big)[kLargeAllocBytes + 99] = 1;
  EXPECT_EQ(buf.get(64), big);  // fits: kept
  ScratchBuffer small;
  void* s = small.get(1 << 16);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(s) % 64, 0u);
  EXPECT_LT(small.capacity(), kLargeAllocBytes);
}

}  // namespace
}  // namespace sickle
