// libFuzzer target for the statistics reader (ExpertStats::load, a safetensors file with
// sickle's metadata): any bytes must give either statistics whose invariants hold or a
// sickle::Error, never a crash, hang, leak or UB. The reader takes a path: the bytes are
// written to an in-memory file.
#include <cmath>
#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "base/fuzz_file.h"
#include "prune/stats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static sickle::fuzz::MemFile file("stats");
  const auto& path = file.write(std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    sickle::ExpertStats s = sickle::ExpertStats::load(path);
    for (const auto& [il, l] : s.layers) {
      if (il < 0) __builtin_trap();
      const size_t n = l.count.size();
      for (const auto* v : {&l.gate_sum, &l.reap_sum, &l.ean_sum, &l.ean_sq_sum, &l.max_act})
        if (v->size() != n) __builtin_trap();
      for (double x : l.count)
        if (!std::isfinite(x) || x < 0) __builtin_trap();
    }
    (void)sickle::describe_stats(s);
    // Merging with a copy that holds no shard sums every layer with itself.
    sickle::ExpertStats other = s;
    other.meta.shards.clear();
    std::vector<int64_t> missing;
    sickle::ExpertStats m = sickle::merge_stats({s, other}, {"a", "b"}, {}, &missing);
    if (m.layers.size() != s.layers.size()) __builtin_trap();
  } catch (const sickle::Error&) {
  }
  return 0;
}
