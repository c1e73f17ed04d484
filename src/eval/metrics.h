// sickle/eval/metrics.h — token-level quality metrics of a (student) model, optionally against a
// teacher (the unpruned original): perplexity, top-1 agreement, KL(teacher || student), the
// fraction of tokens whose teacher top-1 is in the student's top-5, and a generation metric:
// exact-match greedy completion of the next line.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace sickle {

struct EvalTotals {
  int64_t n_tokens = 0;        // tokens scored (positions with a next-token target)
  double nll_sum = 0;          // student: sum of -log p(target)
  double teacher_nll_sum = 0;  // teacher, same positions
  int64_t n_compared = 0;      // positions with teacher logits
  double kl_sum = 0;           // sum of KL(teacher || student), nats
  int64_t top1_agree = 0;      // argmax student == argmax teacher
  int64_t teacher_top1_in_top5 = 0;
  int64_t nonfinite_logits = 0;  // positions whose student logits had NaN/Inf
  // Next-line completion (only with a line-end table, see LineScorer): lines scored, and lines
  // whose every token is the student's argmax given the true prefix, which is exactly when
  // greedy decoding from the text before the line reproduces the line and its newline.
  int64_t lines = 0;
  int64_t lines_exact = 0;
  // Sum over lines of the fraction of the line's tokens before its first wrong argmax: how much
  // of the next line greedy decoding gets right (a graded version of lines_exact).
  double line_prefix_sum = 0;

  double ppl() const;
  double teacher_ppl() const;
  double ppl_ratio() const;  // ppl / teacher_ppl
  double mean_kl() const;
  double top1() const;
  double top5() const;
  double line_em() const;      // lines_exact / lines
  double line_prefix() const;  // line_prefix_sum / lines
  void merge(const EvalTotals& o);
  // Named values for reports and --fail-if: ppl, teacher_ppl, ppl_ratio, kl, top1, top5,
  // tokens, nonfinite; line_em, line_prefix and lines when lines were scored.
  std::map<std::string, double> values() const;
};

// log-softmax of row[vocab] in f64; returns log-sum-exp. Non-finite input -> returns NaN.
double log_sum_exp(const float* logits, int64_t vocab);

// Scores one position. `teacher` may be null. Both rows are raw logits [vocab]. Returns whether
// the student's argmax is the target (false for non-finite logits).
bool score_position(EvalTotals& t, const float* student, const float* teacher, int64_t vocab, int32_t target);

// Which predictions of a window are scored when some positions are image rows (Kimi-K2.5's
// expanded media placeholders, WindowImages::rows; empty = text only, everything scored):
// position p predicts token p+1 and is scored only when neither p nor p+1 is an image position.
// So no image position is ever a target, and the token right after an image (<|media_end|>,
// predicted from the image's last row) is not scored either; the `<|media_begin|>image
// <|media_content|>` before an image are scored like any other template text.
inline bool scored_position(std::span<const float* const> rows, size_t p) {
  return rows.empty() || (rows[p] == nullptr && rows[p + 1] == nullptr);
}

// Next-line exact match over one window's targets, fed in order. `line_end[id]` != 0 marks the
// tokens whose text contains a newline. A line is the run of targets after a line-end target up
// to and including the next one; the text before the window's first line end is skipped (its
// line start is not in the window) and so is an unfinished last line. Lines of a lone line-end
// token (blank lines) are not counted.
class LineScorer {
 public:
  explicit LineScorer(const std::vector<uint8_t>& line_end) : line_end_(line_end) {}
  void feed(EvalTotals& t, int32_t target, bool correct);
  // Forgets the line in progress: the next line starts after the next line-end target (an image
  // in the window interrupts the text).
  void restart() {
    started_ = false;
    exact_ = true;
    len_ = prefix_ = 0;
  }

 private:
  const std::vector<uint8_t>& line_end_;
  bool started_ = false, exact_ = true;
  int64_t len_ = 0, prefix_ = 0;
};

// --fail-if gates: "ppl_ratio>1.5,top1<0.6". Each clause: NAME OP NUMBER with OP in
// > < >= <= == !=. A gate "fails" when its clause is TRUE. Throws Error on a malformed clause or
// an unknown name.
struct Gate {
  std::string name, op;
  double value = 0;
  std::string text;
};
std::vector<Gate> parse_gates(const std::string& spec, const std::vector<std::string>& known_names);
// Returns the gates that fire on `values`; a gate naming a value that is absent (e.g. a teacher
// metric without --teacher) throws Error.
std::vector<Gate> failing_gates(const std::vector<Gate>& gates, const std::map<std::string, double>& values);

}  // namespace sickle
