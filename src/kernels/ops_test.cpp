#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/numeric.h"
#include "kernels/dispatch.h"
#include "kernels/kernels_test_util.h"

namespace sickle {
namespace {

std::vector<float> randv(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(Ops, RmsNormMatchesDoubleReference) {
  for (int64_t n : {1, 7, 64, 7168}) {
    auto x = randv(n, 1, 3.0f), w = randv(n, 2);
    std::vector<uint16_t> wb(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) wb[size_t(i)] = f32_to_bf16(w[size_t(i)]);
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    double inv = 1.0 / std::sqrt(ss / double(n) + 1e-6);
    std::vector<float> out(static_cast<size_t>(n)), outb(static_cast<size_t>(n));
    rmsnorm(x.data(), w.data(), 1e-6f, n, out.data());
    rmsnorm(x.data(), wb.data(), 1e-6f, n, outb.data());
    for (int64_t i = 0; i < n; ++i) {
      double ref = double(x[size_t(i)]) * inv * w[size_t(i)];
      double refb = double(x[size_t(i)]) * inv * bf16_to_f32(wb[size_t(i)]);
      ASSERT_NEAR(out[size_t(i)], ref, 1e-5 * (1 + std::fabs(ref)));
      ASSERT_NEAR(outb[size_t(i)], refb, 1e-5 * (1 + std::fabs(refb)));
    }
    // in place
    std::vector<float> y = x;
    rmsnorm(y.data(), w.data(), 1e-6f, n, y.data());
    EXPECT_EQ(y, out);
  }
}

TEST(Ops, SoftmaxSumsToOneAndIsShiftInvariant) {
  auto x = randv(1000, 3, 10.0f);
  auto y = x;
  for (auto& v : y) v += 500.0f;  // would overflow exp without the max subtraction
  softmax(x.data(), 1000);
  softmax(y.data(), 1000);
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    s += x[i];
    ASSERT_NEAR(x[i], y[i], 1e-6);
    ASSERT_GE(x[i], 0.0f);
  }
  EXPECT_NEAR(s, 1.0, 1e-5);
  float two[2] = {0.0f, std::log(3.0f)};
  softmax(two, 2);
  EXPECT_NEAR(two[0], 0.25f, 1e-6);
  EXPECT_NEAR(two[1], 0.75f, 1e-6);
}

// The tests below run once per table this CPU runs (OpsTables.GemvAllShapes/avx2 ...).
class OpsTables : public ::testing::TestWithParam<const KernelTable*> {};

// Every table's softmax against a double reference, every tail length, large offsets.
TEST_P(OpsTables, SoftmaxMatchesDouble) {
  const KernelTable* kt = GetParam();
  for (int64_t n = 1; n <= 70; n += (n < 34 ? 1 : 9)) {
    auto x = randv(n, 50 + uint32_t(n), 8.0f);
    for (auto& v : x) v += 300.0f;
    double m = -1e300, sum = 0;
    for (float v : x) m = std::max(m, double(v));
    for (float v : x) sum += std::exp(double(v) - m);
    auto y = x;
    const SoftmaxStats st = kt->softmax(y.data(), n);
    EXPECT_EQ(double(st.max), m) << kt->name << " n " << n;  // exactly the largest input
    EXPECT_NEAR(st.sum, sum, 2e-6 * sum) << kt->name << " n " << n;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(double(x[size_t(i)]) - m) / sum;
      ASSERT_NEAR(y[size_t(i)], want, 2e-6 * want + 1e-9) << kt->name << " n " << n << " i " << i;
    }
  }
}

TEST(Ops, SiluMulDotAxpyScale) {
  float g[3] = {0.0f, 1.0f, -2.0f}, u[3] = {5.0f, 2.0f, 3.0f}, o[3];
  silu_mul(g, u, 3, o);
  EXPECT_FLOAT_EQ(o[0], 0.0f);
  EXPECT_NEAR(o[1], 1.0 / (1.0 + std::exp(-1.0)) * 2.0, 1e-6);
  EXPECT_NEAR(o[2], -2.0 / (1.0 + std::exp(2.0)) * 3.0, 1e-6);
  auto a = randv(333, 4), b = randv(333, 5);
  double ref = 0;
  for (size_t i = 0; i < a.size(); ++i) ref += double(a[i]) * b[i];
  EXPECT_NEAR(dot(a.data(), b.data(), 333), ref, 1e-4);
  auto c = b;
  axpy(0.5f, a.data(), c.data(), 333);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_FLOAT_EQ(c[i], b[i] + 0.5f * a[i]);
  scale(c.data(), 2.0f, 333);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_FLOAT_EQ(c[i], 2.0f * (b[i] + 0.5f * a[i]));
}

// silu_mul of every table against double precision over the whole useful range (incl. the
// clamped ends: exp(-g) overflowing for g < -88 must give -0, not NaN), lengths with tails.
TEST_P(OpsTables, SiluMulMatchesDouble) {
  std::vector<float> g, u;
  for (float v = -120.0f; v <= 120.0f; v += 0.37f) g.push_back(v);
  for (float v = -4.0f; v <= 4.0f; v += 0.001f) g.push_back(v);
  std::mt19937 rng(3);
  for (size_t i = 0; i < g.size(); ++i) u.push_back(0.5f + float(rng() % 1000) / 1000.0f);
  const KernelTable* k = GetParam();
  for (int64_t n : {int64_t(g.size()), int64_t(g.size()) - 5, int64_t(13), int64_t(1)}) {
    std::vector<float> out(g.size(), 99.0f);
    k->silu_mul(g.data(), u.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      double gd = g[size_t(i)];
      double ref = gd / (1.0 + std::exp(-gd)) * u[size_t(i)];
      ASSERT_FALSE(std::isnan(out[size_t(i)])) << k->name << " g " << gd;
      ASSERT_NEAR(out[size_t(i)], ref, 2e-6 * std::fabs(ref) + 1e-30) << k->name << " g " << gd;
    }
    if (n < int64_t(g.size())) {
      ASSERT_EQ(out[size_t(n)], 99.0f) << "wrote past n";
    }
  }
}

// Every table's dot/axpy against a double reference over lengths 0..300 and misaligned pointers.
TEST_P(OpsTables, DotAxpyAllLengths) {
  auto a = randv(310, 8), b = randv(310, 9);
  const KernelTable* k = GetParam();
  for (int64_t n = 0; n <= 300; n += (n < 40 ? 1 : 37))
    for (int off = 0; off < 3; ++off) {
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        ref += double(a[size_t(i + off)]) * b[size_t(i + 2 * off)];
        mag += std::fabs(double(a[size_t(i + off)]) * b[size_t(i + 2 * off)]);
      }
      ASSERT_NEAR(k->dot(a.data() + off, b.data() + 2 * off, n), ref, 1e-6 * (mag + 1))
          << k->name << " n " << n;
      std::vector<float> y(b.begin(), b.end());
      k->axpy(-0.75f, a.data() + off, y.data() + 2 * off, n);
      for (int64_t i = 0; i < 310; ++i) {
        bool in = i >= 2 * off && i < 2 * off + n;
        float want = in ? std::fma(-0.75f, a[size_t(i - 2 * off + off)], b[size_t(i)]) : b[size_t(i)];
        ASSERT_NEAR(y[size_t(i)], want, 1e-6f * (1 + std::fabs(want))) << k->name << " n " << n << " i " << i;
      }
    }
}

// C = A B for every table against a double reference: row tails (m % 4), column tails (any
// n % 16, and past 64), k = 0 (C zeroed), leading dimensions wider than the operands, and C's
// padding columns left untouched.
TEST_P(OpsTables, GemmNnAllShapes) {
  const int64_t ms[] = {1, 2, 3, 4, 5, 9};
  const int64_t ns[] = {1, 7, 16, 17, 33, 64, 65, 100};
  const int64_t ks[] = {0, 1, 5, 64, 80};
  int seed = 0;
  const KernelTable* kt = GetParam();
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks) {
        const int64_t lda = k + 3, ldb = n + 5, ldc = n + 2;
        auto a = randv(size_t(m * lda + 1), 100 + seed),
             b = randv(size_t(std::max<int64_t>(k, 1) * ldb), 200 + seed);
        ++seed;
        // The bf16 twin: B rounded to bf16, the same sums over its widened values.
        std::vector<uint16_t> b16(b.size());
        for (size_t i = 0; i < b.size(); ++i) b16[i] = f32_to_bf16(b[i]);
        std::vector<float> c(size_t(m * ldc), 42.0f), c16(size_t(m * ldc), 42.0f);
        kt->gemm_nn(a.data(), lda, b.data(), ldb, c.data(), ldc, m, n, k);
        kt->gemm_nn_bf16(a.data(), lda, b16.data(), ldb, c16.data(), ldc, m, n, k);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            const float got = c[size_t(i * ldc + j)], got16 = c16[size_t(i * ldc + j)];
            if (j >= n) {
              ASSERT_EQ(got, 42.0f) << kt->name << " padding touched";
              ASSERT_EQ(got16, 42.0f) << kt->name << " bf16: padding touched";
              continue;
            }
            double ref = 0, ref16 = 0, mag = 0;
            for (int64_t p = 0; p < k; ++p) {
              ref += double(a[size_t(i * lda + p)]) * b[size_t(p * ldb + j)];
              ref16 += double(a[size_t(i * lda + p)]) * bf16_to_f32(b16[size_t(p * ldb + j)]);
              mag += std::fabs(double(a[size_t(i * lda + p)]) * b[size_t(p * ldb + j)]);
            }
            ASSERT_NEAR(got, ref, 1e-6 * (mag + 1)) << kt->name << " m " << m << " n " << n << " k " << k;
            ASSERT_NEAR(got16, ref16, 1e-6 * (mag + 1))
                << kt->name << " bf16 m " << m << " n " << n << " k " << k;
          }
      }
}

// C = A B^T for every table against double sums: row blocks of 4 and their tails on both
// sides, k with and without a 16 tail, leading dimensions wider than k, C padding untouched.
TEST_P(OpsTables, GemmNtAllShapes) {
  int seed = 0;
  const KernelTable* kt = GetParam();
  for (int64_t m : {1, 3, 4, 7, 8, 16, 21})
    for (int64_t n : {1, 2, 5, 9, 33})
      for (int64_t k : {1, 16, 20, 80}) {
        const int64_t lda = k + 1, ldb = k + 5, ldc = n + 3;
        auto a = randv(m * lda, 500 + seed), b = randv(n * ldb, 600 + seed);
        ++seed;
        std::vector<float> c(size_t(m * ldc), 42.0f);
        kt->gemm_nt(a.data(), lda, b.data(), ldb, c.data(), ldc, m, n, k);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            if (j >= n) {
              ASSERT_EQ(c[size_t(i * ldc + j)], 42.0f) << kt->name << " padding touched";
              continue;
            }
            double ref = 0, mag = 0;
            for (int64_t p = 0; p < k; ++p) {
              ref += double(a[size_t(i * lda + p)]) * b[size_t(j * ldb + p)];
              mag += std::fabs(double(a[size_t(i * lda + p)]) * b[size_t(j * ldb + p)]);
            }
            ASSERT_NEAR(c[size_t(i * ldc + j)], ref, 1e-6 * (mag + 1))
                << kt->name << " m " << m << " n " << n << " k " << k;
          }
      }
}

// Shapes big enough for the AMX table's tile path (kernels_amx.cpp f32_tiles_pay: blocked
// prefill attention), with row, column and k tails, against double sums: C = A B and C = A B^T,
// strided operands, C's padding columns untouched. The tiles' six part products must stay
// within the f32 kernels' bound.
TEST_P(OpsTables, GemmLargeShapes) {
  struct Shape {
    int64_t m, n, k;
  };
  int seed = 0;
  const KernelTable* kt = GetParam();
  // {37 | 9, 700, 200}: B passes L2-sized chunks (~256 KiB: 3 for nn, 3 for nt on AVX-512), with
  // (37) and without (9 rows of A) the outer-product tiles.
  for (Shape sh : {Shape{130, 150, 300}, Shape{257, 97, 576}, Shape{37, 700, 200}, Shape{9, 700, 200}})
    for (bool nt : {false, true}) {
      const int64_t m = sh.m, n = sh.n, k = sh.k, lda = k + 3, ldb = (nt ? k : n) + 5, ldc = n + 2;
      auto a = randv(size_t(m * lda), 700 + seed), b = randv(size_t((nt ? n : k) * ldb), 800 + seed);
      ++seed;
      std::vector<float> c(size_t(m * ldc), 42.0f);
      (nt ? kt->gemm_nt : kt->gemm_nn)(a.data(), lda, b.data(), ldb, c.data(), ldc, m, n, k);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
          const float got = c[size_t(i * ldc + j)];
          if (j >= n) {
            ASSERT_EQ(got, 42.0f) << kt->name << " padding touched";
            continue;
          }
          double ref = 0, mag = 0;
          for (int64_t p = 0; p < k; ++p) {
            const double bv = nt ? b[size_t(j * ldb + p)] : b[size_t(p * ldb + j)];
            ref += double(a[size_t(i * lda + p)]) * bv;
            mag += std::fabs(double(a[size_t(i * lda + p)]) * bv);
          }
          ASSERT_NEAR(got, ref, 1e-6 * (mag + 1)) << kt->name << (nt ? " nt" : " nn") << " m " << m << " n "
                                                  << n << " k " << k << " at " << i << "," << j;
        }
    }
}

// y = A x and y = x^T A for every table against double sums: row counts 1..9 (the 4-row
// passes and their tail), widths with and without a 16 tail and past 64, lda > k.
TEST_P(OpsTables, GemvAllShapes) {
  int seed = 0;
  const KernelTable* kt = GetParam();
  for (int64_t m : {1, 2, 3, 4, 5, 9, 67})
    for (int64_t k : {1, 15, 16, 17, 64, 80, 130}) {
      const int64_t lda = k + 3;
      auto a = randv(m * lda, 300 + seed), x = randv(std::max(m, k), 400 + seed);
      ++seed;
      std::vector<float> yn(size_t(m) + 1, 42.0f), yt(size_t(k) + 1, 42.0f);
      kt->gemv_n(a.data(), lda, m, k, x.data(), yn.data());
      kt->gemv_t(a.data(), lda, m, k, x.data(), yt.data());
      ASSERT_EQ(yn[size_t(m)], 42.0f) << kt->name;
      ASSERT_EQ(yt[size_t(k)], 42.0f) << kt->name;
      // Output o against its double sum over j of a_of(o, j) x[j].
      auto check = [&](const char* what, const std::vector<float>& y, int64_t n_out, int64_t len, auto a_of) {
        for (int64_t o = 0; o < n_out; ++o) {
          double ref = 0, mag = 0;
          for (int64_t j = 0; j < len; ++j) {
            const double p = double(a_of(o, j)) * x[size_t(j)];
            ref += p;
            mag += std::fabs(p);
          }
          ASSERT_NEAR(y[size_t(o)], ref, 1e-6 * (mag + 1))
              << kt->name << " " << what << " m " << m << " k " << k;
        }
      };
      check("gemv_n", yn, m, k, [&](int64_t i, int64_t j) { return a[size_t(i * lda + j)]; });
      check("gemv_t", yt, k, m, [&](int64_t j, int64_t i) { return a[size_t(i * lda + j)]; });
    }
}

INSTANTIATE_TEST_SUITE_P(Tables, OpsTables, ::testing::ValuesIn(runnable_kernel_tables()),
                         testing_util::TableName());

}  // namespace
}  // namespace sickle
