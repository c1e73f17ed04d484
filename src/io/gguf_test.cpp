// GGUF writer/reader: round trip of every metadata type and of tensors of every written type,
// byte-level header layout against the GGUF spec, alignment/padding, all-or-nothing output,
// errors on bad input, and ggml dequantization semantics on hand-made blocks.
#include "io/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "base/error.h"
#include "base/numeric.h"

namespace sickle::gguf {
namespace {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sickle-gguf-test-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

template <typename T>
std::function<void(TensorSink&)> bytes_of(std::vector<T> v) {
  return [v = std::move(v)](TensorSink& s) { s.write(v.data(), v.size() * sizeof(T)); };
}

TEST(Gguf, RoundTripsEveryValueTypeAndTensors) {
  TempDir d;
  const fs::path f = d.path / "m.gguf";
  std::vector<std::pair<std::string, Value>> kvs = {
      {"a.u8", Value::u8(250)},
      {"a.i8", Value::i8(-7)},
      {"a.u16", Value::u16(65000)},
      {"a.i16", Value::i16(-30000)},
      {"a.u32", Value::u32(4000000000u)},
      {"a.i32", Value::i32(-2000000000)},
      {"a.f32", Value::f32(0.1f)},
      {"a.bool", Value::boolean(true)},
      {"a.str", Value::str("héllo\nworld")},
      {"a.u64", Value::u64(1ull << 50)},
      {"a.i64", Value::i64(-(1ll << 50))},
      {"a.f64", Value::f64(0.1)},
      {"a.strs", Value::str_array({"x", "", "y z"})},
      {"a.i32s", Value::i32_array({1, -2, 3})},
      {"a.nested", Value::arr(ValueType::kArray, {Value::i32_array({5}), Value::i32_array({})})},
  };
  std::vector<float> t0 = {1.5f, -2.0f, 3.25f};  // 12 bytes: padding follows
  std::vector<uint16_t> t1(64);
  for (size_t k = 0; k < t1.size(); ++k) t1[k] = f32_to_f16(float(k) - 20.0f);
  std::vector<uint8_t> t2(2 * 18);
  for (size_t k = 0; k < t2.size(); ++k) t2[k] = uint8_t(k * 37 + 1);
  {
    Writer w(f, false);
    for (auto& [k, v] : kvs) w.add_kv(k, v);
    w.add_tensor("t0", GgmlType::kF32, {3}, bytes_of(t0));
    w.add_tensor("t1", GgmlType::kF16, {16, 2, 2}, bytes_of(t1));
    w.add_tensor("t2", GgmlType::kQ4_0, {64}, bytes_of(t2));
    w.commit();
  }
  Reader r(f);
  EXPECT_EQ(r.version(), 3u);
  ASSERT_EQ(r.kv().size(), kvs.size());
  for (size_t k = 0; k < kvs.size(); ++k) {
    EXPECT_EQ(r.kv()[k].first, kvs[k].first);
    EXPECT_TRUE(r.kv()[k].second == kvs[k].second) << kvs[k].first << ": " << r.kv()[k].second.to_string();
  }
  EXPECT_EQ(r.get("a.str").s, "héllo\nworld");
  EXPECT_FLOAT_EQ(float(r.get("a.f32").f), 0.1f);
  ASSERT_EQ(r.tensors().size(), 3u);
  const TensorInfo& i0 = r.tensor("t0");
  EXPECT_EQ(i0.offset, 0u);
  EXPECT_EQ(i0.nbytes, 12u);
  const TensorInfo& i1 = r.tensor("t1");
  EXPECT_EQ(i1.offset, 32u);  // 12 bytes padded to the 32-byte alignment
  EXPECT_EQ(i1.ne, (std::vector<int64_t>{16, 2, 2}));
  EXPECT_EQ(i1.nbytes, 128u);
  const TensorInfo& i2 = r.tensor("t2");
  EXPECT_EQ(i2.offset, 160u);
  EXPECT_EQ(i2.nbytes, 36u);
  EXPECT_EQ(r.data_offset() % 32, 0u);
  EXPECT_EQ(std::memcmp(r.tensor_data(i0), t0.data(), 12), 0);
  EXPECT_EQ(std::memcmp(r.tensor_data(i1), t1.data(), 128), 0);
  EXPECT_EQ(std::memcmp(r.tensor_data(i2), t2.data(), 36), 0);
  EXPECT_EQ(fs::file_size(f), r.data_offset() + 160 + 64);  // last tensor padded too
  EXPECT_EQ(std::distance(fs::directory_iterator(d.path), fs::directory_iterator()), 1);  // no temp left
}

// The bytes of a minimal file, written out by hand from the GGUF spec (ggml docs/gguf.md).
TEST(Gguf, HeaderBytesMatchTheSpec) {
  TempDir d;
  const fs::path f = d.path / "h.gguf";
  {
    Writer w(f, false);
    w.add_kv("k", Value::u32(7));
    w.add_tensor("w", GgmlType::kF32, {2}, bytes_of(std::vector<float>{1.0f, 2.0f}));
    w.commit();
  }
  const std::string b = slurp(f);
  std::string want;
  auto u32 = [&](uint32_t v) { want.append(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [&](uint64_t v) { want.append(reinterpret_cast<const char*>(&v), 8); };
  want += "GGUF";
  u32(3), u64(1), u64(1);
  u64(1), want += "k", u32(4), u32(7);                  // key "k": UINT32 = 4, value 7
  u64(1), want += "w", u32(1), u64(2), u32(0), u64(0);  // tensor "w": 1 dim, ne 2, F32, offset 0
  EXPECT_EQ(want.size(), 74u);
  want.resize(96, '\0');  // 74 header bytes padded to 96
  float vals[2] = {1.0f, 2.0f};
  want.append(reinterpret_cast<const char*>(vals), 8);
  want.resize(128, '\0');  // tensor data padded too
  EXPECT_EQ(b.size(), want.size());
  EXPECT_TRUE(b == want);
}

TEST(Gguf, CustomAlignmentIsRecordedAndHonoured) {
  TempDir d;
  const fs::path f = d.path / "a.gguf";
  {
    Writer w(f, false, 64);
    w.add_tensor("x", GgmlType::kBF16, {3}, bytes_of(std::vector<uint16_t>{1, 2, 3}));
    w.add_tensor("y", GgmlType::kBF16, {1}, bytes_of(std::vector<uint16_t>{4}));
    w.commit();
  }
  Reader r(f);
  EXPECT_EQ(r.alignment(), 64u);
  EXPECT_EQ(r.get("general.alignment").u, 64u);
  EXPECT_EQ(r.tensor("y").offset, 64u);
  EXPECT_EQ(r.data_offset() % 64, 0u);
}

TEST(Gguf, ProducerSizeMismatchLeavesNoFile) {
  TempDir d;
  const fs::path f = d.path / "bad.gguf";
  {
    Writer w(f, false);
    w.add_tensor("x", GgmlType::kF32, {4}, bytes_of(std::vector<float>{1, 2, 3}));  // 12 of 16 bytes
    EXPECT_THROW(w.commit(), Error);
  }
  EXPECT_FALSE(fs::exists(f));
  EXPECT_TRUE(fs::is_empty(d.path));  // no temp left
}

TEST(Gguf, RefusesExistingDuplicatesAndBadShapes) {
  TempDir d;
  const fs::path f = d.path / "e.gguf";
  std::ofstream(f) << "x";
  EXPECT_THROW(Writer(f, false), Error);
  Writer w(f, true);
  w.add_kv("k", Value::u8(1));
  EXPECT_THROW(w.add_kv("k", Value::u8(2)), Error);
  EXPECT_THROW(w.add_tensor("q", GgmlType::kQ4_0, {48}, nullptr), Error);  // not a multiple of 32
  EXPECT_THROW(w.add_tensor("z", GgmlType::kF32, {0}, nullptr), Error);
  EXPECT_THROW(w.add_tensor(std::string(64, 'n'), GgmlType::kF32, {1}, nullptr), Error);
  w.add_tensor("t", GgmlType::kF32, {1}, bytes_of(std::vector<float>{1}));
  EXPECT_THROW(w.add_tensor("t", GgmlType::kF32, {1}, nullptr), Error);
}

TEST(Gguf, ReaderRejectsCorruptFiles) {
  TempDir d;
  const fs::path f = d.path / "ok.gguf";
  {
    Writer w(f, false);
    w.add_kv("s", Value::str("abc"));
    w.add_tensor("t", GgmlType::kF32, {8}, bytes_of(std::vector<float>(8, 1.0f)));
    w.commit();
  }
  const std::string good = slurp(f);
  auto write_variant = [&](const std::string& bytes) {
    const fs::path p = d.path / "v.gguf";
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
    return p;
  };
  std::string bad = good;
  bad[0] = 'X';
  EXPECT_THROW(Reader{write_variant(bad)}, Error);                              // magic
  EXPECT_THROW(Reader{write_variant(good.substr(0, 30))}, Error);               // truncated metadata
  EXPECT_THROW(Reader{write_variant(good.substr(0, good.size() - 8))}, Error);  // data cut short
  bad = good;
  const uint64_t huge = 1ull << 40;
  std::memcpy(&bad[24 + 8 + 1 + 4], &huge, 8);  // string length of the value "abc"
  EXPECT_THROW(Reader{write_variant(bad)}, Error);
  EXPECT_NO_THROW(Reader{write_variant(good)});
}

// Hand-made GGUF bytes (little-endian, as the spec lays them out).
struct Bytes {
  std::string s;
  template <typename T>
  Bytes& put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  Bytes& str(std::string_view v) {
    put<uint64_t>(v.size());
    s.append(v);
    return *this;
  }
  Bytes& head(uint64_t n_tensors, uint64_t n_kv) {
    return put<uint32_t>(0x46554747).put<uint32_t>(3).put(n_tensors).put(n_kv);
  }
};

std::string reader_error(const std::string& bytes) {
  TempDir d;
  const fs::path p = d.path / "h.gguf";
  std::ofstream(p, std::ios::binary) << bytes;
  try {
    Reader r(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Counts and sizes in the file are checked against the bytes that could hold them before
// anything is sized by them, and products of dimensions cannot wrap around.
TEST(Gguf, ReaderBoundsCountsAndSizesByTheFile) {
  // [2^32, 2^32] F32 elements: 2^66 bytes, which wrapped to 0 and passed the data check.
  Bytes t;
  t.head(1, 0)
      .str("t")
      .put<uint32_t>(2)
      .put<uint64_t>(1ull << 32)
      .put<uint64_t>(1ull << 32)
      .put<uint32_t>(0)
      .put<uint64_t>(0);
  std::string m = reader_error(t.s);
  EXPECT_NE(m.find("'t'"), std::string::npos) << m;
  // An array claiming 2^32 strings (8 bytes each at least) in a file of a few dozen bytes.
  Bytes a;
  a.head(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 32);
  m = reader_error(a.s);
  EXPECT_NE(m.find("4294967296"), std::string::npos) << m;
  EXPECT_NE(m.find("past the end"), std::string::npos) << m;
  // ... and 2^31 arrays (12 bytes each at least).
  Bytes aa;
  aa.head(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(1ull << 31);
  m = reader_error(aa.s);
  EXPECT_NE(m.find("2147483648"), std::string::npos) << m;
  EXPECT_NE(m.find("past the end"), std::string::npos) << m;
  // Duplicate keys and tensors are still found (by a hash lookup now, not a scan per key).
  Bytes dk;
  dk.head(0, 2).str("k").put<uint32_t>(0).put<uint8_t>(1).str("k").put<uint32_t>(0).put<uint8_t>(2);
  EXPECT_NE(reader_error(dk.s).find("duplicate key 'k'"), std::string::npos);
}

TEST(Gguf, DequantizesQ4_0AndQ8_0AsGgml) {
  // Q4_0: d = 0.5; byte j = (lo j) | (hi j+16): element j = (lo - 8) d, element j+16 = (hi - 8) d.
  uint8_t q4[18];
  const uint16_t half = f32_to_f16(0.5f);
  std::memcpy(q4, &half, 2);
  for (int j = 0; j < 16; ++j) q4[2 + j] = uint8_t(j | ((15 - j) << 4));
  float out[32];
  dequantize_row(GgmlType::kQ4_0, q4, 32, out);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], float(j - 8) * 0.5f);
    EXPECT_EQ(out[j + 16], float(7 - j) * 0.5f);
  }
  uint8_t q8[34];
  const uint16_t d8 = f32_to_f16(0.25f);
  std::memcpy(q8, &d8, 2);
  for (int j = 0; j < 32; ++j) q8[2 + j] = uint8_t(int8_t(j * 8 - 128));
  dequantize_row(GgmlType::kQ8_0, q8, 32, out);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], float(j * 8 - 128) * 0.25f);
}

}  // namespace
}  // namespace sickle::gguf
