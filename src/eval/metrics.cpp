#include "eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/error.h"

namespace sickle {

double EvalTotals::ppl() const { return n_tokens ? std::exp(nll_sum / double(n_tokens)) : NAN; }
double EvalTotals::teacher_ppl() const {
  return n_compared ? std::exp(teacher_nll_sum / double(n_compared)) : NAN;
}
double EvalTotals::ppl_ratio() const { return n_compared ? ppl() / teacher_ppl() : NAN; }
double EvalTotals::mean_kl() const { return n_compared ? kl_sum / double(n_compared) : NAN; }
double EvalTotals::top1() const { return n_compared ? double(top1_agree) / double(n_compared) : NAN; }
double EvalTotals::top5() const {
  return n_compared ? double(teacher_top1_in_top5) / double(n_compared) : NAN;
}
double EvalTotals::line_em() const { return lines ? double(lines_exact) / double(lines) : NAN; }
double EvalTotals::line_prefix() const { return lines ? line_prefix_sum / double(lines) : NAN; }

void EvalTotals::merge(const EvalTotals& o) {
  n_tokens += o.n_tokens;
  nll_sum += o.nll_sum;
  teacher_nll_sum += o.teacher_nll_sum;
  n_compared += o.n_compared;
  kl_sum += o.kl_sum;
  top1_agree += o.top1_agree;
  teacher_top1_in_top5 += o.teacher_top1_in_top5;
  nonfinite_logits += o.nonfinite_logits;
  lines += o.lines;
  lines_exact += o.lines_exact;
  line_prefix_sum += o.line_prefix_sum;
}

std::map<std::string, double> EvalTotals::values() const {
  std::map<std::string, double> v{
      {"ppl", ppl()}, {"tokens", double(n_tokens)}, {"nonfinite", double(nonfinite_logits)}};
  if (n_compared) {
    v["teacher_ppl"] = teacher_ppl();
    v["ppl_ratio"] = ppl_ratio();
    v["kl"] = mean_kl();
    v["top1"] = top1();
    v["top5"] = top5();
  }
  if (lines) {
    v["line_em"] = line_em();
    v["line_prefix"] = line_prefix();
    v["lines"] = double(lines);
  }
  return v;
}

double log_sum_exp(const float* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return NAN;
    m = std::max(m, double(x[i]));
  }
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(x[i]) - m);
  return m + std::log(s);
}

namespace {
int64_t argmax_row(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}
}  // namespace

bool score_position(EvalTotals& t, const float* s, const float* teacher, int64_t vocab, int32_t target) {
  SICKLE_CHECK(target >= 0 && target < vocab, "target {} vocab {}", target, vocab);
  double lse = log_sum_exp(s, vocab);
  t.n_tokens += 1;
  if (std::isnan(lse)) {
    t.nonfinite_logits += 1;
    t.nll_sum += std::numeric_limits<double>::infinity();
    return false;
  }
  t.nll_sum += lse - double(s[target]);
  const int64_t sa = argmax_row(s, vocab);
  if (!teacher) return sa == target;
  double tlse = log_sum_exp(teacher, vocab);
  SICKLE_CHECK(!std::isnan(tlse), "teacher logits are not finite");
  t.n_compared += 1;
  t.teacher_nll_sum += tlse - double(teacher[target]);
  double kl = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    double lt = double(teacher[i]) - tlse, ls = double(s[i]) - lse;
    kl += std::exp(lt) * (lt - ls);
  }
  t.kl_sum += std::max(0.0, kl);
  const int64_t ta = argmax_row(teacher, vocab);
  if (ta == sa) t.top1_agree += 1;
  // teacher's top-1 is in the student's top-5 iff fewer than 5 student logits beat it
  // (ties counted in the teacher token's favour).
  int64_t better = 0;
  for (int64_t i = 0; i < vocab && better < 5; ++i)
    if (s[i] > s[ta]) ++better;
  if (better < 5) t.teacher_top1_in_top5 += 1;
  return sa == target;
}

void LineScorer::feed(EvalTotals& t, int32_t target, bool correct) {
  const bool end = target >= 0 && size_t(target) < line_end_.size() && line_end_[size_t(target)];
  if (!started_) {
    started_ = end;
    return;
  }
  exact_ = exact_ && correct;
  len_ += 1;
  prefix_ += exact_ ? 1 : 0;
  if (!end) return;
  if (len_ > 1) {
    t.lines += 1;
    t.lines_exact += exact_ ? 1 : 0;
    t.line_prefix_sum += double(prefix_) / double(len_);
  }
  exact_ = true;
  len_ = prefix_ = 0;
}

std::vector<Gate> parse_gates(const std::string& spec, const std::vector<std::string>& known) {
  std::vector<Gate> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string clause = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    clause.erase(std::remove_if(clause.begin(), clause.end(), ::isspace), clause.end());
    if (clause.empty()) continue;
    size_t op_at = clause.find_first_of("<>=!");
    if (op_at == std::string::npos || op_at == 0)
      fail("--fail-if: clause '{}' is not NAME OP NUMBER (e.g. ppl_ratio>1.5)", clause);
    Gate g;
    g.text = clause;
    g.name = clause.substr(0, op_at);
    size_t op_len = (op_at + 1 < clause.size() && clause[op_at + 1] == '=') ? 2 : 1;
    g.op = clause.substr(op_at, op_len);
    if (g.op != ">" && g.op != "<" && g.op != ">=" && g.op != "<=" && g.op != "==" && g.op != "!=")
      fail("--fail-if: clause '{}': unknown operator '{}'", clause, g.op);
    std::string num = clause.substr(op_at + op_len);
    char* end = nullptr;
    g.value = std::strtod(num.c_str(), &end);
    if (num.empty() || *end != '\0') fail("--fail-if: clause '{}': '{}' is not a number", clause, num);
    if (std::find(known.begin(), known.end(), g.name) == known.end()) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      fail("--fail-if: clause '{}': unknown metric '{}' (known: {})", clause, g.name, names);
    }
    out.push_back(g);
  }
  return out;
}

std::vector<Gate> failing_gates(const std::vector<Gate>& gates, const std::map<std::string, double>& values) {
  std::vector<Gate> fired;
  for (const auto& g : gates) {
    auto it = values.find(g.name);
    if (it == values.end())
      fail("--fail-if: metric '{}' is not available here (teacher metrics need --teacher)", g.name);
    double v = it->second;
    bool hit = g.op == ">"    ? v > g.value
               : g.op == "<"  ? v < g.value
               : g.op == ">=" ? v >= g.value
               : g.op == "<=" ? v <= g.value
               : g.op == "==" ? v == g.value
                              : v != g.value;
    if (std::isnan(v)) hit = true;  // an undefined metric never passes a gate
    if (hit) fired.push_back(g);
  }
  return fired;
}

}  // namespace sickle
