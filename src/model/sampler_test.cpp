// Sampler properties: greedy is argmax, top_k = 1 is greedy, a seed fixes the draws, filters
// never return a filtered token, and frequencies follow softmax(logits / T). LogitsAdjuster
// against hand-computed rows (vLLM's order: min_tokens, logit_bias, repetition, frequency, presence).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "base/error.h"
#include "model/sampler.h"

namespace sickle {
namespace {

std::vector<float> random_logits(int64_t n, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t x = seed * 2654435761u + 1;
  for (auto& f : v) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    f = float(x % 20000) / 2000.0f - 5.0f;
  }
  return v;
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s;
  for (uint32_t seed = 1; seed < 20; ++seed) {
    auto l = random_logits(1000, seed);
    int32_t best = 0;
    for (int32_t i = 1; i < 1000; ++i)
      if (l[i] > l[best]) best = i;
    EXPECT_EQ(s.sample(l.data(), 1000), best);
  }
  std::vector<float> tie = {1, 3, 3, 2};
  EXPECT_EQ(s.sample(tie.data(), 4), 1);
  EXPECT_EQ(argmax(tie.data(), 4), 1);
}

TEST(Sampler, TopKOneIsGreedyAtAnyTemperature) {
  SamplingParams p;
  p.temperature = 1.5f;
  p.top_k = 1;
  p.seed = 3;
  Sampler s(p);
  for (uint32_t seed = 1; seed < 20; ++seed) {
    auto l = random_logits(500, seed);
    EXPECT_EQ(s.sample(l.data(), 500), argmax(l.data(), 500));
  }
}

TEST(Sampler, SeedDeterminesTheDraws) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.seed = 42;
  Sampler a(p), b(p);
  p.seed = 43;
  Sampler c(p);
  auto l = random_logits(300, 7);
  // Flatten so many tokens are plausible.
  for (auto& v : l) v *= 0.2f;
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 200; ++i) {
    da.push_back(a.sample(l.data(), 300));
    db.push_back(b.sample(l.data(), 300));
    dc.push_back(c.sample(l.data(), 300));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
  a.reseed(42);
  EXPECT_EQ(a.sample(l.data(), 300), da[0]);
}

TEST(Sampler, FrequenciesFollowSoftmaxAtTemperature) {
  // p = softmax(log([0.5, 0.3, 0.2]) / T) with T = 1: expect 0.5/0.3/0.2 within 4 sigma.
  std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 9;
  Sampler s(p);
  const int n = 20000;
  std::map<int32_t, int> count;
  for (int i = 0; i < n; ++i) count[s.sample(l.data(), 3)]++;
  const double want[3] = {0.5, 0.3, 0.2};
  for (int i = 0; i < 3; ++i) {
    double sigma = std::sqrt(want[i] * (1 - want[i]) / n);
    EXPECT_NEAR(double(count[i]) / n, want[i], 4 * sigma) << "token " << i;
  }
  // T = 0.5 sharpens: p ~ [0.25, 0.09, 0.04] / 0.38.
  p.temperature = 0.5f;
  Sampler sharp(p);
  count.clear();
  for (int i = 0; i < n; ++i) count[sharp.sample(l.data(), 3)]++;
  EXPECT_NEAR(double(count[0]) / n, 0.25 / 0.38, 0.02);
}

TEST(Sampler, FiltersNeverReturnAFilteredToken) {
  std::vector<float> l = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.06f), std::log(0.04f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1;
  {
    p.top_k = 2;
    Sampler s(p);
    for (int i = 0; i < 2000; ++i) EXPECT_LT(s.sample(l.data(), 5), 2);
    p.top_k = 0;
  }
  {
    p.top_p = 0.65f;  // 0.4 + 0.3 reaches it: tokens 0 and 1 only
    Sampler s(p);
    std::map<int32_t, int> c;
    for (int i = 0; i < 2000; ++i) c[s.sample(l.data(), 5)]++;
    EXPECT_EQ(c.size(), 2u);
    EXPECT_GT(c[1], 0);
    p.top_p = 1;
  }
  {
    p.min_p = 0.4f;  // keep p >= 0.16: tokens 0, 1, 2
    Sampler s(p);
    std::map<int32_t, int> c;
    for (int i = 0; i < 3000; ++i) c[s.sample(l.data(), 5)]++;
    EXPECT_EQ(c.size(), 3u);
    EXPECT_EQ(c.count(3), 0u);
  }
}

TEST(Sampler, BadParametersAreErrors) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.top_p = 0;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.top_k = -2;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.min_p = 1.5f;
  EXPECT_THROW(Sampler{p}, Error);
}

// Hand-computed: vocab 6, prompt {1, 2}, outputs 2, 3, 3.
//   id 0: unseen                     2.0
//   id 1: prompt only, rep 2         4.0 / 2            = 2.0
//   id 2: prompt + out x1, rep 2    -1.0 * 2 - 0.5*1 - 1 = -3.5
//   id 3: out x2, rep 2              3.0 / 2 - 0.5*2 - 1 = -0.5
//   id 4: bias +1.5                  0.5 + 1.5           = 2.0
//   id 5: bias -300 clamps to -100   1.0 - 100           = -99.0
TEST(LogitsAdjuster, MatchesAHandComputedRow) {
  LogitsAdjust a;
  a.repetition_penalty = 2;
  a.frequency_penalty = 0.5f;
  a.presence_penalty = 1;
  a.logit_bias = {{4, 1.5f}, {5, -300.0f}, {99, 5.0f}};  // 99: out of vocab, ignored
  std::vector<int32_t> prompt = {1, 2};
  LogitsAdjuster adj(a, prompt);
  for (int32_t id : {2, 3, 3}) adj.on_output(id);
  std::vector<float> row = {2.0f, 4.0f, -1.0f, 3.0f, 0.5f, 1.0f};
  adj.apply(row.data(), 6);
  const std::vector<float> want = {2.0f, 2.0f, -3.5f, -0.5f, 2.0f, -99.0f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(row[i], want[i]) << "id " << i;
}

TEST(LogitsAdjuster, PresenceAndFrequencyCountOnlyTheOutput) {
  LogitsAdjust a;
  a.presence_penalty = 2;
  a.frequency_penalty = 1;
  std::vector<int32_t> prompt = {0, 0, 0};
  LogitsAdjuster adj(a, prompt);
  std::vector<float> row = {1, 1};
  adj.apply(row.data(), 2);
  EXPECT_FLOAT_EQ(row[0], 1);  // prompt tokens are not penalised by presence / frequency
  adj.on_output(1);
  adj.on_output(1);
  adj.apply(row.data(), 2);
  EXPECT_FLOAT_EQ(row[1], 1 - 2 - 2);
}

TEST(LogitsAdjuster, MinTokensMasksStopIdsUntilReached) {
  LogitsAdjust a;
  a.min_tokens = 2;
  a.min_tokens_blocked = {3};
  LogitsAdjuster adj(a, {});
  ASSERT_TRUE(adj.active());
  std::vector<float> row = {0, 0, 0, 9};
  adj.apply(row.data(), 4);
  EXPECT_EQ(argmax(row.data(), 4), 0);
  EXPECT_TRUE(std::isinf(row[3]) && row[3] < 0);
  adj.on_output(0);
  row = {0, 0, 0, 9};
  adj.apply(row.data(), 4);
  EXPECT_EQ(argmax(row.data(), 4), 0);
  adj.on_output(0);
  row = {0, 0, 0, 9};
  adj.apply(row.data(), 4);
  EXPECT_EQ(argmax(row.data(), 4), 3);  // two generated: the stop id is allowed again
}

TEST(LogitsAdjuster, DefaultsAreInactiveAndBadRepetitionIsRefused) {
  EXPECT_FALSE(LogitsAdjust{}.active());
  LogitsAdjust a;
  a.repetition_penalty = 0;
  EXPECT_THROW(LogitsAdjuster(a, {}), Error);
}

}  // namespace
}  // namespace sickle
