// CheckpointWriter: round trips from every source kind, sharding at the size limit, the index,
// header padding, all-or-nothing output (temp dir removed on failure, simulated full disk),
// --force semantics, and row slicing from a mapped file.
#include "io/writer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "base/error.h"
#include "base/hash.h"

#include "base/test_temp_dir.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

struct TempDir : test_util::TempDir {
  TempDir() : test_util::TempDir("sickle-writer-test") {}
  // Entries of the directory other than `keep` (leftover temp dirs show up here).
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

std::vector<float> iota_f(size_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

uint64_t header_len(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  return n;
}

TEST(Writer, RoundTripFromEverySourceKind) {
  TempDir t;
  auto a = iota_f(6, 0);
  std::vector<std::byte> gen_expect(40);
  for (size_t i = 0; i < 40; ++i) gen_expect[i] = std::byte(i * 7);
  {
    CheckpointWriter w(t.path / "out");
    w.add("a", DType::F32, {2, 3}, TensorSource::from_vector(a));
    w.add("lazy", DType::U8, {4}, TensorSource::lazy(4, [] {
            return std::vector<std::byte>{std::byte(1), std::byte(2), std::byte(3), std::byte(4)};
          }));
    w.add("gen", DType::U8, {40}, TensorSource::generated(40, [](uint64_t off, std::byte* dst, size_t n) {
            for (size_t i = 0; i < n; ++i) dst[i] = std::byte((off + i) * 7);
          }));
    w.write_text("config.json", "{}\n");
    auto written = w.commit();
    ASSERT_EQ(written.size(), 3u);
    for (const auto& wt : written) {
      EXPECT_EQ(wt.file, "model.safetensors");
      if (wt.name == "a") {
        EXPECT_EQ(wt.checksum, hash64(a.data(), 24));
      }
      if (wt.name == "gen") {
        EXPECT_EQ(wt.checksum, hash64(gen_expect.data(), 40));
      }
    }
  }
  EXPECT_TRUE(fs::exists(t.path / "out" / "config.json"));
  EXPECT_FALSE(fs::exists(t.path / "out" / "model.safetensors.index.json"));  // one shard, no index
  EXPECT_EQ(t.entries(), std::vector<std::string>{"out"});                    // no temp dir left
  auto f = SafetensorsFile::open(t.path / "out" / "model.safetensors");
  EXPECT_EQ(f->view("a").as<float>()[5], 5.0f);
  EXPECT_EQ(f->view("lazy").as<uint8_t>()[3], 4);
  EXPECT_EQ(std::memcmp(f->view("gen").data, gen_expect.data(), 40), 0);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  // Copy through from_file (copy_file_range path) into a second checkpoint.
  {
    CheckpointWriter w(t.path / "copy");
    for (const auto& ti : f->tensors()) w.add(ti.name, ti.dtype, ti.shape, TensorSource::from_file(*f, ti));
    w.commit();
  }
  auto g = SafetensorsFile::open(t.path / "copy" / "model.safetensors");
  for (const auto& ti : f->tensors())
    EXPECT_EQ(std::memcmp(g->view(ti.name).data, f->view(ti).data, ti.nbytes()), 0) << ti.name;
}

TEST(Writer, ShardsAtTheLimitWithIndexAndPaddedHeaders) {
  TempDir t;
  WriterOptions o;
  o.max_shard_bytes = 100;
  std::vector<std::vector<float>> src;
  {
    CheckpointWriter w(t.path / "out", o);
    for (int i = 0; i < 7; ++i) {
      src.push_back(iota_f(10, float(i * 100)));  // 40 bytes each: two per shard
      w.add("t" + std::to_string(i), DType::F32, {10}, TensorSource::from_vector(src.back()));
    }
    w.commit();
  }
  const fs::path d = t.path / "out";
  std::ifstream in(d / "model.safetensors.index.json");
  json idx = json::parse(in);
  EXPECT_EQ(idx["metadata"]["total_size"], 7 * 40);
  ASSERT_EQ(idx["weight_map"].size(), 7u);
  EXPECT_EQ(idx["weight_map"]["t0"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(idx["weight_map"]["t1"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(idx["weight_map"]["t2"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(idx["weight_map"]["t6"], "model-00004-of-00004.safetensors");
  for (int s = 1; s <= 4; ++s) {
    fs::path p = d / fmt::format("model-{:05d}-of-00004.safetensors", s);
    ASSERT_TRUE(fs::exists(p));
    EXPECT_EQ(header_len(p) % 8, 0u) << p;
    auto f = SafetensorsFile::open(p);
    uint64_t data = 0;
    for (const auto& ti : f->tensors()) {
      data += ti.nbytes();
      int i = std::stoi(ti.name.substr(1));
      EXPECT_EQ(std::memcmp(f->view(ti).data, src[size_t(i)].data(), 40), 0) << ti.name;
    }
    EXPECT_LE(data, o.max_shard_bytes);
  }
  // A tensor larger than the limit still gets written, alone in its shard.
  WriterOptions small;
  small.max_shard_bytes = 8;
  small.always_index = true;
  {
    CheckpointWriter w(t.path / "big", small);
    w.add("x", DType::F32, {10}, TensorSource::from_vector(src[0]));
    w.commit();
  }
  EXPECT_TRUE(fs::exists(t.path / "big" / "model-00001-of-00001.safetensors"));
  EXPECT_TRUE(fs::exists(t.path / "big" / "model.safetensors.index.json"));
}

TEST(Writer, NoCommitLeavesNothing) {
  TempDir t;
  {
    CheckpointWriter w(t.path / "out", WriterOptions{.max_shard_bytes = 16});
    auto v = iota_f(8, 0);
    w.add("a", DType::F32, {8}, TensorSource::from_vector(v));
    w.add("b", DType::F32, {8}, TensorSource::from_vector(v));  // flushes shard 0 to the temp dir
    EXPECT_TRUE(fs::exists(w.temp_dir()));
  }
  EXPECT_TRUE(t.entries().empty());
  // A producer that throws mid-write: the error propagates, nothing survives.
  try {
    CheckpointWriter w(t.path / "out");
    w.add("a", DType::U8, {4},
          TensorSource::lazy(4, []() -> std::vector<std::byte> { throw Error("producer broke"); }));
    w.commit();
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "producer broke");
  }
  EXPECT_TRUE(t.entries().empty());
  // A producer that returns the wrong size names the tensor.
  try {
    CheckpointWriter w(t.path / "out");
    w.add("short", DType::U8, {4}, TensorSource::lazy(4, [] { return std::vector<std::byte>(3); }));
    w.commit();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'short'"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(t.entries().empty());
}

TEST(Writer, BadAddsNameTheTensor) {
  TempDir t;
  CheckpointWriter w(t.path / "out");
  try {
    w.add("w", DType::F32, {3}, TensorSource::from_vector(iota_f(2, 0)));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("needs 12"), std::string::npos) << e.what();
  }
  w.add("d", DType::F32, {2}, TensorSource::from_vector(iota_f(2, 0)));
  EXPECT_THROW(w.add("d", DType::F32, {2}, TensorSource::from_vector(iota_f(2, 0))), Error);
}

TEST(Writer, ExistingOutputNeedsForce) {
  TempDir t;
  fs::create_directories(t.path / "out");
  std::ofstream(t.path / "out" / "old.txt") << "old";
  try {
    CheckpointWriter w(t.path / "out");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos);
  }
  EXPECT_TRUE(fs::exists(t.path / "out" / "old.txt"));
  {
    CheckpointWriter w(t.path / "out", WriterOptions{.force = true});
    w.add("a", DType::F32, {1}, TensorSource::from_vector(iota_f(1, 0)));
    w.commit();
  }
  EXPECT_FALSE(fs::exists(t.path / "out" / "old.txt"));
  EXPECT_TRUE(fs::exists(t.path / "out" / "model.safetensors"));
  EXPECT_EQ(t.entries(), std::vector<std::string>{"out"});  // the old output's aside copy is gone
}

TEST(Writer, SimulatedFullDiskLeavesNoOutput) {
  TempDir t;
  ::setenv("SICKLE_FAULT_ENOSPC_AFTER", "100", 1);
  std::string msg;
  try {
    CheckpointWriter w(t.path / "out");
    auto v = iota_f(64, 0);  // 256 bytes: the write passes 100
    w.add("a", DType::F32, {64}, TensorSource::from_vector(v));
    w.commit();
  } catch (const Error& e) {
    msg = e.what();
  }
  ::unsetenv("SICKLE_FAULT_ENOSPC_AFTER");
  EXPECT_NE(msg.find("No space left on device"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shard-0"), std::string::npos) << msg;  // names the file being written
  EXPECT_TRUE(t.entries().empty());
  // Also when the copy would come from a mapped file (the copy_file_range path).
  {
    CheckpointWriter w(t.path / "src");
    w.add("a", DType::F32, {64}, TensorSource::from_vector(iota_f(64, 0)));
    w.commit();
  }
  auto f = SafetensorsFile::open(t.path / "src" / "model.safetensors");
  ::setenv("SICKLE_FAULT_ENOSPC_AFTER", "100", 1);
  EXPECT_THROW(
      {
        CheckpointWriter w(t.path / "out");
        w.add("a", DType::F32, {64}, TensorSource::from_file(*f, f->tensors()[0]));
        w.commit();
      },
      Error);
  ::unsetenv("SICKLE_FAULT_ENOSPC_AFTER");
  EXPECT_EQ(t.entries(), std::vector<std::string>{"src"});
}

TEST(Writer, RowsFromFileSlicesInTheGivenOrder) {
  TempDir t;
  auto v = iota_f(15, 0);  // [5, 3]
  {
    CheckpointWriter w(t.path / "src");
    w.add("m", DType::F32, {5, 3}, TensorSource::from_vector(v));
    w.commit();
  }
  auto f = SafetensorsFile::open(t.path / "src" / "model.safetensors");
  const TensorInfo& info = *f->find("m");
  TensorSource s = TensorSource::rows_from_file(*f, info, {4, 0, 1, 3});
  EXPECT_EQ(s.size(), 4u * 12);
  EXPECT_EQ(s.chunks.size(), 3u);  // rows 0 and 1 are adjacent: one run
  {
    CheckpointWriter w(t.path / "out");
    w.add("m", DType::F32, {4, 3}, std::move(s));
    w.commit();
  }
  auto g = SafetensorsFile::open(t.path / "out" / "model.safetensors");
  const float* p = g->view("m").as<float>();
  const float expect[12] = {12, 13, 14, 0, 1, 2, 3, 4, 5, 9, 10, 11};
  for (int i = 0; i < 12; ++i) EXPECT_EQ(p[i], expect[i]) << i;
  // Row slicing also works for a 1-D tensor (the router's correction bias).
  {
    CheckpointWriter w(t.path / "src1");
    w.add("b", DType::F32, {5}, TensorSource::from_vector(iota_f(5, 10)));
    w.commit();
  }
  auto h = SafetensorsFile::open(t.path / "src1" / "model.safetensors");
  TensorSource b = TensorSource::rows_from_file(*h, *h->find("b"), {3, 1});
  ASSERT_EQ(b.size(), 8u);
  float got[2];
  std::memcpy(got, b.chunks[0].ptr, 4);
  std::memcpy(got + 1, b.chunks[1].ptr, 4);
  EXPECT_EQ(got[0], 13.0f);
  EXPECT_EQ(got[1], 11.0f);
}

}  // namespace
}  // namespace sickle
