// sickle/base/cpu.h — CPU features, read once; kernels dispatch on these.
#pragma once

#include <string>

namespace sickle {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false, avxvnni = false;
  int n_cores = 1;       // online logical CPUs
  std::string summary() const;
};

const CpuFeatures& cpu_features();

}  // namespace sickle
