// sickle/kernels/kernels_test_util.h — random weights and activations for the kernel tests
// (header-only; included by src/kernels/*_test.cpp only).
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/numeric.h"
#include "io/weights.h"
#include "kernels/dispatch.h"

namespace sickle::testing_util {

// The AMX kernel table when this CPU runs it, else nullptr (its tests skip).
inline const KernelTable* amx_table() {
  for (const KernelTable* k : runnable_kernel_tables())
    if (std::strcmp(k->name, "amx") == 0) return k;
  return nullptr;
}

// Tests parameterised over every table this CPU runs (gemma.cpp's HWY_EXPORT_AND_TEST_P):
//   class FooTest : public ::testing::TestWithParam<const KernelTable*> {};
//   INSTANTIATE_TEST_SUITE_P(Tables, FooTest, ::testing::ValuesIn(runnable_kernel_tables()), TableName());
// names each instance after its table (FooTest.Bar/avx2).
struct TableName {
  std::string operator()(const ::testing::TestParamInfo<const KernelTable*>& info) const {
    return info.param->name;
  }
};

// A weight with its own storage; `misalign` shifts the data pointer by that many bytes off a
// 64-byte boundary (safetensors offsets in a mapped file can be anything).
struct OwnedWeight {
  std::vector<uint8_t> data_buf;
  std::vector<float> scale_f32;
  std::vector<uint16_t> scale_bf16;
  WeightView view;
};

inline OwnedWeight make_weight(WeightEncoding enc, int64_t rows, int64_t cols, int64_t group, int misalign,
                               uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  OwnedWeight o;
  WeightView& w = o.view;
  w.name = "test.weight";
  w.encoding = enc;
  w.rows = rows;
  w.cols = cols;
  size_t elem = enc == WeightEncoding::kF32 ? 4 : enc == WeightEncoding::kFp8Block ? 1 : 2;
  size_t bytes = enc == WeightEncoding::kInt4Group ? size_t(rows * cols / 2) : size_t(rows * cols) * elem;
  o.data_buf.assign(bytes + 64 + 8, 0);
  uint8_t* p = o.data_buf.data() + (64 - reinterpret_cast<uintptr_t>(o.data_buf.data()) % 64) % 64 + misalign;
  // A per-row magnitude so rows differ in scale (as real weights do).
  auto row_scale = [&](int64_t r) { return 0.02f * (1.0f + float(r % 7)); };
  switch (enc) {
    case WeightEncoding::kF32:
      for (int64_t i = 0; i < rows * cols; ++i) {
        float v = nd(rng) * row_scale(i / cols);
        std::memcpy(p + 4 * i, &v, 4);
      }
      break;
    case WeightEncoding::kBF16:
    case WeightEncoding::kF16:
      for (int64_t i = 0; i < rows * cols; ++i) {
        float v = nd(rng) * row_scale(i / cols);
        uint16_t h = enc == WeightEncoding::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
        std::memcpy(p + 2 * i, &h, 2);
      }
      break;
    case WeightEncoding::kFp8Block: {
      for (int64_t i = 0; i < rows * cols; ++i) {
        uint8_t b;
        do b = uint8_t(rng());
        while ((b & 0x7f) == 0x7f);  // no NaN (Fp8EveryByteDecodesAsSpec covers them)
        p[i] = b;
      }
      w.block_rows = 128;
      w.block_cols = 128;
      int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
      w.scale_cols = sc;
      o.scale_f32.resize(size_t(sr * sc));
      for (auto& s : o.scale_f32) s = 1e-3f * (1.0f + float(rng() % 100) / 25.0f);
      w.scale_f32 = o.scale_f32.data();
      break;
    }
    case WeightEncoding::kInt4Group: {
      std::uniform_int_distribution<int> qd(-8, 7);
      for (int64_t i = 0; i < rows * cols / 8; ++i) {
        int8_t q[8];
        for (auto& v : q) v = int8_t(qd(rng));
        uint32_t word = pack_int4_word(q);
        std::memcpy(p + 4 * i, &word, 4);
      }
      w.group_size = group;
      w.scale_cols = cols / group;
      o.scale_bf16.resize(size_t(rows * w.scale_cols) + 8);
      for (int64_t i = 0; i < rows * w.scale_cols; ++i) {
        float s =
            row_scale(i / w.scale_cols) * (0.5f + float(rng() % 100) / 100.0f) * ((rng() & 1) ? 1.0f : -1.0f);
        o.scale_bf16[size_t(i)] = f32_to_bf16(s);
      }
      w.scale_bf16 = o.scale_bf16.data();
      break;
    }
  }
  w.data = p;
  return o;
}

// Activations with outliers (as real hidden states have), offset by `misalign` floats.
struct Acts {
  std::vector<float> buf;
  float* x;
};
inline Acts make_acts(int64_t n, int64_t cols, int misalign, uint32_t seed, bool outliers = true) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Acts a;
  a.buf.assign(size_t(n * cols) + 16, 0.0f);
  a.x = a.buf.data() + misalign;
  for (int64_t i = 0; i < n * cols; ++i) a.x[i] = nd(rng) * (outliers && (rng() % 97) == 0 ? 8.0f : 1.0f);
  return a;
}

}  // namespace sickle::testing_util
