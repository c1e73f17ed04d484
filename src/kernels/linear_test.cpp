// Every kernel table against the scalar specification (linear_scalar), over sweeps of sizes,
// tails, token counts and misaligned pointers, with fixed seeds. Bounds are those stated in
// kernels/linear.h.
#include "kernels/linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "base/numeric.h"
#include "kernels/dispatch.h"
#include "kernels/kernels_test_util.h"
#include "runtime/scratch.h"
#include "runtime/thread_pool.h"

namespace sickle {
namespace {

using namespace testing_util;

// Per element of y: sum_c |w_rc x_c| (the scale of rounding errors in a dot product) and
// sum_c |w_rc| d_b(c) / 2 (the largest possible effect of rounding x to int8 with block step d).
struct ErrorScales {
  std::vector<double> abs_product, int8_rounding;
};
ErrorScales error_scales(const WeightView& w, const float* x, int64_t n) {
  ErrorScales e;
  e.abs_product.assign(size_t(n * w.rows), 0.0);
  e.int8_rounding.assign(size_t(n * w.rows), 0.0);
  std::vector<float> row(size_t(w.cols));
  std::vector<double> half_step(size_t(w.cols));
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * w.cols;
    for (int64_t b = 0; b < w.cols / 32; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xt[b * 32 + j]));
      for (int j = 0; j < 32; ++j) half_step[size_t(b * 32 + j)] = 0.5 * amax / 127.0;
    }
    for (int64_t r = 0; r < w.rows; ++r) {
      w.dequant_row(r, row.data());
      double a = 0, q = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        a += std::fabs(double(row[size_t(c)]) * xt[c]);
        if (w.cols % 32 == 0) q += std::fabs(double(row[size_t(c)])) * half_step[size_t(c)];
      }
      e.abs_product[size_t(t * w.rows + r)] = a;
      e.int8_rounding[size_t(t * w.rows + r)] = q;
    }
  }
  return e;
}

// max over tokens of ||y_t - ref_t|| / ||scale_t|| (scale: the reference itself or an error scale).
double max_rel_err(const float* y, const float* ref, const double* scale, int64_t n, int64_t rows) {
  double worst = 0;
  for (int64_t t = 0; t < n; ++t) {
    double e = 0, r = 0;
    for (int64_t i = 0; i < rows; ++i) {
      double d = double(y[t * rows + i]) - double(ref[t * rows + i]);
      double s = scale ? scale[t * rows + i] : double(ref[t * rows + i]);
      e += d * d;
      r += s * s;
    }
    // A NaN (an output never written: the tests fill y with NaN) must fail the bound, not be
    // dropped by std::max.
    const double err = std::sqrt(e) / std::max(std::sqrt(r), 1e-30);
    if (!(err <= worst)) worst = err;
  }
  return worst;
}

struct Case {
  int64_t rows, cols, n;
};

// Sizes: rows 1..300 incl. odd counts, cols multiples of the group with tails of 1-3 blocks of
// 32 past a multiple of 128 (and, for group 1, columns that are no multiple of 8 or 16), n = 1..17
// (dense: up to 40).
std::vector<Case> sweep_cases(int64_t group) {
  const int64_t rows_list[] = {1, 2, 3, 5, 7, 16, 33, 127, 300};
  const int64_t col_mults[] = {1, 2, 3, 4, 5, 7, 8, 13};
  std::vector<Case> cases;
  int i = 0;
  for (int64_t n = 1; n <= 17; ++n)
    for (int k = 0; k < 3; ++k, ++i) {
      int64_t rows = rows_list[(i * 5 + k) % 9];
      int64_t cols = group * col_mults[(i * 3 + n) % 8];
      if (group == 1) cols = cols * 37 + k;  // 37..483: every tail length
      cases.push_back({rows, cols, n});
    }
  // int4 rows wider than the AVX-512 kernel's prefill column block (1024 values), so a row is
  // summed over 2-5 blocks, the last one partial (and with a tail of 1-3 blocks of 32).
  // Dense rows a few thousand wide (Kimi's are 7168), with a tail.
  // Prefill-sized n and width (the outer-product tiles from 32 tokens and 2049 columns): several
  // token tiles and a partial one, rows past a panel (2 x 16 on AVX-512) with a tail, a partial
  // last 128-column panel; and the sizes on either side of the switch.
  if (group == 1)
    for (Case c : {Case{9, 2 * 1024 + 37, 5}, Case{17, 3 * 1024 + 3, 9}, Case{4, 1024 + 16, 17},
                   Case{77, 2100, 40}, Case{33, 2 * 1024 + 37, 32}, Case{130, 2049, 33}, Case{5, 2049, 31},
                   Case{40, 2048, 32}})
      cases.push_back(c);
  if (group >= 32) {
    // And prefill-sized n (AVX-512's outer-product tiles from 16 tokens, panels of 32 blocks):
    // 2-3 panels, the last with a partial group of blocks, rows past 32 with a tail.
    const Case wide[] = {{33, 37 * 32, 5},  {7, 39 * 32, 8},   {33, 47 * 32, 13},
                         {5, 150 * 32, 6},  {37, 70 * 32, 20}, {5, 39 * 32, 16}};
    for (Case c : wide) {
      c.cols = (c.cols + group - 1) / group * group;
      cases.push_back(c);
    }
  }
  return cases;
}

// The tests of LinearTables and QuantizedActsTables run once per table this CPU runs
// (LinearTables.BF16MatchesSpec/avx2 ...).
class LinearTables : public ::testing::TestWithParam<const KernelTable*> {};
class QuantizedActsTables : public ::testing::TestWithParam<const KernelTable*> {};

// Dense encodings: ||y - spec|| <= 1e-5 ||sum_c |w x|||, i.e. only summation order differs.
// int4: every element within the int8 rounding bound (+ f32 slack), and for Gaussian inputs with
// >= 16 rows ||y - spec|| <= 2e-2 ||spec||; with outlier-heavy inputs the error is printed.
void check_encoding(const KernelTable* k, WeightEncoding enc, int64_t group, uint32_t seed,
                    bool outliers = true) {
  const bool is_int4 = enc == WeightEncoding::kInt4Group;
  ThreadPool pool(3);
  double worst = 0, worst_rel = 0;
  int ci = 0;
  for (const Case& c : sweep_cases(group)) {
    int mis_w = is_int4 ? 4 * (ci % 3)
                        : (enc == WeightEncoding::kF32 ? 4 : 2) * (ci % 3) +
                              (enc == WeightEncoding::kFp8Block ? 1 : 0);
    int mis_x = ci % 4;
    OwnedWeight w = make_weight(enc, c.rows, c.cols, group, mis_w, seed + ci);
    Acts a = make_acts(c.n, c.cols, mis_x, seed * 7 + ci, outliers);
    ErrorScales es = error_scales(w.view, a.x, c.n);
    std::vector<float> ref(size_t(c.n * c.rows)), ybuf(size_t(c.n * c.rows) + 4);
    float* y = ybuf.data() + (ci + 1) % 4;  // misaligned output too
    linear_scalar(w.view, a.x, c.n, ref.data(), nullptr);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::fill(ybuf.begin(), ybuf.end(), NAN);
      linear_with(*k, w.view, a.x, c.n, y, p);
      std::string what = std::string(encoding_name(enc)) + " table " + k->name + " rows " +
                         std::to_string(c.rows) + " cols " + std::to_string(c.cols) + " n " +
                         std::to_string(c.n) + (p ? " pooled" : "");
      if (!is_int4) {
        double err = max_rel_err(y, ref.data(), es.abs_product.data(), c.n, c.rows);
        worst = std::max(worst, err);
        ASSERT_LE(err, 1e-5) << what;
        continue;
      }
      for (int64_t i = 0; i < c.n * c.rows; ++i) {
        double bound = es.int8_rounding[size_t(i)] * 1.001 + 1e-5 * es.abs_product[size_t(i)];
        ASSERT_LE(std::fabs(double(y[i]) - ref[size_t(i)]), bound) << what << " element " << i;
      }
      double rel = max_rel_err(y, ref.data(), nullptr, c.n, c.rows);
      if (c.rows >= 16) worst_rel = std::max(worst_rel, rel);
      if (!outliers && c.rows >= 16) {
        ASSERT_LE(rel, 2e-2) << what;
      }
    }
    ++ci;
  }
  if (is_int4)
    std::printf("  int4 group %lld%s on %s: worst ||y - spec|| / ||spec|| (rows >= 16) %.3g\n",
                (long long)group, outliers ? " (outlier inputs)" : "", k->name, worst_rel);
  else
    std::printf("  %s on %s: worst ||y - spec|| / || |W||x| || %.3g (bound 1e-5)\n", encoding_name(enc),
                k->name, worst);
}

TEST_P(LinearTables, F32MatchesSpec) { check_encoding(GetParam(), WeightEncoding::kF32, 1, 11); }
TEST_P(LinearTables, BF16MatchesSpec) { check_encoding(GetParam(), WeightEncoding::kBF16, 1, 12); }
TEST_P(LinearTables, F16MatchesSpec) { check_encoding(GetParam(), WeightEncoding::kF16, 1, 13); }
TEST_P(LinearTables, Fp8BlockMatchesSpec) { check_encoding(GetParam(), WeightEncoding::kFp8Block, 1, 14); }
TEST_P(LinearTables, Int4Group32WithinQuantizationBound) {
  check_encoding(GetParam(), WeightEncoding::kInt4Group, 32, 15, false);
  check_encoding(GetParam(), WeightEncoding::kInt4Group, 32, 25, true);
}
TEST_P(LinearTables, Int4Group128WithinQuantizationBound) {
  check_encoding(GetParam(), WeightEncoding::kInt4Group, 128, 16, false);
}
TEST_P(LinearTables, Int4Group64WithinQuantizationBound) {
  check_encoding(GetParam(), WeightEncoding::kInt4Group, 64, 17, true);
}

// The SIMD int4 kernels do the same integer arithmetic as the scalar twin; only the order of
// the f32 sums differs, so they agree far more tightly than with the f32 spec.
TEST_P(LinearTables, Int4SimdMatchesScalarTwin) {
  const KernelTable* k = GetParam();
  int ci = 0;
  for (const Case& c : sweep_cases(32)) {
    OwnedWeight w = make_weight(WeightEncoding::kInt4Group, c.rows, c.cols, 32, 4 * (ci % 2), 100 + ci);
    Acts a = make_acts(c.n, c.cols, ci % 3, 200 + ci);
    ErrorScales es = error_scales(w.view, a.x, c.n);
    std::vector<float> twin(size_t(c.n * c.rows)), y(size_t(c.n * c.rows));
    linear_with(kScalarKernels, w.view, a.x, c.n, twin.data(), nullptr);
    linear_with(*k, w.view, a.x, c.n, y.data(), nullptr);
    ASSERT_LE(max_rel_err(y.data(), twin.data(), es.abs_product.data(), c.n, c.rows), 1e-5)
        << k->name << " rows " << c.rows << " cols " << c.cols << " n " << c.n;
    ++ci;
  }
}

// Exact values: W = identity-like int4 rows and x with one 32-block per row scale pattern.
// An int4 group-32 view over caller-owned packed words [rows, cols/8] and bf16 scales [rows, cols/32].
WeightView int4_g32_view(const std::vector<uint32_t>& packed, const std::vector<uint16_t>& scales,
                         int64_t rows, int64_t cols) {
  WeightView w;
  w.encoding = WeightEncoding::kInt4Group;
  w.rows = rows;
  w.cols = cols;
  w.data = packed.data();
  w.group_size = 32;
  w.scale_cols = cols / 32;
  w.scale_bf16 = scales.data();
  return w;
}

TEST_P(LinearTables, Int4KnownValues) {
  const KernelTable* k = GetParam();
  // rows 2, cols 64, group 32: row 0 all q = 1 with scales (0.5, 2); row 1 q = j%16 - 8.
  const int64_t rows = 2, cols = 64;
  std::vector<uint32_t> packed(size_t(rows * cols / 8));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t wd = 0; wd < cols / 8; ++wd) {
      int8_t q[8];
      for (int j = 0; j < 8; ++j) q[j] = r == 0 ? 1 : int8_t((wd * 8 + j) % 16 - 8);
      packed[size_t(r * cols / 8 + wd)] = pack_int4_word(q);
    }
  std::vector<uint16_t> scales = {f32_to_bf16(0.5f), f32_to_bf16(2.0f), f32_to_bf16(1.0f), f32_to_bf16(1.0f)};
  WeightView w = int4_g32_view(packed, scales, rows, cols);
  // x = 1 everywhere: quantization is exact (q = 127, d = 1/127).
  std::vector<float> x(size_t(cols), 1.0f), y(2);
  linear_with(*k, w, x.data(), 1, y.data(), nullptr);
  EXPECT_NEAR(y[0], 32 * 0.5 + 32 * 2.0, 1e-4) << k->name;
  // row 1: each 16-run of q = -8..7 sums to -8; 4 runs -> -32
  EXPECT_NEAR(y[1], -32.0, 1e-4) << k->name;
}

// A non-finite activation (e.g. from a NaN weight upstream) must come out as NaN in every row
// it touches — never an integer overflow inside the int8 quantization (caught by UBSan).
TEST_P(LinearTables, Int4NonFiniteActivationGivesNaN) {
  const KernelTable* k = GetParam();
  const int64_t rows = 3, cols = 64;
  std::vector<uint32_t> packed(size_t(rows * cols / 8), 0x99999999u);  // q = 1 everywhere
  std::vector<uint16_t> scales(size_t(rows * 2), f32_to_bf16(1.0f));
  WeightView w = int4_g32_view(packed, scales, rows, cols);
  for (float bad : {NAN, INFINITY}) {
    std::vector<float> x(size_t(cols), 1.0f);
    std::vector<float> y(static_cast<size_t>(rows));
    x[40] = bad;
    linear_with(*k, w, x.data(), 1, y.data(), nullptr);
    for (int64_t r = 0; r < rows; ++r) EXPECT_TRUE(std::isnan(y[size_t(r)])) << k->name << " row " << r;
  }
}

// Every fp8 byte decodes as the spec does (incl. subnormals, +-0, the NaNs 0x7f / 0xff):
// a 256-column identity-like probe: row r has byte r at column r and 0 elsewhere, x = 1.
TEST_P(LinearTables, Fp8EveryByteDecodesAsSpec) {
  const KernelTable* k = GetParam();
  const int64_t rows = 256, cols = 256;
  std::vector<uint8_t> data(size_t(rows * cols), 0);
  for (int64_t r = 0; r < rows; ++r) data[size_t(r * cols + r)] = uint8_t(r);
  std::vector<float> scale = {0.5f, 2.0f, 4.0f, 8.0f};  // [2, 2] blocks of 128
  WeightView w;
  w.encoding = WeightEncoding::kFp8Block;
  w.rows = rows;
  w.cols = cols;
  w.data = data.data();
  w.scale_f32 = scale.data();
  w.scale_cols = 2;
  std::vector<float> x(static_cast<size_t>(cols), 1.0f), y(static_cast<size_t>(rows)),
      ref(static_cast<size_t>(rows));
  linear_scalar(w, x.data(), 1, ref.data(), nullptr);
  linear_with(*k, w, x.data(), 1, y.data(), nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    if (std::isnan(ref[size_t(r)])) {
      EXPECT_TRUE(std::isnan(y[size_t(r)])) << k->name << " byte " << r;
    } else {
      EXPECT_EQ(y[size_t(r)], ref[size_t(r)]) << k->name << " byte " << r;
    }
  }
}

TEST_P(QuantizedActsTables, RoundTripWithinHalfStep) {
  const KernelTable* k = GetParam();
  const int64_t n = 3, cols = 160;  // 5 blocks: padded to 8
  Acts a = make_acts(n, cols, 1, 5);
  ScratchBuffer buf;
  QuantizedActs qa;
  quantize_acts(*k, a.x, cols, n, cols, buf, qa, nullptr);
  ASSERT_EQ(qa.n_blocks_padded, 8);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      float d = qa.d[t * qa.dm_stride() + 4 * (c / 32)];
      float back = float(qa.q[t * qa.q_stride() + qact_index(c)]) * d;
      ASSERT_LE(std::fabs(back - a.x[t * cols + c]), 0.5f * d + 1e-6f) << "t " << t << " c " << c;
    }
    for (int64_t c = cols; c < qa.n_blocks_padded * 32; ++c)
      ASSERT_EQ(qa.q[t * qa.q_stride() + qact_index(c)], 0);
  }
}

// The AMX table's tile kernels (int4 from 8 tokens, bf16 from 4): full and partial 16-row
// stripes and 16-token tiles, block counts with and without a 4-block tail, group 32 and 128,
// with and without the pool (thread ranges are whole stripes). int4 against the scalar twin
// (same integer block sums), bf16 against the spec (hi + mid + lo activation split: the same
// products, only the summation order differs).
TEST(Linear, AmxTilesMatchSpec) {
  const KernelTable* amx = amx_table();
  if (!amx) GTEST_SKIP() << "no AMX on this CPU";
  // These weights are all small (they would stay on FMAs below dense_packed_min_n_small tokens):
  // the bf16 checks take the tiles from the table's general threshold, so n = 4 runs on them.
  KernelTable amx_bf16 = *amx;
  amx_bf16.dense_packed_min_n_small = amx_bf16.dense_packed_min_n;
  ThreadPool pool(3);
  const int64_t rows_list[] = {16, 17, 48, 80, 100, 64};
  const int64_t cols_list[] = {32, 96, 160, 128, 2048, 224};
  const int64_t n_list[] = {4, 8, 9, 15, 16, 17, 33, 40};
  int ci = 0;
  for (int64_t n : n_list)
    for (int j = 0; j < 3; ++j, ++ci) {
      const int64_t rows = rows_list[(ci * 5 + j) % 6], cols = cols_list[(ci + 2 * j) % 6];
      for (int64_t group : {int64_t(32), int64_t(128)}) {
        if (cols % group) continue;
        OwnedWeight w = make_weight(WeightEncoding::kInt4Group, rows, cols, group, 4 * (ci % 3), 300 + ci);
        Acts a = make_acts(n, cols, ci % 4, 400 + ci);
        ErrorScales es = error_scales(w.view, a.x, n);
        std::vector<float> twin(size_t(n * rows)), y(size_t(n * rows));
        linear_with(kScalarKernels, w.view, a.x, n, twin.data(), nullptr);
        for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
          std::fill(y.begin(), y.end(), NAN);
          linear_with(*amx, w.view, a.x, n, y.data(), p);
          ASSERT_LE(max_rel_err(y.data(), twin.data(), es.abs_product.data(), n, rows), 1e-5)
              << "int4 group " << group << " rows " << rows << " cols " << cols << " n " << n
              << (p ? " pooled" : "");
        }
      }
      OwnedWeight w = make_weight(WeightEncoding::kBF16, rows, cols, 1, 2 * (ci % 3), 500 + ci);
      Acts a = make_acts(n, cols, ci % 4, 600 + ci);
      ErrorScales es = error_scales(w.view, a.x, n);
      std::vector<float> ref(size_t(n * rows)), y(size_t(n * rows));
      linear_scalar(w.view, a.x, n, ref.data(), nullptr);
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        std::fill(y.begin(), y.end(), NAN);
        linear_with(amx_bf16, w.view, a.x, n, y.data(), p);
        ASSERT_LE(max_rel_err(y.data(), ref.data(), es.abs_product.data(), n, rows), 1e-5)
            << "bf16 rows " << rows << " cols " << cols << " n " << n << (p ? " pooled" : "");
      }
    }
}

// Which bf16 weights take the packed tile kernel: from dense_packed_min_n tokens, small weights
// (up to dense_small_bytes, cache-resident) only from dense_packed_min_n_small; never for
// columns that are not a multiple of 32, nor on tables without the kernel.
TEST(Linear, PackedBf16ThresholdsBySize) {
  const KernelTable* amx = amx_table();
  if (!amx) GTEST_SKIP() << "no AMX on this CPU";
  ASSERT_GT(amx->dense_packed_min_n_small, amx->dense_packed_min_n);
  WeightView small, big, odd;
  small.encoding = big.encoding = odd.encoding = WeightEncoding::kBF16;
  small.rows = 64, small.cols = 192;
  big.cols = 2048, big.rows = amx->dense_small_bytes / (2 * big.cols) + 1;
  odd.rows = 4096, odd.cols = 2000;
  ASSERT_LE(small.rows * small.cols * 2, amx->dense_small_bytes);
  ASSERT_GT(big.rows * big.cols * 2, amx->dense_small_bytes);
  EXPECT_FALSE(uses_packed_bf16(*amx, big, amx->dense_packed_min_n - 1));
  EXPECT_TRUE(uses_packed_bf16(*amx, big, amx->dense_packed_min_n));
  EXPECT_FALSE(uses_packed_bf16(*amx, small, amx->dense_packed_min_n_small - 1));
  EXPECT_TRUE(uses_packed_bf16(*amx, small, amx->dense_packed_min_n_small));
  EXPECT_FALSE(uses_packed_bf16(*amx, odd, 64));
  EXPECT_FALSE(uses_packed_bf16(kAvx512Kernels, big, 64));
}

// linear_strided on rows spaced wider than the weight (as decode attention's per-head slices):
// the same values as linear() on the rows packed tight, and the gaps between rows untouched, at
// decode-sized and AMX-sized token counts.
TEST(Linear, StridedRowsEqualPackedRows) {
  int ci = 0;
  for (WeightEncoding enc : {WeightEncoding::kF32, WeightEncoding::kBF16, WeightEncoding::kF16})
    for (int64_t n : {1, 3, 8, 17}) {
      const int64_t rows = 48, cols = 96, ldx = cols + 40, ldy = rows + 24;
      OwnedWeight w = make_weight(enc, rows, cols, 1, 0, 700 + ci);
      Acts a = make_acts(n, cols, 0, 800 + ci++);
      std::vector<float> xs(size_t(n * ldx), 7.0f), ys(size_t(n * ldy), 42.0f), y(size_t(n * rows));
      for (int64_t t = 0; t < n; ++t) std::copy(a.x + t * cols, a.x + (t + 1) * cols, xs.begin() + t * ldx);
      linear(w.view, a.x, n, y.data(), nullptr);
      linear_strided(w.view, xs.data(), ldx, n, ys.data(), ldy);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < ldy; ++r) {
          if (r >= rows) {
            ASSERT_EQ(ys[size_t(t * ldy + r)], 42.0f) << "gap written, token " << t;
            continue;
          }
          ASSERT_EQ(ys[size_t(t * ldy + r)], y[size_t(t * rows + r)])
              << "n " << n << " token " << t << " row " << r;
        }
    }
}

// The AMX packer: every (pair, token) holds three bf16 parts that sum exactly to the f32
// value (hi = x rounded to nearest bf16), pairs in column order; the padding columns past n
// are zero. Token counts below, at and across 16-token groups, with and without the pool.
TEST(Linear, AmxPackedActivationsAreExactSplits) {
  const KernelTable* amx = amx_table();
  if (!amx) GTEST_SKIP() << "no AMX on this CPU";
  ThreadPool pool(2);
  const int64_t cols = 96, ldx = cols + 8;
  for (int64_t n : {1, 8, 15, 16, 17, 40})
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      Acts a = make_acts(n, cols, 0, uint32_t(900 + n));
      std::vector<float> x(size_t(n * ldx), 0.0f);
      for (int64_t t = 0; t < n; ++t) std::copy(a.x + t * cols, a.x + (t + 1) * cols, x.begin() + t * ldx);
      ScratchBuffer buf;
      PackedBf16 pa;
      pack_bf16(*amx, x.data(), ldx, n, cols, buf, pa, p);
      ASSERT_EQ(pa.n_pad % 16, 0);
      ASSERT_GE(pa.n_pad, n + 15);
      for (int64_t j = 0; j < cols / 2; ++j)
        for (int64_t t = 0; t < pa.n_pad; ++t)
          for (int half = 0; half < 2; ++half) {
            float sum = 0;
            for (int q = 0; q < 3; ++q) {
              const uint32_t v = pa.part[q][j * pa.n_pad + t];
              const float part = bf16_to_f32(uint16_t(half ? v >> 16 : v));
              if (q == 0 && t < n) {
                ASSERT_EQ(part, bf16_to_f32(f32_to_bf16(x[size_t(t * ldx + 2 * j + half)])));
              }
              sum += part;
            }
            const float want = t < n ? x[size_t(t * ldx + 2 * j + half)] : 0.0f;
            ASSERT_EQ(sum, want) << "n " << n << " pair " << j << " token " << t << (p ? " pooled" : "");
          }
    }
}

// A NaN or Inf activation poisons exactly its own token's outputs in the tile kernels too.
TEST_P(LinearTables, AmxNonFiniteActivationStaysInItsToken) {
  const KernelTable* k = GetParam();
  const int64_t rows = 32, cols = 128, n = 20;
  for (WeightEncoding enc : {WeightEncoding::kInt4Group, WeightEncoding::kBF16}) {
    OwnedWeight w = make_weight(enc, rows, cols, enc == WeightEncoding::kBF16 ? 1 : 32, 0, 7);
    for (float bad : {NAN, INFINITY}) {
      Acts a = make_acts(n, cols, 0, 8);
      a.x[7 * cols + 50] = bad;
      std::vector<float> y(size_t(n * rows));
      linear_with(*k, w.view, a.x, n, y.data(), nullptr);
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          const float v = y[size_t(t * rows + r)];
          if (t != 7) ASSERT_TRUE(std::isfinite(v)) << k->name << " token " << t << " row " << r;
          else if (enc == WeightEncoding::kInt4Group || std::isnan(bad))
            ASSERT_TRUE(std::isnan(v)) << k->name << " row " << r;
          else ASSERT_FALSE(std::isfinite(v)) << k->name << " row " << r;  // +-inf (or NaN)
        }
    }
  }
}

// Every table quantizes exactly as the generic code (the int4 kernels' integer sums then agree
// with the scalar twin bit for bit): ties (x * id = k + 0.5), an all-zero block, NaN and Inf
// blocks, a 1-3 block tail past a multiple of 4.
TEST_P(QuantizedActsTables, EqualsGeneric) {
  const KernelTable* k = GetParam();
  for (int64_t cols : {int64_t(32), int64_t(96), int64_t(160), int64_t(2048)}) {
    const int64_t n = 5;
    Acts a = make_acts(n, cols, 0, 9 + uint32_t(cols));
    for (int64_t c = 0; c < 32; ++c) a.x[c] = float(c - 16) * 0.5f;  // amax 8: id = 127/8, ties
    for (int64_t c = 0; c < 32; ++c) a.x[cols + c] = 0.0f;           // token 1 block 0 all zero
    a.x[2 * cols + 3] = NAN;
    a.x[3 * cols + cols - 1] = -INFINITY;
    ScratchBuffer gbuf;
    QuantizedActs g;
    quantize_acts(kScalarKernels, a.x, cols, n, cols, gbuf, g, nullptr);
    ScratchBuffer buf;
    QuantizedActs qa;
    quantize_acts(*k, a.x, cols, n, cols, buf, qa, nullptr);
    ASSERT_EQ(std::memcmp(qa.q, g.q, size_t(n * g.q_stride())), 0) << k->name << " cols " << cols;
    for (int64_t i = 0; i < n * g.dm_stride(); ++i) {
      if (std::isnan(g.d[i])) {
        ASSERT_TRUE(std::isnan(qa.d[i]) && std::isnan(qa.m[i]))
            << k->name << " cols " << cols << " entry " << i;
        continue;
      }
      ASSERT_EQ(qa.d[i], g.d[i]) << k->name << " cols " << cols << " entry " << i;
      ASSERT_EQ(qa.m[i], g.m[i]) << k->name << " cols " << cols << " entry " << i;
    }
  }
}

// bf16 activations (linear_bf16_acts): every table against the spec, linear_scalar on the rounded x,
// within the f32 kernels' bound (VDPBF16PS's products are exact, only the order differs), and
// measurably away from f32 activations (so the rounding happened). Widths that are multiples of 32
// (the AVX512_BF16 kernel: dot-product tiles below 32 tokens, outer-product panels of 32 rows x
// 512 columns from 32, with partial panels and token tiles of 14) and widths that are not (the
// rounded values through linear_dense).
TEST_P(LinearTables, BF16ActsMatchSpecOnRoundedActivations) {
  const KernelTable* k = GetParam();
  ThreadPool pool(3);
  std::vector<Case> cases = sweep_cases(32);
  for (Case c : sweep_cases(1))
    if (c.n <= 8 || c.cols > 1000) cases.push_back(c);
  for (Case c : {Case{77, 2080, 40}, Case{33, 1056, 32}, Case{130, 544, 33}, Case{31, 256, 45},
                 Case{64, 7168, 3}, Case{5, 288, 70}})
    cases.push_back(c);
  double worst = 0, worst_vs_f32 = 0;
  int ci = 0;
  for (const Case& c : cases) {
    OwnedWeight w = make_weight(WeightEncoding::kBF16, c.rows, c.cols, 1, 2 * (ci % 3), 900 + ci);
    Acts a = make_acts(c.n, c.cols, ci % 4, 77 * ci + 5);
    std::vector<float> xr(a.x, a.x + c.n * c.cols);
    for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
    ErrorScales es = error_scales(w.view, xr.data(), c.n);
    std::vector<float> ref(size_t(c.n * c.rows)), spec_f32(size_t(c.n * c.rows)), y(size_t(c.n * c.rows));
    linear_bf16_acts_scalar(w.view, a.x, c.n, ref.data(), nullptr);
    linear_scalar(w.view, a.x, c.n, spec_f32.data(), nullptr);
    worst_vs_f32 =
        std::max(worst_vs_f32, max_rel_err(ref.data(), spec_f32.data(), es.abs_product.data(), c.n, c.rows));
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::fill(y.begin(), y.end(), NAN);
      linear_bf16_acts(*k, w.view, a.x, c.n, y.data(), p);
      const double err = max_rel_err(y.data(), ref.data(), es.abs_product.data(), c.n, c.rows);
      worst = std::max(worst, err);
      ASSERT_LE(err, 1e-5) << k->name << " rows " << c.rows << " cols " << c.cols << " n " << c.n
                           << (p ? " pooled" : "");
    }
    ++ci;
  }
  // Rounding 8 mantissa bits off each x moves a dot product by ~2^-9 of its scale, 100x the bound.
  EXPECT_GE(worst_vs_f32, 1e-3);
  std::printf(
      "  bf16 acts on %s: worst ||y - spec|| / || |W||x| || %.3g (bound 1e-5); spec vs f32 acts %.3g\n",
      k->name, worst, worst_vs_f32);
}

// Round to nearest even at the ties, by hand: x = 1 + 2^-8 lies halfway between 1 and 1 + 2^-7
// and rounds to 1; x = 1 + 3 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6 and rounds up to the
// even 1 + 2^-6. A row of ones (and a row of 2s) then sums the rounded values exactly.
TEST_P(LinearTables, BF16ActsRoundTiesToEven) {
  const KernelTable* k = GetParam();
  const int64_t rows = 2, cols = 64, n = 2;
  std::vector<uint16_t> wd(size_t(rows * cols));
  for (int64_t c = 0; c < cols; ++c) {
    wd[size_t(c)] = f32_to_bf16(1.0f);
    wd[size_t(cols + c)] = f32_to_bf16(2.0f);
  }
  WeightView w;
  w.name = "ties";
  w.encoding = WeightEncoding::kBF16;
  w.rows = rows;
  w.cols = cols;
  w.data = wd.data();
  std::vector<float> x(size_t(n * cols), 0.0f), y(size_t(n * rows), NAN);
  x[0] = 1.0f + 0x1p-8f;            // token 0: -> 1
  x[33] = 1.0f + 3 * 0x1p-8f;       // token 0: -> 1 + 2^-6
  x[cols + 5] = -(1.0f + 0x1p-8f);  // token 1: -> -1
  x[cols + 62] = 0x1p-9f * 3;       // token 1: exactly representable (3 2^-9)
  linear_bf16_acts(*k, w, x.data(), n, y.data(), nullptr);
  EXPECT_EQ(y[0], 2.0f + 0x1p-6f) << k->name;
  EXPECT_EQ(y[1], 2 * (2.0f + 0x1p-6f)) << k->name;
  EXPECT_EQ(y[2], -1.0f + 3 * 0x1p-9f) << k->name;
  EXPECT_EQ(y[3], 2 * (-1.0f + 3 * 0x1p-9f)) << k->name;
  // f32 activations keep the ties' low bits.
  linear_with(*k, w, x.data(), n, y.data(), nullptr);
  EXPECT_EQ(y[0], 2.0f + 4 * 0x1p-8f) << k->name;
}

TEST(Linear, EmptyInputsDoNothing) {
  OwnedWeight w = make_weight(WeightEncoding::kBF16, 4, 32, 1, 0, 1);
  float y[4] = {7, 7, 7, 7};
  linear(w.view, nullptr, 0, y, nullptr);
  EXPECT_EQ(y[0], 7.0f);
}

INSTANTIATE_TEST_SUITE_P(Tables, LinearTables, ::testing::ValuesIn(runnable_kernel_tables()), TableName());
INSTANTIATE_TEST_SUITE_P(Tables, QuantizedActsTables, ::testing::ValuesIn(runnable_kernel_tables()),
                         TableName());

}  // namespace
}  // namespace sickle
