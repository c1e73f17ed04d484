#include "eval/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <utility>
#include <vector>

#include "base/error.h"

namespace sickle {
namespace {

TEST(EvalMetrics, UniformLogitsGivePerplexityEqualToVocab) {
  EvalTotals t;
  float logits[7] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  for (int target = 0; target < 7; ++target) score_position(t, logits, nullptr, 7, target);
  EXPECT_EQ(t.n_tokens, 7);
  EXPECT_NEAR(t.ppl(), 7.0, 1e-9);
  EXPECT_TRUE(std::isnan(t.top1()));  // no teacher
}

TEST(EvalMetrics, HandComputedNllKlAgreement) {
  // Student p = [1,2,3,4]/10 (logits = log of the weights); teacher uniform over 4.
  float s[4] = {std::log(1.f), std::log(2.f), std::log(3.f), std::log(4.f)};
  float u[4] = {0, 0, 0, 0};
  EvalTotals t;
  score_position(t, s, u, 4, 2);
  EXPECT_NEAR(t.nll_sum, -std::log(0.3), 1e-6);
  EXPECT_NEAR(t.teacher_nll_sum, std::log(4.0), 1e-9);
  double kl = 0;
  for (double p : {0.1, 0.2, 0.3, 0.4}) kl += 0.25 * (std::log(0.25) - std::log(p));
  EXPECT_NEAR(t.mean_kl(), kl, 1e-6);
  // Teacher argmax (ties -> index 0) vs student argmax 3: disagree; teacher's top-1 (token 0)
  // is the student's 4th best, so it is inside the student's top 5.
  EXPECT_EQ(t.top1_agree, 0);
  EXPECT_EQ(t.teacher_top1_in_top5, 1);
  EXPECT_NEAR(t.ppl_ratio(), std::exp(-std::log(0.3)) / 4.0, 1e-6);
}

TEST(EvalMetrics, ScorePositionReportsWhetherTheArgmaxIsTheTarget) {
  float s[4] = {0.f, 3.f, 1.f, 2.f};
  EvalTotals t;
  EXPECT_TRUE(score_position(t, s, nullptr, 4, 1));
  EXPECT_FALSE(score_position(t, s, nullptr, 4, 3));
  EXPECT_TRUE(score_position(t, s, s, 4, 1));  // same answer with a teacher
  EXPECT_FALSE(score_position(t, s, s, 4, 0));
  float bad[4] = {0.f, NAN, 1.f, 2.f};
  EXPECT_FALSE(score_position(t, bad, nullptr, 4, 3));
}

TEST(EvalMetrics, LineScorerCountsOnlyWholeLinesAfterTheFirstLineEnd) {
  // ids 0..3 ordinary, 4 = a token with a newline.
  const std::vector<uint8_t> ends = {0, 0, 0, 0, 1};
  EvalTotals t;
  LineScorer ls(ends);
  const std::pair<int32_t, bool> seq[] = {
      {1, false}, {4, true},              // head of a line begun before the window: skipped
      {1, true},  {2, true},  {4, true},  // a line, every token right: exact
      {3, true},  {4, false},             // the newline itself mispredicted: not exact
      {1, false}, {4, true},              // a content token wrong: not exact
      {4, false},                         // a blank line: not counted
      {2, true},  {3, true},  {4, true},  // exact
      {1, true},  {2, true}};             // unfinished at the window's end: not counted
  for (auto [id, ok] : seq) ls.feed(t, id, ok);
  EXPECT_EQ(t.lines, 4);
  EXPECT_EQ(t.lines_exact, 2);
  EXPECT_DOUBLE_EQ(t.line_em(), 0.5);
  // Correct prefixes: 3/3, 1/2 (the newline was wrong), 0/2, 3/3.
  EXPECT_DOUBLE_EQ(t.line_prefix(), (1.0 + 0.5 + 0.0 + 1.0) / 4);
  auto v = t.values();
  EXPECT_DOUBLE_EQ(v.at("line_em"), 0.5);
  EXPECT_DOUBLE_EQ(v.at("lines"), 4);
  EvalTotals u;
  u.merge(t);
  u.merge(t);
  EXPECT_EQ(u.lines, 8);
  EXPECT_EQ(u.lines_exact, 4);
  EXPECT_DOUBLE_EQ(u.line_prefix(), t.line_prefix());
  // Without scored lines the metric is absent, not 0.
  EXPECT_EQ(EvalTotals{}.values().count("line_em"), 0u);
}

TEST(EvalMetrics, IdenticalModelsAgreeExactly) {
  float s[6] = {0.1f, 2.0f, -1.0f, 0.3f, 0.0f, 1.5f};
  EvalTotals t;
  score_position(t, s, s, 6, 1);
  EXPECT_NEAR(t.mean_kl(), 0.0, 1e-12);
  EXPECT_EQ(t.top1(), 1.0);
  EXPECT_EQ(t.top5(), 1.0);
  EXPECT_NEAR(t.ppl_ratio(), 1.0, 1e-12);
}

TEST(EvalMetrics, TeacherTop1OutsideStudentTop5) {
  float teacher[8] = {5, 0, 0, 0, 0, 0, 0, 0};
  float student[8] = {0, 1, 2, 3, 4, 5, 6, 7};  // token 0 is the student's worst
  EvalTotals t;
  score_position(t, student, teacher, 8, 0);
  EXPECT_EQ(t.teacher_top1_in_top5, 0);
}

TEST(EvalMetrics, NonFiniteLogitsAreCountedAndPoisonPerplexity) {
  float s[3] = {0, NAN, 1};
  EvalTotals t;
  score_position(t, s, nullptr, 3, 0);
  EXPECT_EQ(t.nonfinite_logits, 1);
  EXPECT_TRUE(std::isinf(t.ppl()));
}

TEST(EvalMetrics, MergeEqualsOneAccumulator) {
  float a[3] = {0.2f, 0.1f, -0.3f}, b[3] = {1.0f, -2.0f, 0.5f};
  EvalTotals one, x, y;
  score_position(one, a, b, 3, 0);
  score_position(one, b, a, 3, 2);
  score_position(x, a, b, 3, 0);
  score_position(y, b, a, 3, 2);
  x.merge(y);
  EXPECT_DOUBLE_EQ(one.nll_sum, x.nll_sum);
  EXPECT_DOUBLE_EQ(one.kl_sum, x.kl_sum);
  EXPECT_EQ(one.top1_agree, x.top1_agree);
}

TEST(EvalGates, ParseAndFire) {
  std::vector<std::string> known = {"ppl", "ppl_ratio", "top1", "kl"};
  auto gates = parse_gates("ppl_ratio>1.5, top1<0.6", known);
  ASSERT_EQ(gates.size(), 2u);
  EXPECT_EQ(gates[0].name, "ppl_ratio");
  EXPECT_EQ(gates[0].op, ">");
  EXPECT_DOUBLE_EQ(gates[1].value, 0.6);
  EXPECT_TRUE(failing_gates(gates, {{"ppl_ratio", 1.2}, {"top1", 0.9}}).empty());
  EXPECT_EQ(failing_gates(gates, {{"ppl_ratio", 1.7}, {"top1", 0.9}}).size(), 1u);
  EXPECT_EQ(failing_gates(gates, {{"ppl_ratio", 1.7}, {"top1", 0.1}}).size(), 2u);
  EXPECT_EQ(failing_gates(parse_gates("ppl>=10", known), {{"ppl", 10.0}}).size(), 1u);
  // NaN never passes.
  EXPECT_EQ(failing_gates(parse_gates("kl>1", known), {{"kl", NAN}}).size(), 1u);
}

TEST(EvalGates, BadClausesAreErrors) {
  std::vector<std::string> known = {"ppl"};
  EXPECT_THROW(parse_gates("ppl", known), Error);
  EXPECT_THROW(parse_gates("perplexity>3", known), Error);
  EXPECT_THROW(parse_gates("ppl>abc", known), Error);
  EXPECT_THROW(parse_gates(">3", known), Error);
  EXPECT_THROW(failing_gates(parse_gates("ppl>3", known), {{"top1", 1.0}}), Error);
}

}  // namespace
}  // namespace sickle
