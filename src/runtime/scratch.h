// sickle/runtime/scratch.h — reusable aligned scratch memory for kernels.
//
// A ScratchBuffer grows to the largest size asked of it and then stays: after the first token
// of a run the token path allocates nothing (style.md habit 5). Kernels keep one per thread
// (thread_local) for the activations they re-encode (e.g. int8-quantized x).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace sickle {

// Large buffers (activations of a long prompt, KV caches, dequantized weights) are mapped on
// their own, start on a 2 MiB boundary and are advised as transparent huge pages
// (MADV_HUGEPAGE; Linux's default THP mode is "madvise"): their first touch then faults once
// per 2 MiB instead of once per 4 KiB page. Under a hypervisor that shadows page tables each
// 4 KiB fault costs ~10 us (300 MB of fresh scratch: 0.8 s vs 17 ms with huge pages), which a
// 512-token prefill of a real-dimension model paid on every first forward. Where THP is off the
// advice is ignored and the buffer is ordinary memory.
inline constexpr size_t kLargeAllocBytes = size_t(2) << 20;
// At least `bytes` bytes (> 0), 2 MiB aligned, zero-filled on first touch; throws std::bad_alloc.
void* alloc_large(size_t bytes);
// Releases what alloc_large(bytes) returned (the same `bytes`).
void free_large(void* p, size_t bytes) noexcept;

// The one choice between the two: from kLargeAllocBytes alloc_large, below it operator new
// (64-byte aligned). free_buffer takes the same `bytes` that alloc_buffer was given.
void* alloc_buffer(size_t bytes);
void free_buffer(void* p, size_t bytes) noexcept;

// std::allocator over alloc_buffer, for buffers that may grow large.
template <class T>
struct LargeAllocator {
  using value_type = T;
  LargeAllocator() = default;
  template <class U>
  LargeAllocator(const LargeAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(alloc_buffer(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { free_buffer(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const LargeAllocator<U>&) const noexcept {
    return true;
  }
};

// A std::vector whose storage is LargeAllocator's: the model's per-step scratch and KV caches.
template <class T>
using LargeVector = std::vector<T, LargeAllocator<T>>;

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer() { free_buffer(data_, capacity_); }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // At least `bytes` bytes (alloc_buffer: 64-byte aligned, huge pages from kLargeAllocBytes);
  // previous contents are not preserved on growth.
  void* get(size_t bytes);
  size_t capacity() const { return capacity_; }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// Bump allocator over a ScratchBuffer: carve several arrays out of one reservation.
// Usage: ScratchArena a(buf, total_bytes); float* p = a.alloc<float>(n); ...
class ScratchArena {
 public:
  ScratchArena(ScratchBuffer& buf, size_t bytes)
      : base_(static_cast<uint8_t*>(buf.get(bytes))), size_(bytes) {}
  template <class T>
  T* alloc(size_t n) {
    size_t off = (used_ + 63) & ~size_t(63);
    used_ = off + n * sizeof(T);
    if (used_ > size_) std::abort();  // caller under-reserved: a bug, not input
    return reinterpret_cast<T*>(base_ + off);
  }
  // Bytes to reserve for arrays of these byte sizes (each 64-byte aligned).
  static constexpr size_t padded(size_t bytes) { return (bytes + 63) & ~size_t(63); }

 private:
  uint8_t* base_;
  size_t size_, used_ = 0;
};

}  // namespace sickle
