// Every attention strategy (blocked prefill, batched decode with an f32 or a bf16 kv_b,
// dequantizing kv_b) on every kernel table against a naive per-token, per-head loop in double
// written here from the formulas of attention.h; and which strategy choose_strategy() picks.
#include "model/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/kernels_test_util.h"
#include "runtime/thread_pool.h"

namespace sickle {
namespace {

using testing_util::OwnedWeight;

constexpr MlaDims kDims{.n_heads = 3, .nope = 16, .rope = 8, .v = 12, .kv_lora = 48};

// A step of six items over their own caches: a prefill chunk crossing a 32-query block after 5
// cached tokens, a decode token, a 3-token chunk (too short to block) and a fresh prefill; 74
// tokens in all (past batched decode's window of 64).
struct Step {
  std::vector<std::vector<float>> caches;
  std::vector<AttentionItem> items;
  std::vector<float> q;  // [T, n_heads * qk]
  int64_t n_tokens = 0;
};

Step make_step(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Step s;
  // ... plus decode tokens over long caches (1300 and 700 cached: batched decode by chunks of
  // 256 positions, the last one partial).
  const int64_t shapes[][2] = {{5, 37}, {9, 1}, {20, 3}, {0, 30}, {1300, 1}, {700, 2}};  // {past, n}
  for (const auto& sh : shapes) {
    std::vector<float> cache(size_t((sh[0] + sh[1]) * kDims.row()));
    for (float& v : cache) v = nd(rng);
    s.caches.push_back(std::move(cache));
  }
  for (size_t i = 0; i < s.caches.size(); ++i) {
    s.items.push_back({s.caches[i].data(), shapes[i][0], shapes[i][1], s.n_tokens});
    s.n_tokens += shapes[i][1];
  }
  s.q.resize(size_t(s.n_tokens * kDims.n_heads * kDims.qk()));
  for (float& v : s.q) v = nd(rng);
  return s;
}

// out [T, n_heads * v] from the formulas, in double, one token and head at a time.
std::vector<double> naive_attention(const Step& s, const std::vector<float>& kvb, double scale) {
  const MlaDims& d = kDims;
  std::vector<double> out(size_t(s.n_tokens * d.n_heads * d.v));
  for (const AttentionItem& it : s.items)
    for (int64_t j = 0; j < it.n; ++j) {
      const int64_t t = it.t0 + j, ctx = it.past + j + 1;
      for (int64_t h = 0; h < d.n_heads; ++h) {
        const float* qh = s.q.data() + (t * d.n_heads + h) * d.qk();
        const float* w_uk = kvb.data() + h * (d.nope + d.v) * d.kv_lora;  // [nope, kv_lora]
        const float* w_uv = w_uk + d.nope * d.kv_lora;                    // [v, kv_lora]
        std::vector<double> q_abs(size_t(d.kv_lora), 0.0), p(static_cast<size_t>(ctx)),
            o(size_t(d.kv_lora), 0.0);
        for (int64_t n = 0; n < d.nope; ++n)
          for (int64_t c = 0; c < d.kv_lora; ++c) q_abs[size_t(c)] += double(qh[n]) * w_uk[n * d.kv_lora + c];
        double top = -1e300;
        for (int64_t u = 0; u < ctx; ++u) {
          const float* row = it.cache + u * d.row();
          double sc = 0;
          for (int64_t c = 0; c < d.kv_lora; ++c) sc += q_abs[size_t(c)] * row[c];
          for (int64_t r = 0; r < d.rope; ++r) sc += double(qh[d.nope + r]) * row[d.kv_lora + r];
          p[size_t(u)] = sc * scale;
          top = std::max(top, p[size_t(u)]);
        }
        double sum = 0;
        for (double& v : p) sum += (v = std::exp(v - top));
        for (int64_t u = 0; u < ctx; ++u)
          for (int64_t c = 0; c < d.kv_lora; ++c)
            o[size_t(c)] += p[size_t(u)] / sum * it.cache[u * d.row() + c];
        for (int64_t v = 0; v < d.v; ++v) {
          double acc = 0;
          for (int64_t c = 0; c < d.kv_lora; ++c) acc += double(w_uv[v * d.kv_lora + c]) * o[size_t(c)];
          out[size_t((t * d.n_heads + h) * d.v + v)] = acc;
        }
      }
    }
  return out;
}

// max |got - want| / max |want| (NaN-safe: an unwritten NaN output fails).
double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double dmax = 0, wmax = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(double(got[i]) - want[i]);
    if (!(e <= dmax)) dmax = e;
    wmax = std::max(wmax, std::fabs(want[i]));
  }
  return dmax / std::max(wmax, 1e-30);
}

class AttentionTables : public ::testing::TestWithParam<const KernelTable*> {
 protected:
  void SetUp() override {
    // kv_b stored as bf16 [n_heads * (nope + v), kv_lora]; its exact f32 widening is the copy.
    kvb_ = testing_util::make_weight(WeightEncoding::kBF16, kDims.n_heads * (kDims.nope + kDims.v),
                                     kDims.kv_lora, 1, 0, 77);
    const WeightView& w = kvb_.view;
    kvb32_.resize(size_t(w.rows * w.cols));
    for (int64_t r = 0; r < w.rows; ++r) w.dequant_row(r, kvb32_.data() + r * w.cols);
    step_ = make_step(5);
    want_ = naive_attention(step_, kvb32_, kScale);
  }
  std::vector<float> run(const KvbForms& forms, const AttentionStrategy* force) {
    ThreadPool pool(3);
    Attention attn(kDims, pool.size());
    std::vector<float> out(size_t(step_.n_tokens * kDims.n_heads * kDims.v), NAN);
    attn.run(*GetParam(), pool, forms, step_.items, step_.q.data(), out.data(), kScale, force);
    return out;
  }
  static constexpr float kScale = 2.5f;
  OwnedWeight kvb_;
  std::vector<float> kvb32_;
  Step step_;
  std::vector<double> want_;
};

// Every strategy on every item, against the naive loop: f32 summation order only.
TEST_P(AttentionTables, EveryStrategyMatchesNaiveLoop) {
  const KvbForms f32{&kvb_.view, kvb32_.data(), nullptr};
  const KvbForms bf16{&kvb_.view, nullptr, static_cast<const uint16_t*>(kvb_.view.data)};
  const KvbForms stored{&kvb_.view, nullptr, nullptr};
  struct Case {
    AttentionStrategy s;
    KvbForms forms;
    const char* what;
  };
  const Case cases[] = {{AttentionStrategy::kBlockedPrefill, f32, "f32 kv_b"},
                        {AttentionStrategy::kBatchedDecode, f32, "f32 kv_b"},
                        {AttentionStrategy::kBatchedDecode, bf16, "bf16 kv_b"},
                        {AttentionStrategy::kDequantizingKvb, stored, "stored kv_b"}};
  for (const Case& c : cases) {
    const double err = rel_error(run(c.forms, &c.s), want_);
    EXPECT_LE(err, 2e-6) << strategy_name(c.s) << " with " << c.what << " on " << GetParam()->name;
    std::printf("  %s (%s) on %s: max|out - naive| / max|naive| = %.3g\n", strategy_name(c.s), c.what,
                GetParam()->name, err);
  }
}

// Without a forced strategy: blocked prefill for the long items, batched decode (f32, bf16)
// or dequantizing kv_b for the others, as choose_strategy() says; all match the naive loop.
TEST_P(AttentionTables, ChosenStrategiesMatchNaiveLoop) {
  const KvbForms forms[] = {{&kvb_.view, kvb32_.data(), nullptr},
                            {&kvb_.view, kvb32_.data(), static_cast<const uint16_t*>(kvb_.view.data)},
                            {&kvb_.view, nullptr, static_cast<const uint16_t*>(kvb_.view.data)},
                            {&kvb_.view, nullptr, nullptr}};
  for (const KvbForms& f : forms)
    EXPECT_LE(rel_error(run(f, nullptr), want_), 2e-6)
        << "f32 " << (f.f32 != nullptr) << " bf16 " << (f.bf16 != nullptr);
}

// One cached position (695 of the 700-position item, in the last chunk's partial tail of 16)
// dominates its chunk for the item's first token, head 0: every other position's softmax weight
// in that chunk underflows to 0. Batched decode combines chunks through each chunk's maximum
// score and softmax denominator (what the table's softmax returns): a maximum or denominator
// taken from a position whose weight underflowed turns the output into inf / NaN; the right ones
// match the naive loop.
TEST_P(AttentionTables, BatchedDecodeWithOneDominantPositionMatchesNaiveLoop) {
  const AttentionItem& it = step_.items[5];
  ASSERT_EQ(it.past, 700);
  const MlaDims& d = kDims;
  float* row = step_.caches[5].data() + 695 * d.row();
  const float* qh = step_.q.data() + it.t0 * d.n_heads * d.qk();  // token it.t0, head 0
  double score = 0;
  for (int64_t c = 0; c < d.kv_lora; ++c) {
    double q_abs = 0;
    for (int64_t n = 0; n < d.nope; ++n) q_abs += double(qh[n]) * kvb32_[size_t(n * d.kv_lora + c)];
    score += q_abs * row[c];
  }
  for (int64_t r = 0; r < d.rope; ++r) score += double(qh[d.nope + r]) * row[d.kv_lora + r];
  ASSERT_GT(std::fabs(score), 0.05);  // scaled by 1000 below: a margin of >= 125 after kScale
  const float f = score > 0 ? 1000.0f : -1000.0f;
  for (int64_t c = 0; c < d.row(); ++c) row[c] *= f;
  want_ = naive_attention(step_, kvb32_, kScale);
  const AttentionStrategy s = AttentionStrategy::kBatchedDecode;
  EXPECT_LE(rel_error(run({&kvb_.view, kvb32_.data(), nullptr}, &s), want_), 2e-6);
  EXPECT_LE(rel_error(run({&kvb_.view, nullptr, static_cast<const uint16_t*>(kvb_.view.data)}, &s), want_),
            2e-6);
}

INSTANTIATE_TEST_SUITE_P(Tables, AttentionTables, ::testing::ValuesIn(runnable_kernel_tables()),
                         testing_util::TableName());

TEST(Attention, ChooseStrategyFollowsKvbFormsAndSizes) {
  const WeightView w;
  const float f = 0;
  const uint16_t b = 0;
  const KvbForms f32{&w, &f, nullptr}, both{&w, &f, &b}, bf16{&w, nullptr, &b}, stored{&w, nullptr, nullptr};
  EXPECT_EQ(choose_strategy(f32, 0, 4), AttentionStrategy::kBlockedPrefill);
  EXPECT_EQ(choose_strategy(both, 100, 500), AttentionStrategy::kBlockedPrefill);
  EXPECT_EQ(choose_strategy(f32, 100, 3), AttentionStrategy::kBatchedDecode);  // too few queries to block
  EXPECT_EQ(choose_strategy(f32, 0, 1), AttentionStrategy::kBatchedDecode);
  EXPECT_EQ(choose_strategy(bf16, 0, 500), AttentionStrategy::kBatchedDecode);  // blocking needs the f32 copy
  // Past 4 Mi floats of scores per 32-query block (contexts over 128 Ki tokens): per token.
  EXPECT_EQ(choose_strategy(f32, (int64_t(4) << 20) / 32 - 64, 64), AttentionStrategy::kBlockedPrefill);
  EXPECT_EQ(choose_strategy(f32, (int64_t(4) << 20) / 32 - 63, 64), AttentionStrategy::kBatchedDecode);
  EXPECT_EQ(choose_strategy(stored, 0, 500), AttentionStrategy::kDequantizingKvb);
  EXPECT_EQ(choose_strategy(stored, 10, 1), AttentionStrategy::kDequantizingKvb);
}

}  // namespace
}  // namespace sickle
