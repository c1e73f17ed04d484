// parse_bytes / format_bytes: the sizes flags accept (--shard-size, --gpu-mem, --overhead).
#include <gtest/gtest.h>

#include "base/error.h"
#include "base/log.h"

namespace sickle {
namespace {

TEST(ParseBytes, UnitsAndErrors) {
  EXPECT_EQ(parse_bytes("1048576", "--x"), 1048576u);
  EXPECT_EQ(parse_bytes("5GiB", "--x"), 5ull << 30);
  EXPECT_EQ(parse_bytes("5gib", "--x"), 5ull << 30);
  EXPECT_EQ(parse_bytes("2G", "--x"), 2ull << 30);  // bare letter: binary, as dd
  EXPECT_EQ(parse_bytes("24GB", "--x"), 24000000000ull);
  EXPECT_EQ(parse_bytes("512MiB", "--x"), 512ull << 20);
  EXPECT_EQ(parse_bytes("1.5KiB", "--x"), 1536u);
  EXPECT_EQ(parse_bytes("1 TiB", "--x"), 1ull << 40);
  EXPECT_EQ(parse_bytes("0", "--x"), 0u);
  for (const char* bad : {"", "GiB", "5XB", "-3", "1.2.3G", "99999999999TB"}) {
    try {
      parse_bytes(bad, "--shard-size");
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--shard-size"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(100), "100 B");
}

}  // namespace
}  // namespace sickle
