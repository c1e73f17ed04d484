// sickle/model/test_poke.h — for tests only: a copy of a checkpoint with one value of one tensor
// replaced by NaN or +Inf, its bytes poked in place in the copied shard (what a bad conversion
// or a corrupted download leaves), for the non-finite checks of the token path.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/error.h"
#include "io/checkpoint.h"

namespace sickle::test_util {

enum class Poke { kNaN, kInf };

// Overwrites element `element` of float tensor `tensor` of the checkpoint in `dir` (BF16, F16
// or F32) with a NaN or +Inf. Throws Error for other dtypes.
inline void poke_value(const std::filesystem::path& dir, const std::string& tensor, int64_t element, Poke p) {
  std::filesystem::path file;
  uint64_t offset = 0;
  uint32_t bits = 0;
  size_t size = 0;
  {
    auto ck = Checkpoint::open(dir);
    const TensorInfo& info = ck->info(tensor);
    if (element < 0 || element >= info.numel()) fail("poke: element {} outside tensor '{}'", element, tensor);
    const bool nan = p == Poke::kNaN;
    switch (info.dtype) {
      case DType::BF16: bits = nan ? 0x7fc0u : 0x7f80u, size = 2; break;
      case DType::F16: bits = nan ? 0x7e00u : 0x7c00u, size = 2; break;
      case DType::F32: bits = nan ? 0x7fc00000u : 0x7f800000u, size = 4; break;
      default: fail("poke: tensor '{}' has dtype {}, not a float", tensor, dtype_name(info.dtype));
    }
    file = ck->file_of(tensor).path();
    offset = ck->file_of(tensor).data_offset() + info.begin + uint64_t(element) * size;
  }
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(std::streamoff(offset));
  char b[4];
  std::memcpy(b, &bits, size);  // little endian: the low bytes
  f.write(b, std::streamsize(size));
  if (!f) fail("poke: cannot write {}", file.string());
}

// Copies the checkpoint directory `src` to `dst` and pokes one value (poke_value).
inline void poked_copy(const std::filesystem::path& src, const std::filesystem::path& dst,
                       const std::string& tensor, int64_t element, Poke p) {
  std::filesystem::copy(src, dst, std::filesystem::copy_options::recursive);
  poke_value(dst, tensor, element, p);
}

}  // namespace sickle::test_util
