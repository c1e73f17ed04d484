// sickle/base/fuzz_file.h — for fuzz targets whose parser reads a path: the input bytes as a
// file. An in-memory file (memfd) named by /proc/self/fd/N, rewritten for every input: no
// disk I/O and nothing to clean up. Not part of the library (only *_fuzz.cpp include it).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "base/error.h"

namespace sickle::fuzz {

class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(::memfd_create(name, MFD_CLOEXEC)) {
    SICKLE_CHECK(fd_ >= 0, "memfd_create");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  // Replaces the file's content with `bytes`; returns its path.
  const std::filesystem::path& write(std::string_view bytes) {
    SICKLE_CHECK(::ftruncate(fd_, 0) == 0, "ftruncate");
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::pwrite(fd_, bytes.data() + done, bytes.size() - done, off_t(done));
      SICKLE_CHECK(w > 0, "pwrite");
      done += size_t(w);
    }
    return path_;
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  int fd_;
  std::filesystem::path path_;
};

// Splits fuzz input into the parts between separator lines (for parsers that read two files).
inline std::pair<std::string_view, std::string_view> split_once(std::string_view in, std::string_view sep) {
  size_t p = in.find(sep);
  if (p == std::string_view::npos) return {in, {}};
  return {in.substr(0, p), in.substr(p + sep.size())};
}

}  // namespace sickle::fuzz
