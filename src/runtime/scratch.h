// sickle/runtime/scratch.h — reusable aligned scratch memory for kernels.
//
// A ScratchBuffer grows to the largest size asked of it and then stays: after the first token
// of a run the token path allocates nothing (style.md habit 5). Kernels keep one per thread
// (thread_local) for the activations they re-encode (e.g. int8-quantized x).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace sickle {

class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ~ScratchBuffer() { std::free(data_); }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  // At least `bytes` bytes, 64-byte aligned; previous contents are not preserved on growth.
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
