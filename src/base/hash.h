// sickle/base/hash.h — a fast non-cryptographic 64-bit hash for checksums and fingerprints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sickle {

// Streaming hash: feed bytes in any split, get the same digest. Four 64-bit lanes with
// multiply-xorshift mixing (in the manner of xxHash64's structure, own constants).
class Hasher {
 public:
  explicit Hasher(uint64_t seed = 0);
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  uint64_t digest() const;
  std::string hex() const;

 private:
  void block(const unsigned char* p);
  uint64_t lanes_[4];
  unsigned char buf_[32];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

uint64_t hash64(const void* data, size_t n, uint64_t seed = 0);
std::string hex64(uint64_t v);

}  // namespace sickle
