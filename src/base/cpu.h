// sickle/base/cpu.h — CPU features, read once; kernels dispatch on these.
#pragma once

#include <string>

namespace sickle {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avxvnni = false;
  bool avx512bf16 = false;
  // AMX tiles with int8 and bf16 dot products, and the kernel's permission to use them
  // (Linux >= 5.16 grants it per process on request: arch_prctl(ARCH_REQ_XCOMP_PERM)).
  bool amx = false;
  int n_cores = 1;  // online logical CPUs
  std::string summary() const;
};

const CpuFeatures& cpu_features();

}  // namespace sickle
