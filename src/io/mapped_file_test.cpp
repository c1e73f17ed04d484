#include "io/mapped_file.h"

#include <gtest/gtest.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace sickle {
namespace {

// Rss (KiB) of the mapping that starts at `addr`, from /proc/self/smaps.
long rss_kib_of(const void* addr) {
  std::ifstream in("/proc/self/smaps");
  char start[32];
  std::snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(addr));
  std::string line;
  bool in_it = false;
  while (std::getline(in, line)) {
    if (line.rfind(start, 0) == 0) in_it = true;
    else if (in_it && line.rfind("Rss:", 0) == 0) return std::atol(line.c_str() + 4);
  }
  return -1;
}

bool kernel_at_least(int major, int minor) {
  utsname u{};
  if (uname(&u) != 0) return false;
  int a = 0, b = 0;
  std::sscanf(u.release, "%d.%d", &a, &b);
  return a > major || (a == major && b >= minor);
}

TEST(MappedFile, PrefaultMapsEveryPageWithoutTouchingThem) {
  const auto path = std::filesystem::temp_directory_path() / ("sickle_prefault_" + std::to_string(getpid()));
  {
    std::ofstream out(path, std::ios::binary);
    std::vector<char> page(4096, 'x');
    for (int i = 0; i < 256; ++i) out.write(page.data(), std::streamsize(page.size()));  // 1 MiB
  }
  {
    MappedFile f(path);
    ASSERT_EQ(f.size(), size_t(1) << 20);
    EXPECT_EQ(rss_kib_of(f.data()), 0) << "nothing is mapped before the first touch";
    if (!kernel_at_least(5, 14)) GTEST_SKIP() << "MADV_POPULATE_READ needs Linux 5.14";
    ASSERT_TRUE(f.prefault());
    EXPECT_EQ(rss_kib_of(f.data()), 1024) << "every page is mapped after prefault";
    EXPECT_EQ(static_cast<char>(f.data()[12345]), 'x');
  }
  std::filesystem::remove(path);
}

TEST(MappedFile, TouchPagesReadsOneByteOfEveryPageInTheRange) {
  const auto path = std::filesystem::temp_directory_path() / ("sickle_touch_" + std::to_string(getpid()));
  const size_t page = size_t(sysconf(_SC_PAGESIZE)), n = 37;
  std::vector<unsigned char> bytes(n * page + 100);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 131 + (i >> 9) * 7 + 1);
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  {
    MappedFile f(path);
    auto xor_of = [&](size_t b, size_t e) {  // begin, then every page start in (b, e)
      unsigned char x = bytes[b];
      for (size_t off = (b / page + 1) * page; off < e && off < bytes.size(); off += page) x ^= bytes[off];
      return x;
    };
    EXPECT_EQ(f.touch_pages(0, f.size()), xor_of(0, bytes.size()));
    EXPECT_EQ(f.touch_pages(100, 5 * page + 1), xor_of(100, 5 * page + 1));   // mid-page start
    EXPECT_EQ(f.touch_pages(3 * page, 4 * page), bytes[3 * page]);            // exactly one page
    EXPECT_EQ(f.touch_pages(n * page + 50, SIZE_MAX), bytes[n * page + 50]);  // clipped at the end
    EXPECT_EQ(f.touch_pages(7, 7), 0);                                        // empty range
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace sickle
