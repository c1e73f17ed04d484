// sickle/io/safetensors.h — validated, zero-copy reading of one .safetensors file.
//
// Format (docs/formats.md §4): u64 LE header length N, N bytes of JSON, then data.
// Every tensor's [begin, end) is relative to byte 8+N. A valid file's tensors, sorted by
// offset, cover the data exactly (no hole, no overlap), and end-begin = numel * dtype size.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/dtype.h"
#include "io/mapped_file.h"

namespace sickle {

constexpr uint64_t kMaxSafetensorsHeader = 100ull * 1000 * 1000;  // as the reference implementation

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;   // outermost first, row-major
  uint64_t begin = 0, end = 0;  // relative to the start of the data section
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// A read-only view of a tensor's bytes inside a mapping (or any buffer that outlives it).
struct TensorView {
  const std::byte* data = nullptr;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::string name;
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(size_t i) const { return shape.at(i); }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data);
  }
  std::string shape_str() const;
};

std::string shape_to_string(const std::vector<int64_t>& shape);

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
};

// Parses and fully validates a header against a data section of `data_size` bytes.
// `label` (usually the file path) prefixes every error. Throws Error. This is the fuzz target.
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_size,
                                           const std::string& label);

class SafetensorsFile {
 public:
  // Opens, maps and validates. Throws Error naming the file and tensor at fault.
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;
  TensorView view(const TensorInfo& info) const;
  TensorView view(std::string_view name) const;          // throws if missing
  uint64_t data_offset() const { return data_offset_; }  // absolute file offset of the data section
  const MappedFile& file() const { return *file_; }

 private:
  std::unique_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
  uint64_t data_offset_ = 0;
};

}  // namespace sickle
