#include "io/weights.h"

#include "base/error.h"
#include "base/numeric.h"

namespace sickle {

const char* encoding_name(WeightEncoding e) {
  switch (e) {
    case WeightEncoding::kF32: return "f32";
    case WeightEncoding::kBF16: return "bf16";
    case WeightEncoding::kF16: return "f16";
    case WeightEncoding::kFp8Block: return "fp8-e4m3";
    case WeightEncoding::kInt4Group: return "int4";
  }
  return "?";
}

uint64_t WeightView::storage_bytes() const {
  uint64_t n = uint64_t(rows) * uint64_t(cols);
  switch (encoding) {
    case WeightEncoding::kF32: return n * 4;
    case WeightEncoding::kBF16:
    case WeightEncoding::kF16: return n * 2;
    case WeightEncoding::kFp8Block:
      return n + uint64_t((rows + block_rows - 1) / block_rows) *
                     uint64_t((cols + block_cols - 1) / block_cols) * 4;
    case WeightEncoding::kInt4Group: return n / 2 + uint64_t(rows) * uint64_t(scale_cols) * 2 + 8;
  }
  return 0;
}

uint32_t pack_int4_word(const int8_t q[8]) {
  uint32_t w = 0;
  for (int j = 0; j < 8; ++j) w |= uint32_t((q[j] + 8) & 0xf) << (4 * j);
  return w;
}

void unpack_int4_word(uint32_t w, int8_t q[8]) {
  for (int j = 0; j < 8; ++j) q[j] = int8_t(int((w >> (4 * j)) & 0xf) - 8);
}

void WeightView::dequant_row(int64_t r, float* out) const {
  SICKLE_CHECK(r >= 0 && r < rows);
  switch (encoding) {
    case WeightEncoding::kF32: {
      auto p = static_cast<const float*>(data) + r * cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = p[c];
      break;
    }
    case WeightEncoding::kBF16: {
      auto p = static_cast<const uint16_t*>(data) + r * cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = bf16_to_f32(p[c]);
      break;
    }
    case WeightEncoding::kF16: {
      auto p = static_cast<const uint16_t*>(data) + r * cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = f16_to_f32(p[c]);
      break;
    }
    case WeightEncoding::kFp8Block: {
      auto p = static_cast<const uint8_t*>(data) + r * cols;
      const float* srow = scale_f32 + (r / block_rows) * scale_cols;
      for (int64_t c = 0; c < cols; ++c) out[c] = fp8_e4m3_to_f32(p[c]) * srow[c / block_cols];
      break;
    }
    case WeightEncoding::kInt4Group: {
      auto p = static_cast<const uint32_t*>(data) + r * (cols / 8);
      const uint16_t* srow = scale_bf16 + r * scale_cols;
      for (int64_t c = 0; c < cols; ++c) {
        int q = int((p[c / 8] >> (4 * (c % 8))) & 0xf) - 8;
        out[c] = float(q) * bf16_to_f32(srow[c / group_size]);
      }
      break;
    }
  }
}

}  // namespace sickle
