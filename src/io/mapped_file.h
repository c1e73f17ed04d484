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
  // Reads one byte of every page that [begin, end) overlaps (begin itself, then each page start)
  // and returns their XOR. After prefault() the guest kernel's page tables are filled, but under
  // a shadow-paging hypervisor (this project's CI VMs) the first user-space access to each page
  // still exits to the host: 1.0-1.3 us per 4 KiB page there, 0.08-0.09 us for a second pass
  // (kimi-k2.5-72's 2.6 M pages, one thread). Touching them at load moves that cost out of the
  // first tokens. Callers split a file across threads by ranges.
  unsigned char touch_pages(size_t begin, size_t end) const;

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace sickle
