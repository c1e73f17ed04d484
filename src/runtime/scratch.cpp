#include "runtime/scratch.h"

#include <sys/mman.h>

#include <cstdint>
#include <new>

namespace sickle {

namespace {
constexpr size_t kPage = 4096;
size_t page_round(size_t bytes) { return (bytes + kPage - 1) & ~(kPage - 1); }
}  // namespace

void* alloc_large(size_t bytes) {
  const size_t len = page_round(bytes == 0 ? 1 : bytes);
  if (len < bytes || len > SIZE_MAX - kLargeAllocBytes) throw std::bad_alloc();
  // Map len + 2 MiB and unmap the unaligned head and the tail beyond len: what stays starts on a
  // huge-page boundary (the kernel only backs aligned 2 MiB ranges with huge pages).
  const size_t span = len + kLargeAllocBytes;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (base + kLargeAllocBytes - 1) & ~uintptr_t(kLargeAllocBytes - 1);
  if (start > base) munmap(raw, start - base);
  const uintptr_t end = base + span;
  if (end > start + len) munmap(reinterpret_cast<void*>(start + len), end - (start + len));
  void* p = reinterpret_cast<void*>(start);
#ifdef MADV_HUGEPAGE
  madvise(p, len, MADV_HUGEPAGE);  // advice only: EINVAL where THP is compiled out is fine
#endif
  return p;
}

void free_large(void* p, size_t bytes) noexcept {
  if (p != nullptr) munmap(p, page_round(bytes == 0 ? 1 : bytes));
}

void* ScratchBuffer::get(size_t bytes) {
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  release();
  size_t cap = page_round(bytes);
  if (cap == 0) cap = kPage;
  if (cap >= kLargeAllocBytes) {
    data_ = alloc_large(cap);
  } else {
    data_ = std::aligned_alloc(64, cap);
    if (data_ == nullptr) throw std::bad_alloc();
  }
  capacity_ = cap;
  return data_;
}

void ScratchBuffer::release() noexcept {
  if (data_ == nullptr) return;
  if (capacity_ >= kLargeAllocBytes) free_large(data_, capacity_);
  else std::free(data_);
  data_ = nullptr;
  capacity_ = 0;
}

}  // namespace sickle
