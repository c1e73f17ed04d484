#include "runtime/scratch.h"

#include <new>

namespace sickle {

void* ScratchBuffer::get(size_t bytes) {
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  std::free(data_);
  size_t cap = (bytes + 4095) & ~size_t(4095);
  if (cap == 0) cap = 4096;
  data_ = std::aligned_alloc(64, cap);
  if (data_ == nullptr) throw std::bad_alloc();
  capacity_ = cap;
  return data_;
}

}  // namespace sickle
