// moe_experts / expert_mlp against their scalar specification, on int4 and bf16 experts,
// with crowded, empty and unused routing slots, pooled and inline.
#include "kernels/moe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/kernels_test_util.h"
#include "runtime/thread_pool.h"

namespace sickle {
namespace {

using namespace testing_util;

struct Experts {
  std::vector<OwnedWeight> owned;
  std::vector<ExpertMlp> mlps;
};

Experts make_experts(WeightEncoding enc, int64_t E, int64_t H, int64_t I, uint32_t seed) {
  Experts x;
  x.owned.reserve(size_t(3 * E));
  for (int64_t e = 0; e < E; ++e) {
    x.owned.push_back(make_weight(enc, I, H, 32, 0, seed + uint32_t(3 * e)));
    x.owned.push_back(make_weight(enc, I, H, 32, 4, seed + uint32_t(3 * e + 1)));
    x.owned.push_back(make_weight(enc, H, I, 32, 0, seed + uint32_t(3 * e + 2)));
  }
  for (int64_t e = 0; e < E; ++e)
    x.mlps.push_back(
        {x.owned[size_t(3 * e)].view, x.owned[size_t(3 * e + 1)].view, x.owned[size_t(3 * e + 2)].view});
  return x;
}

double max_token_rel_err(const std::vector<float>& y, const std::vector<float>& ref, int64_t T, int64_t H) {
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    double e = 0, r = 0;
    for (int64_t i = 0; i < H; ++i) {
      double d = double(y[size_t(t * H + i)]) - ref[size_t(t * H + i)];
      e += d * d;
      r += double(ref[size_t(t * H + i)]) * ref[size_t(t * H + i)];
    }
    const double err = std::sqrt(e / std::max(r, 1e-30));
    if (!(err <= worst)) worst = err;  // a NaN (an unwritten or poisoned output) fails the bound
  }
  return worst;
}

// moe_experts on table kt against the specification on the scalar table.
// bf16_acts: both sides round the activations of bf16 weights to bf16 (the spec with
// linear_bf16_acts_scalar); and the spec with f32 activations must then lie further away than
// the bound (the rounding happened).
void check_moe(const KernelTable& kt, WeightEncoding enc, double bound, bool bf16_acts = false) {
  // H: 3 blocks of 32 (a tail past 128); I: row chunks of 64 to 384 by thread count and active
  // experts (e.g. 2.25 of 128 for 6 experts on 3 threads, one of 384 inline), or (experts of 16+
  // tokens) 1.125 of 256, the tails included; H's rows: 1.5 chunks of 64 (the minimum).
  const int64_t E = 7, H = 96, I = 288;
  Experts ex = make_experts(enc, E, H, I, 1000);
  ThreadPool pool(3);
  MoeScratch scratch;  // reused across every case (grow-only)
  std::mt19937 rng(5);
  double worst = 0, f32_spec_gap = 0;
  for (int64_t T : {1, 2, 5, 17, 40}) {
    for (int64_t k : {1, 3, 4}) {
      Acts a = make_acts(T, H, 0, uint32_t(T * 10 + k), false);
      std::vector<int32_t> chosen(size_t(T * k));
      std::vector<float> w(size_t(T * k));
      for (int64_t i = 0; i < T * k; ++i) {
        // crowd expert 2, never use expert 5, leave some slots empty
        int r = int(rng() % 10);
        chosen[size_t(i)] = r < 4 ? 2 : r == 9 ? -1 : int32_t(rng() % 5 == 0 ? 6 : rng() % 5);
        w[size_t(i)] = 0.1f + float(rng() % 100) / 100.0f;
      }
      std::vector<float> base(size_t(T * H));
      for (auto& v : base) v = float(int(rng() % 7) - 3);
      std::vector<float> ref = base, eo_ref(size_t(T * k * H), -7.0f);
      moe_experts_scalar(kScalarKernels, ex.mlps, a.x, T, k, chosen.data(), w.data(), 2.5f, ref.data(),
                         eo_ref.data(), bf16_acts);
      if (bf16_acts) {
        std::vector<float> f32_ref = base;
        moe_experts_scalar(kScalarKernels, ex.mlps, a.x, T, k, chosen.data(), w.data(), 2.5f, f32_ref.data(),
                           nullptr);
        for (auto* v : {&f32_ref})
          for (size_t i = 0; i < v->size(); ++i) (*v)[i] -= base[i];
        std::vector<float> dref(ref.size());
        for (size_t i = 0; i < ref.size(); ++i) dref[i] = ref[i] - base[i];
        f32_spec_gap = std::max(f32_spec_gap, max_token_rel_err(f32_ref, dref, T, H));
      }
      std::vector<float> first;
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        std::vector<float> y = base, eo(size_t(T * k * H), -7.0f);
        moe_experts(kt, ex.mlps, a.x, T, k, chosen.data(), w.data(), 2.5f, y.data(), eo.data(), scratch, p,
                    bf16_acts);
        // Compare the routed part (y - base) with the spec's.
        std::vector<float> dy(y.size()), dref(y.size());
        for (size_t i = 0; i < y.size(); ++i) {
          dy[i] = y[i] - base[i];
          dref[i] = ref[i] - base[i];
        }
        double err = max_token_rel_err(dy, dref, T, H);
        worst = std::max(worst, err);
        ASSERT_LE(err, bound) << encoding_name(enc) << " T " << T << " k " << k << (p ? " pooled" : "");
        ASSERT_LE(max_token_rel_err(eo, eo_ref, T * k, H), bound) << "expert_out T " << T << " k " << k;
        for (int64_t i = 0; i < T * k; ++i)
          if (chosen[size_t(i)] < 0) {
            ASSERT_EQ(eo[size_t(i * H)], -7.0f) << "unused slot written";
          }
        if (first.empty()) first = y;
        else ASSERT_EQ(first, y) << "thread count changed the result";  // deterministic
      }
    }
  }
  std::printf("  moe %s%s on %s: worst per-token ||y - spec|| / ||spec|| %.3g (bound %.0e)\n",
              encoding_name(enc), bf16_acts ? " bf16 acts" : "", kt.name, worst, bound);
  if (bf16_acts) {
    std::printf("    the f32-activation spec lies %.3g away\n", f32_spec_gap);
    if (enc == WeightEncoding::kBF16) EXPECT_GT(f32_spec_gap, 3 * bound);
    else EXPECT_EQ(f32_spec_gap, 0.0);  // int4 weights never take the bf16 path
  }
}

// Every test runs on each table this CPU runs (Moe.Int4ExpertsMatchSpec/avx2 ...).
class Moe : public ::testing::TestWithParam<const KernelTable*> {};

// int4: two int8 activation roundings (x, then silu(g) * u) each within linear.h's bound.
TEST_P(Moe, Int4ExpertsMatchSpec) { check_moe(*GetParam(), WeightEncoding::kInt4Group, 4e-2); }
TEST_P(Moe, BF16ExpertsMatchSpec) { check_moe(*GetParam(), WeightEncoding::kBF16, 1e-5); }
// bf16 activations: the SiLU products are rounded to bf16 on both sides, and f32 summation noise
// can move one across a rounding boundary (that element then differs by up to 2^-8 of itself:
// measured worst 2.7e-4 per token here, against 5e-3 between the bf16 and f32 specs).
TEST_P(Moe, BF16ExpertsWithBf16ActsMatchSpec) { check_moe(*GetParam(), WeightEncoding::kBF16, 1e-3, true); }
TEST_P(Moe, Int4ExpertsWithBf16ActsAreUnchanged) {
  check_moe(*GetParam(), WeightEncoding::kInt4Group, 4e-2, true);
}

TEST_P(Moe, ExpertMlpIsOneBucket) {
  const int64_t H = 64, I = 96, n = 9;
  Experts ex = make_experts(WeightEncoding::kBF16, 1, H, I, 77);
  Acts a = make_acts(n, H, 1, 3, false);
  MoeScratch scratch;
  ThreadPool pool(2);
  std::vector<float> y(size_t(n * H), 123.0f), ref(size_t(n * H), 0.0f);
  std::vector<int32_t> zeros(size_t(n), 0);
  std::vector<float> ones(size_t(n), 1.0f);
  moe_experts_scalar(kScalarKernels, ex.mlps, a.x, n, 1, zeros.data(), ones.data(), 1.0f, ref.data(),
                     nullptr);
  expert_mlp(*GetParam(), ex.mlps[0], a.x, n, y.data(), scratch, &pool);  // overwrites y
  EXPECT_LE(max_token_rel_err(y, ref, n, H), 1e-5);
}

TEST_P(Moe, NoChosenExpertLeavesOutputUntouched) {
  Experts ex = make_experts(WeightEncoding::kInt4Group, 2, 32, 64, 9);
  std::vector<float> x(64, 1.0f), out(64, 5.0f), w(2, 1.0f);
  std::vector<int32_t> none(2, -1);
  MoeScratch scratch;
  moe_experts(*GetParam(), ex.mlps, x.data(), 2, 1, none.data(), w.data(), 1.0f, out.data(), nullptr, scratch,
              nullptr);
  for (float v : out) ASSERT_EQ(v, 5.0f);
}

// A step whose down products pass MoeScratch::max_y_bytes runs them and their combine in bands of
// output columns (here 512 + 512 + a 32-column tail): outputs and expert_out equal the one-band
// run's bit for bit, on int4 and bf16 experts, with and without bf16 activations, and y stays
// at one band's size.
TEST_P(Moe, DownProductBandsChangeNothing) {
  const KernelTable& kt = *GetParam();
  const int64_t E = 5, H = 1056, I = 64, T = 40, k = 3;
  ThreadPool pool(3);
  std::mt19937 rng(11);
  std::vector<int32_t> chosen(size_t(T * k));
  std::vector<float> w(size_t(T * k));
  for (int64_t i = 0; i < T * k; ++i) {
    chosen[size_t(i)] = i % 7 == 3 ? -1 : int32_t(rng() % E);
    w[size_t(i)] = 0.1f + float(rng() % 100) / 100.0f;
  }
  const Acts a = make_acts(T, H, 0, 77, false);
  for (WeightEncoding enc : {WeightEncoding::kInt4Group, WeightEncoding::kBF16})
    for (bool bf16_acts : {false, true}) {
      SCOPED_TRACE(std::string(encoding_name(enc)) + (bf16_acts ? " bf16 acts" : ""));
      Experts ex = make_experts(enc, E, H, I, 3000);
      std::vector<float> y_one(size_t(T * H), 0.5f), eo_one(size_t(T * k * H), -7.0f);
      MoeScratch one;
      moe_experts(kt, ex.mlps, a.x, T, k, chosen.data(), w.data(), 1.5f, y_one.data(), eo_one.data(), one,
                  &pool, bf16_acts);
      MoeScratch banded;
      banded.max_y_bytes = 1;  // the narrowest bands: 512 columns
      std::vector<float> y(size_t(T * H), 0.5f), eo(size_t(T * k * H), -7.0f);
      moe_experts(kt, ex.mlps, a.x, T, k, chosen.data(), w.data(), 1.5f, y.data(), eo.data(), banded, &pool,
                  bf16_acts);
      EXPECT_EQ(y, y_one);
      EXPECT_EQ(eo, eo_one);
      const int64_t N = T * k - (T * k + 3) / 7;  // used slots
      EXPECT_GE(one.y.capacity(), size_t(N * H) * sizeof(float));
      EXPECT_LE(banded.y.capacity(), size_t(N * 512 + H) * sizeof(float) + 4096);
    }
}

INSTANTIATE_TEST_SUITE_P(Tables, Moe, ::testing::ValuesIn(runnable_kernel_tables()), TableName());

// The overloads without a table run kernel_table()'s: the same numbers as passing it.
TEST(MoeDefaultTable, EqualsPassingKernelTable) {
  Experts ex = make_experts(WeightEncoding::kInt4Group, 3, 64, 96, 21);
  Acts a = make_acts(5, 64, 0, 8, false);
  const std::vector<int32_t> chosen = {0, 2, 1, 1, 2, 0, 0, 1, 2, 2};
  const std::vector<float> w(10, 0.5f);
  MoeScratch scratch;
  std::vector<float> y1(5 * 64, 0.0f), y2 = y1;
  moe_experts(ex.mlps, a.x, 5, 2, chosen.data(), w.data(), 1.0f, y1.data(), nullptr, scratch, nullptr);
  moe_experts(kernel_table(), ex.mlps, a.x, 5, 2, chosen.data(), w.data(), 1.0f, y2.data(), nullptr, scratch,
              nullptr);
  EXPECT_EQ(y1, y2);
  EXPECT_NE(y1, std::vector<float>(5 * 64, 0.0f));
}

}  // namespace
}  // namespace sickle
