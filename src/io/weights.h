// sickle/io/weights.h — a linear layer's weight in its native encoding, as kernels consume it.
//
// Logical shape is [rows = out, cols = in], row-major, y = x W^T (docs/formats.md §2).
//  - kF32 / kBF16 / kF16: `data` is [rows, cols] of that type.
//  - kFp8Block: `data` is [rows, cols] fp8 e4m3; `scale_f32` is [ceil(rows/br), ceil(cols/bc)]
//    (weight_scale_inv); value = fp8 * scale[r/br][c/bc].
//  - kInt4Group: `data` is uint32 [rows, cols/8] (weight_packed); nibble j of a row sits in word
//    j/8 at bits 4*(j%8), offset binary (q = nibble - 8); `scale_bf16` is [rows, cols/group];
//    value = q * scale[r][c/group].
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sickle {

enum class WeightEncoding { kF32, kBF16, kF16, kFp8Block, kInt4Group };
const char* encoding_name(WeightEncoding e);

struct WeightView {
  std::string name;  // base name, e.g. "model.layers.3.mlp.experts.7.down_proj"
  WeightEncoding encoding = WeightEncoding::kBF16;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;
  const float* scale_f32 = nullptr;            // fp8
  const uint16_t* scale_bf16 = nullptr;        // int4
  int64_t block_rows = 128, block_cols = 128;  // fp8
  int64_t group_size = 0;                      // int4
  int64_t scale_cols = 0;                      // columns of the scale tensor

  // Bytes this weight occupies in the checkpoint (data + scales).
  uint64_t storage_bytes() const;
  // The scalar specification: dequantize row r into out[cols].
  void dequant_row(int64_t r, float* out) const;
};

// int4 packing helpers (the spec for tests and synth): q in [-8, 7].
uint32_t pack_int4_word(const int8_t q[8]);
void unpack_int4_word(uint32_t w, int8_t q[8]);

}  // namespace sickle
