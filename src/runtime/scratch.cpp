#include "runtime/scratch.h"

#include <sys/mman.h>

#include <algorithm>
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

void* alloc_buffer(size_t bytes) {
  if (bytes >= kLargeAllocBytes) return alloc_large(bytes);
  return ::operator new(bytes, std::align_val_t(64));
}

void free_buffer(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes >= kLargeAllocBytes) free_large(p, bytes);
  else ::operator delete(p, std::align_val_t(64));
}

void* ScratchBuffer::get(size_t bytes) {
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  free_buffer(data_, capacity_);
  data_ = nullptr;
  capacity_ = 0;
  const size_t cap = std::max(page_round(bytes), kPage);
  data_ = alloc_buffer(cap);
  capacity_ = cap;
  return data_;
}

}  // namespace sickle
