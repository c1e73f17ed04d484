#include "base/hash.h"

#include <cstring>

#include <fmt/format.h>

namespace sickle {
namespace {
constexpr uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full, P3 = 0x165667B19E3779F9ull,
                   P4 = 0x85EBCA77C2B2AE63ull, P5 = 0x27D4EB2F165667C5ull;
inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t round(uint64_t acc, uint64_t in) { return rotl(acc + in * P2, 31) * P1; }
inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
}  // namespace

Hasher::Hasher(uint64_t seed) {
  lanes_[0] = seed + P1 + P2;
  lanes_[1] = seed + P2;
  lanes_[2] = seed;
  lanes_[3] = seed - P1;
}

void Hasher::block(const unsigned char* p) {
  for (int i = 0; i < 4; ++i) lanes_[i] = round(lanes_[i], load64(p + 8 * i));
}

void Hasher::update(const void* data, size_t n) {
  auto p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (buf_len_) {
    size_t take = std::min(n, 32 - buf_len_);
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    n -= take;
    if (buf_len_ == 32) {
      block(buf_);
      buf_len_ = 0;
    }
  }
  while (n >= 32) {
    block(p);
    p += 32;
    n -= 32;
  }
  if (n) {
    std::memcpy(buf_, p, n);
    buf_len_ = n;
  }
}

uint64_t Hasher::digest() const {
  uint64_t h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) + rotl(lanes_[3], 18);
  for (int i = 0; i < 4; ++i) h = (h ^ round(0, lanes_[i])) * P1 + P4;
  h += total_;
  size_t i = 0;
  for (; i + 8 <= buf_len_; i += 8) h = rotl(h ^ round(0, load64(buf_ + i)), 27) * P1 + P4;
  for (; i < buf_len_; ++i) h = rotl(h ^ (buf_[i] * P5), 11) * P1;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }
std::string Hasher::hex() const { return hex64(digest()); }

uint64_t hash64(const void* data, size_t n, uint64_t seed) {
  Hasher h(seed);
  h.update(data, n);
  return h.digest();
}

}  // namespace sickle
