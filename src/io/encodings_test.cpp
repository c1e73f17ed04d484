// Weight encodings against hand-computed values: int4 packing (docs/formats.md §3 vectors),
// fp8 e4m3fn decode/encode, bf16/f16 conversions, and WeightView::dequant_row per encoding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "base/numeric.h"
#include "io/weights.h"

namespace sickle {
namespace {

TEST(Int4, PackingVectorsFromModelFormat) {
  const int8_t up[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  const int8_t neg[8] = {-8, -7, -6, -5, -4, -3, -2, -1};
  const int8_t zero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(pack_int4_word(up), 0xFEDCBA98u);
  EXPECT_EQ(pack_int4_word(neg), 0x76543210u);
  EXPECT_EQ(pack_int4_word(zero), 0x88888888u);
  int8_t q[8];
  unpack_int4_word(0xFEDCBA98u, q);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(q[j], j);
  // Every nibble value in every position round-trips.
  for (int pos = 0; pos < 8; ++pos)
    for (int v = -8; v <= 7; ++v) {
      int8_t in[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      in[pos] = int8_t(v);
      unpack_int4_word(pack_int4_word(in), q);
      EXPECT_EQ(q[pos], v);
    }
}

TEST(Fp8, DecodeHandComputedValues) {
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);  // exp 7 = bias, mantissa 0
  EXPECT_EQ(fp8_e4m3_to_f32(0x3c), 1.5f);  // mantissa 4/8
  EXPECT_EQ(fp8_e4m3_to_f32(0x40), 2.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);                // 2^8 x 1.75: the largest finite
  EXPECT_EQ(fp8_e4m3_to_f32(0x77), 240.0f);                // 2^7 x 1.875
  EXPECT_EQ(fp8_e4m3_to_f32(0x08), 0.015625f);             // 2^-6, smallest normal
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_to_f32(0xb8), -1.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8_e4m3_to_f32(0x80)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0xff)));
  EXPECT_FALSE(std::isinf(fp8_e4m3_to_f32(0x78)));  // e4m3fn has no infinity: 0x78 = 256
  EXPECT_EQ(fp8_e4m3_to_f32(0x78), 256.0f);
}

// Reference encoder: exhaustive nearest code, ties to the even code.
uint8_t fp8_reference(float f) {
  if (std::isnan(f)) return 0x7f;
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  uint8_t best = 0;
  float best_err = INFINITY;
  for (uint8_t c = 0; c < 0x7f; ++c) {
    float err = std::fabs(fp8_e4m3_to_f32(c) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best_err = err;
      best = c;
    }
  }
  return sign | best;
}

TEST(Fp8, EncodeMatchesExhaustiveReference) {
  // Every code round-trips; every midpoint between neighbours rounds to the even one.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    float v = fp8_e4m3_to_f32(uint8_t(c));
    EXPECT_EQ(f32_to_fp8_e4m3(v), c == 0x80 ? 0x80 : c) << c;
    if ((c & 0x7f) < 0x7e) {
      float next = fp8_e4m3_to_f32(uint8_t(c + 1));
      float mid = (v + next) / 2;
      EXPECT_EQ(f32_to_fp8_e4m3(mid), fp8_reference(mid)) << "midpoint after code " << c;
    }
  }
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> mag(-12.f, 9.5f);
  for (int i = 0; i < 200000; ++i) {
    float f = std::exp2(mag(rng)) * (rng() & 1 ? 1.f : -1.f);
    ASSERT_EQ(f32_to_fp8_e4m3(f), fp8_reference(f)) << f;
  }
  EXPECT_EQ(f32_to_fp8_e4m3(1000.f), 0x7e);  // saturates
  EXPECT_EQ(f32_to_fp8_e4m3(-1000.f), 0xfe);
  EXPECT_EQ(f32_to_fp8_e4m3(INFINITY), 0x7e);
  EXPECT_EQ(f32_to_fp8_e4m3(NAN), 0x7f);
}

TEST(Bf16, ConversionEdgeCases) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  // 1 + 2^-8 is halfway between 0x3f80 and 0x3f81: ties to even (0x3f80).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // 1 + 3 x 2^-8 is halfway between 0x3f81 and 0x3f82: ties to even (0x3f82).
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);  // above half
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  // Largest finite f32 rounds up to infinity in bf16 (as torch).
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  // A signalling-ish NaN whose top bits are zero must stay NaN (not become inf).
  float snan;
  uint32_t u = 0x7f800001u;
  std::memcpy(&snan, &u, 4);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(snan))));
  // Every bf16 value round-trips.
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), h) << h;
  }
}

TEST(F16, ConversionEdgeCases) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);  // below the halfway point to 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);         // below half the smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);         // 1.5 x 2^-24: ties to even -> 2
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // halfway: to even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << h;
  }
}

TEST(WeightView, DequantRowEachEncoding) {
  std::vector<float> out(16);
  {  // f32 [2, 3]
    const float d[6] = {1, 2, 3, 4, 5, 6};
    WeightView w{"w", WeightEncoding::kF32, 2, 3, d};
    w.dequant_row(1, out.data());
    EXPECT_EQ(out[0], 4);
    EXPECT_EQ(out[2], 6);
    EXPECT_EQ(w.storage_bytes(), 24u);
  }
  {  // bf16 [1, 3]: 1, -2, 0.5
    const uint16_t d[3] = {0x3f80, 0xc000, 0x3f00};
    WeightView w{"w", WeightEncoding::kBF16, 1, 3, d};
    w.dequant_row(0, out.data());
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], -2.0f);
    EXPECT_EQ(out[2], 0.5f);
  }
  {  // f16 [1, 2]: 1, -0.5
    const uint16_t d[2] = {0x3c00, 0xb800};
    WeightView w{"w", WeightEncoding::kF16, 1, 2, d};
    w.dequant_row(0, out.data());
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], -0.5f);
  }
  {  // fp8 [3, 4] with 2x2 blocks: scales [2, 2] = {1, 2; 4, 8}
    uint8_t d[12];
    for (int i = 0; i < 12; ++i) d[i] = 0x38;  // 1.0
    d[4 * 2 + 3] = 0xc0;                       // row 2, col 3: -2.0
    const float s[4] = {1, 2, 4, 8};
    WeightView w;
    w.encoding = WeightEncoding::kFp8Block;
    w.rows = 3;
    w.cols = 4;
    w.data = d;
    w.scale_f32 = s;
    w.block_rows = 2;
    w.block_cols = 2;
    w.scale_cols = 2;
    w.dequant_row(0, out.data());
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[3], 2.0f);
    w.dequant_row(2, out.data());
    EXPECT_EQ(out[1], 4.0f);
    EXPECT_EQ(out[3], -16.0f);  // -2 x 8
    EXPECT_EQ(w.storage_bytes(), 12u + 4 * 4);
  }
  {  // int4 [2, 16], group 8: row 0 words = [0..7], [-8..-1]; row 1 all zero; scales bf16
    const uint32_t packed[4] = {0xFEDCBA98u, 0x76543210u, 0x88888888u, 0x88888888u};
    const uint16_t scale[4] = {0x3f00 /*0.5*/, 0x4000 /*2*/, 0x3f80, 0x3f80};
    WeightView w;
    w.encoding = WeightEncoding::kInt4Group;
    w.rows = 2;
    w.cols = 16;
    w.data = packed;
    w.scale_bf16 = scale;
    w.group_size = 8;
    w.scale_cols = 2;
    w.dequant_row(0, out.data());
    for (int j = 0; j < 8; ++j) EXPECT_EQ(out[size_t(j)], 0.5f * float(j)) << j;
    for (int j = 0; j < 8; ++j) EXPECT_EQ(out[size_t(8 + j)], 2.0f * float(j - 8)) << j;
    w.dequant_row(1, out.data());
    for (int j = 0; j < 16; ++j) EXPECT_EQ(out[size_t(j)], 0.0f);
    // 16 weights / 2 + 4 bf16 scales + 8 bytes of weight_shape.
    EXPECT_EQ(w.storage_bytes(), 16u + 8 + 8);
  }
}

}  // namespace
}  // namespace sickle
