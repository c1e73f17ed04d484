#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/error.h"

namespace sickle {

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st;
  if (::fstat(fd_, &st) != 0) {
    int e = errno;
    ::close(fd_);
    fail("{}: cannot stat: {}", path.string(), std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fail("{}: not a regular file", path.string());
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd_);
      fail("{}: cannot mmap {} bytes: {}", path.string(), size_, std::strerror(e));
    }
    data_ = static_cast<const std::byte*>(p);
  }
}

bool MappedFile::prefault() const {
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14 (glibc 2.36 headers may lack it)
#endif
  if (!data_) return true;
  return ::madvise(const_cast<std::byte*>(data_), size_, MADV_POPULATE_READ) == 0;
}

unsigned char MappedFile::touch_pages(size_t begin, size_t end) const {
  end = end < size_ ? end : size_;
  if (!data_ || begin >= end) return 0;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  const volatile unsigned char* p = reinterpret_cast<const volatile unsigned char*>(data_);
  unsigned char x = p[begin];
  for (size_t off = (begin / page + 1) * page; off < end; off += page) x ^= p[off];
  return x;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace sickle
