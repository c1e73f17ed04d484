// sickle/io/mapped_file.h — a read-only memory map that unmaps itself.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace sickle {

class MappedFile {
 public:
  // Maps the whole file read-only (PROT_READ, MAP_SHARED). Throws Error naming the path.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  int fd() const { return fd_; }  // kept open for copy_file_range
  const std::filesystem::path& path() const { return path_; }

  // Fills the page tables for the whole mapping now (MADV_POPULATE_READ, Linux >= 5.14; reads
  // from disk what is not cached), so the token path takes no page faults. False (and nothing
  // done) where the kernel does not support it.
  bool prefault() const;

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace sickle
