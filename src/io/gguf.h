// sickle/io/gguf.h — GGUF (v3) files: a streaming writer and a small reader.
//
// Layout (ggml's docs/gguf.md, gguf-py/gguf/gguf_writer.py), all little-endian:
//   "GGUF" u32 version=3, u64 n_tensors, u64 n_kv,
//   n_kv x { string key, u32 value_type, value }   (string = u64 length + bytes, no NUL;
//                                                   array = u32 elem_type, u64 n, n values)
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims] (ne[0] = fastest/contiguous dim),
//                 u32 ggml_type, u64 offset (relative to the data section, a multiple of
//                 general.alignment) }
//   padding to general.alignment (default 32), then the tensor data, each tensor padded.
// The writer streams: tensor bytes come from producers called at commit(), in order, into a
// temporary file beside the output that is renamed into place at the end. The reader maps a
// file and validates every offset, size and type against the file (Error naming the file).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/mapped_file.h"

namespace sickle {
class TempOutput;
}

namespace sickle::gguf {

enum class ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* value_type_name(ValueType t);

// ggml_type ids (ggml/include/ggml.h) of the encodings sickle writes.
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ8_0 = 8, kBF16 = 30 };
const char* ggml_type_name(GgmlType t);
int64_t ggml_block_size(GgmlType t);   // elements per block (32 for Q4_0/Q8_0, 1 otherwise)
int64_t ggml_block_bytes(GgmlType t);  // bytes per block (18 Q4_0, 34 Q8_0)
// Bytes of a tensor with these ggml dims; Error if ne[0] is not a multiple of the block size.
uint64_t ggml_nbytes(GgmlType t, const std::vector<int64_t>& ne, std::string_view what);

// One metadata value. Scalars keep their exact GGUF type (llama.cpp checks types).
struct Value {
  ValueType type = ValueType::kU32;
  ValueType array_type = ValueType::kU8;  // element type when type == kArray
  uint64_t u = 0;                         // unsigned ints, bool
  int64_t i = 0;                          // signed ints
  double f = 0;                           // f32 / f64
  std::string s;                          // string
  std::vector<Value> array;

  static Value u8(uint8_t v);
  static Value i8(int8_t v);
  static Value u16(uint16_t v);
  static Value i16(int16_t v);
  static Value u32(uint32_t v);
  static Value i32(int32_t v);
  static Value u64(uint64_t v);
  static Value i64(int64_t v);
  static Value f32(float v);
  static Value f64(double v);
  static Value boolean(bool v);
  static Value str(std::string v);
  // An array of scalars/strings all of `elem` type (nested arrays are allowed by GGUF too).
  static Value arr(ValueType elem, std::vector<Value> items);
  static Value str_array(const std::vector<std::string>& items);
  static Value i32_array(const std::vector<int32_t>& items);

  bool operator==(const Value& o) const;
  std::string to_string(size_t max_items = 8) const;  // for `inspect`-style dumps and errors
};

// Appends the GGUF encoding of `v` (without the type tag) to `out`.
void encode_value(const Value& v, std::string& out);

struct TensorSink {
  std::function<void(const void*, size_t)> write;
};

class Writer {
 public:
  // Throws Error if `out` exists and !force. The temp file is io/output_path.h's TempOutput
  // (`.<name>.tmp-XXXXXX` beside `out`), created here.
  Writer(std::filesystem::path out, bool force, uint32_t alignment = 32);
  ~Writer();  // removes the temp file unless committed
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Keys must be unique (Error otherwise). general.alignment is written by the writer when the
  // alignment is not the default 32.
  void add_kv(const std::string& key, Value v);
  // `ne` in ggml order (ne[0] contiguous). `produce` must write exactly ggml_nbytes bytes
  // through the sink; it is called once, at commit(), in the order tensors were added.
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                  std::function<void(TensorSink&)> produce);
  // Writes header, metadata, tensor infos and data; fsyncs; renames into place.
  void commit();

  uint64_t data_bytes() const { return data_bytes_; }
  size_t n_tensors() const { return tensors_.size(); }
  std::function<void(uint64_t)> on_bytes;  // progress: bytes of tensor data written so far

 private:
  struct Pending {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t nbytes, offset;
    std::function<void(TensorSink&)> produce;
  };
  std::filesystem::path out_;
  std::unique_ptr<TempOutput> tmp_;
  uint32_t alignment_;
  bool force_ = false;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<Pending> tensors_;
  std::map<std::string, size_t> tensor_index_;
  uint64_t data_bytes_ = 0;
  bool committed_ = false;
};

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> ne;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
};

// Read-only view of a GGUF file (mapped). Only the types in GgmlType are accepted for tensors.
class Reader {
 public:
  explicit Reader(const std::filesystem::path& path);
  // The same parse of bytes held elsewhere, which must outlive the Reader (fuzzing, tests);
  // `label` prefixes errors.
  Reader(std::span<const std::byte> bytes, std::string label);
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::vector<std::pair<std::string, Value>>& kv() const { return kv_; }
  const Value* find(std::string_view key) const;  // nullptr if absent
  const Value& get(std::string_view key) const;   // Error naming the key if absent
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  const TensorInfo& tensor(std::string_view name) const;  // Error if absent
  const std::byte* tensor_data(const TensorInfo& t) const;
  uint64_t data_offset() const { return data_offset_; }

 private:
  void parse();

  std::unique_ptr<MappedFile> file_;  // null when reading bytes held elsewhere
  std::span<const std::byte> bytes_;
  std::string label_;
  uint32_t version_ = 0, alignment_ = 32;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> kv_index_, tensor_index_;  // name -> index above
  uint64_t data_offset_ = 0;
};

// Dequantizes one ggml row of `n` elements (n a multiple of the block size) into `out`: the
// ggml reference semantics (ggml-quants.c dequantize_row_*). For tests and verification.
void dequantize_row(GgmlType type, const void* src, int64_t n, float* out);

}  // namespace sickle::gguf
