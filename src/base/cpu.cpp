#include "base/cpu.h"

#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace sickle {

std::string CpuFeatures::summary() const {
  std::string s;
  auto add = [&](bool b, const char* n) {
    if (b) {
      if (!s.empty()) s += ' ';
      s += n;
    }
  };
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vnni, "avx512vnni");
  add(avxvnni, "avxvnni");
  add(avx512bf16, "avx512bf16");
  add(amx, "amx");
  return s.empty() ? "scalar" : s;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    // clang 14 has no "f16c" for __builtin_cpu_supports: read CPUID.1:ECX bit 29 directly
    // (only meaningful with AVX enabled by the OS, which avx2 implies).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    c.f16c = c.avx2 && __get_cpuid(1, &eax, &ebx, &ecx, &edx) && ((ecx >> 29) & 1u);
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
    // CPUID.(7,1):EAX[5] avx512_bf16; CPUID.(7,0):EDX[22] amx-bf16, [24] amx-tile, [25] amx-int8.
    if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) c.avx512bf16 = c.avx512f && ((eax >> 5) & 1u);
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
      const bool tiles = ((edx >> 22) & 1u) && ((edx >> 24) & 1u) && ((edx >> 25) & 1u);
#if defined(__linux__) && defined(__x86_64__)
      // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): without it the first tile
      // instruction faults (SICKLE_KERNELS=avx512 runs without AMX, for comparisons).
      c.amx = tiles && c.avx512bf16 && c.avx512vnni && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
      (void)tiles;
#endif
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c.n_cores = n > 0 ? int(n) : 1;
    return c;
  }();
  return f;
}

}  // namespace sickle
