// Broken and hostile safetensors files: each gives an Error naming the file (and the tensor when
// one is at fault), never a crash. Plus the zero-copy happy path.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>

#include "base/error.h"

#include "base/test_temp_dir.h"

namespace sickle {
namespace {
namespace fs = std::filesystem;

struct TempDir : test_util::TempDir {
  TempDir() : test_util::TempDir("sickle-st-test") {}
};

// u64 header length, header text, data bytes.
std::string file_bytes(const std::string& header, const std::string& data, int64_t declared_len = -1) {
  uint64_t n = declared_len >= 0 ? uint64_t(declared_len) : header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

class SafetensorsBroken : public ::testing::Test {
 protected:
  TempDir dir;
  fs::path write(const std::string& bytes, const std::string& name = "bad.safetensors") {
    fs::path p = dir.path / name;
    std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return p;
  }
  // Opens the file and returns the error message ("" if it opened).
  std::string error_of(const std::string& bytes) {
    fs::path p = write(bytes);
    try {
      SafetensorsFile::open(p);
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(p.string()), std::string::npos) << "message does not name the file: " << msg;
      return msg;
    }
    return "";
  }
};

const std::string kGood =
    R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
    R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}})";

TEST_F(SafetensorsBroken, GoodFileOpensZeroCopy) {
  std::string data(22, '\0');
  float v[4] = {1, 2, 3, 4};
  std::memcpy(data.data(), v, 16);
  fs::path p = write(file_bytes(kGood, data));
  auto f = SafetensorsFile::open(p);
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  TensorView a = f->view("a");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(a.as<float>()[3], 4.0f);
  EXPECT_EQ(reinterpret_cast<const char*>(a.data),
            reinterpret_cast<const char*>(f->file().data()) + 8 + kGood.size());
  EXPECT_EQ(f->find("b")->nbytes(), 6u);
  EXPECT_EQ(f->find("nope"), nullptr);
  EXPECT_THROW(f->view("nope"), Error);
}

TEST_F(SafetensorsBroken, TruncatedData) {
  std::string msg = error_of(file_bytes(kGood, std::string(20, '\0')));
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("past the end"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, TooShortForHeaderLength) {
  std::string msg = error_of(std::string(5, '\0'));
  EXPECT_NE(msg.find("too short"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, HeaderLengthPastEof) {
  std::string msg = error_of(file_bytes(kGood, std::string(22, '\0'), int64_t(kGood.size() + 1000)));
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, HeaderOverLimit) {
  std::string msg = error_of(file_bytes("{}", "", int64_t(kMaxSafetensorsHeader) + 1));
  EXPECT_NE(msg.find("exceeds"), std::string::npos) << msg;
  // A u64 length near 2^64 must not wrap any arithmetic.
  msg = error_of(file_bytes("{}", "", INT64_MAX));
  EXPECT_NE(msg.find("exceeds"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, NotJson) {
  std::string msg = error_of(file_bytes(R"({"a":{"dtype":"F32",)", ""));
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
  msg = error_of(file_bytes("GARBAGE!", ""));
  EXPECT_NE(msg.find("does not start with"), std::string::npos) << msg;
  msg = error_of(file_bytes("", ""));
  EXPECT_NE(msg.find("does not start with"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, NonObjectEntries) {
  std::string msg = error_of(file_bytes(R"({"t":[1,2]})", ""));
  EXPECT_NE(msg.find("'t'"), std::string::npos) << msg;
  msg = error_of(file_bytes(R"({"__metadata__":{"k":5}})", ""));
  EXPECT_NE(msg.find("__metadata__"), std::string::npos) << msg;
  msg = error_of(file_bytes(R"({"__metadata__":[]})", ""));
  EXPECT_NE(msg.find("__metadata__"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, UnknownOrMissingDtype) {
  std::string msg =
      error_of(file_bytes(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", std::string(16, 0)));
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown dtype 'F128'"), std::string::npos) << msg;
  msg = error_of(file_bytes(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", std::string(4, 0)));
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, BadShapes) {
  for (const char* shape : {"[-1]", "[1.5]", "[\"2\"]", "7", "[1,null]"}) {
    SCOPED_TRACE(shape);
    std::string h = std::string(R"({"w":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,4]}})";
    std::string msg = error_of(file_bytes(h, std::string(4, 0)));
    EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("shape"), std::string::npos) << msg;
  }
}

TEST_F(SafetensorsBroken, BadOffsets) {
  struct Case {
    const char* header;
    size_t data;
    const char* expect;
    const char* tensor;
  };
  const Case cases[] = {
      // overlap: b starts inside a
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, "overlaps", "'b'"},
      // hole between a and b
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
       12, "hole", "'b'"},
      // trailing bytes after the last tensor
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 10, "trailing", nullptr},
      // end < begin
      {R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8, "end 4 < begin 8", "'a'"},
      // byte length != numel * size
      {R"({"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8, "byte length 8", "'a'"},
      // huge dims: numel overflows 64 bits; must be caught, not wrapped to a small number
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0, "(huge)",
       "'a'"},
      {R"({"a":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,0]}})", 0, "too large", "'a'"},
      // wrong arity / types of data_offsets
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8, "data_offsets", "'a'"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4, "data_offsets", "'a'"},
      {R"({"a":{"dtype":"F32","shape":[1]}})", 4, "data_offsets", "'a'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.header);
    std::string msg = error_of(file_bytes(c.header, std::string(c.data, '\0')));
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    if (c.tensor) {
      EXPECT_NE(msg.find(c.tensor), std::string::npos) << msg;
    }
  }
}

TEST_F(SafetensorsBroken, DeeplyNestedJsonIsAnErrorNotACrash) {
  std::string h = R"({"a":)" + std::string(200000, '[') + std::string(200000, ']') + "}";
  std::string msg = error_of(file_bytes(h, ""));
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
}

TEST_F(SafetensorsBroken, DuplicateNamesRefused) {
  // JSON parsers keep the last of two equal keys: the first entry's bytes would silently be
  // read as the other's (or a hole). A name given twice is an error naming it.
  std::string msg = error_of(file_bytes(
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
      R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
      std::string(4, '\0')));
  EXPECT_NE(msg.find("tensor 'a' appears twice"), std::string::npos) << msg;
  msg = error_of(file_bytes(
      R"({"__metadata__":{},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"__metadata__":{}})",
      std::string(1, '\0')));
  EXPECT_NE(msg.find("'__metadata__' appears twice"), std::string::npos) << msg;
  // Equal keys inside one entry or inside the metadata are refused as well.
  msg = error_of(file_bytes(R"({"x":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})",
                            std::string(1, '\0')));
  EXPECT_NE(msg.find("'dtype' appears twice"), std::string::npos) << msg;
  // The same names at different depths are fine.
  EXPECT_EQ(
      error_of(file_bytes(R"({"__metadata__":{"x":"1"},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                          std::string(1, '\0'))),
      "");
}

TEST_F(SafetensorsBroken, ParserAloneNamesLabel) {
  try {
    parse_safetensors_header(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 3, "LBL");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("LBL: tensor 'x'", 0), 0u) << e.what();
  }
  // Padding spaces after the JSON (writers pad to 8) are accepted.
  auto h = parse_safetensors_header(
      std::string(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})") + "   ", 2, "L");
  EXPECT_EQ(h.tensors.size(), 1u);
  // Zero-size tensors are legal and sort before data at the same offset.
  h = parse_safetensors_header(
      R"({"e":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
      2, "L");
  EXPECT_EQ(h.tensors.size(), 2u);
  // An empty tensor whose other dimensions are huge: legal, and numel() must not overflow.
  h = parse_safetensors_header(
      R"({"z":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,0],"data_offsets":[0,0]}})", 0,
      "L");
  EXPECT_EQ(h.tensors.at(0).numel(), 0);
}

}  // namespace
}  // namespace sickle
