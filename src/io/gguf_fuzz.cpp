// libFuzzer target for the GGUF reader: any bytes must give either a Reader whose tensors lie
// inside the bytes or a sickle::Error, never a crash, hang, leak, UB or a huge allocation.
#include <cstdint>
#include <span>

#include "base/error.h"
#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    sickle::gguf::Reader r(bytes, "fuzz");
    for (const auto& [k, v] : r.kv())
      if (r.find(k) != &v) __builtin_trap();
    for (const auto& t : r.tensors()) {
      const std::byte* p = r.tensor_data(t);
      if (p < bytes.data() || uint64_t(p - bytes.data()) > size ||
          t.nbytes > size - uint64_t(p - bytes.data()))
        __builtin_trap();
      if (r.find_tensor(t.name) != &t) __builtin_trap();
      // Read the tensor's first and last bytes (ASan checks they are inside the input).
      if (t.nbytes) (void)(std::to_integer<int>(p[0]) + std::to_integer<int>(p[t.nbytes - 1]));
    }
    for (const auto& [k, v] : r.kv()) (void)v.to_string();
  } catch (const sickle::Error&) {
  }
  return 0;
}
