// libFuzzer target for the safetensors header parser (`make fuzz`): any bytes must give either a
// validated header or a sickle::Error, never a crash, hang, leak or out-of-bounds access.
// Input layout: 8 bytes = the data-section size the header is checked against (so offsets can
// match), then the header text.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "base/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_size = 0;
  std::memcpy(&data_size, data, 8);
  data_size %= (1ull << 40);  // large but not absurd, to exercise the end-of-data checks
  std::string_view text(reinterpret_cast<const char*>(data + 8), size - 8);
  try {
    sickle::SafetensorsHeader h = sickle::parse_safetensors_header(text, data_size, "fuzz");
    // Invariants of a header that validated: sorted, contiguous, exact cover, sizes agree.
    uint64_t cursor = 0;
    for (const auto& t : h.tensors) {
      if (t.begin != cursor || t.end < t.begin) __builtin_trap();
      if (uint64_t(t.numel()) * sickle::dtype_size(t.dtype) != t.nbytes()) __builtin_trap();
      cursor = t.end;
    }
    if (cursor != data_size) __builtin_trap();
  } catch (const sickle::Error&) {
  }
  return 0;
}
