#include "eval/evaluate.h"

#include <fmt/format.h>

#include <chrono>
#include <cstring>

#include "base/error.h"
#include "base/log.h"

namespace sickle {
namespace {

// Counts routed choices per layer (no expert outputs requested: costs nothing extra).
class LoadObserver : public ForwardObserver {
 public:
  explicit LoadObserver(std::map<int64_t, std::vector<int64_t>>* load, const ModelConfig& c) : load_(load) {
    for (int64_t il = 0; il < c.num_hidden_layers; ++il)
      if (c.is_moe_layer(il)) (*load_)[il].assign(size_t(c.n_experts(il)), 0);
  }
  void on_moe_layer(const MoeLayerEvent& e) override {
    auto& v = (*load_)[e.layer];
    for (int64_t i = 0; i < e.n_tokens * e.k; ++i) {
      int32_t id = e.experts[i];
      if (id >= 0 && size_t(id) < v.size()) v[size_t(id)] += 1;
    }
  }

 private:
  std::map<int64_t, std::vector<int64_t>>* load_;
};

}  // namespace

int64_t EvalResult::dead_experts() const {
  int64_t n = 0;
  for (const auto& [il, v] : expert_load)
    for (auto c : v) n += c == 0;
  return n;
}

std::map<std::string, double> EvalResult::values() const {
  auto v = totals.values();
  v["dead_experts"] = double(dead_experts());
  v["windows"] = double(n_windows);
  v["seconds"] = seconds;
  return v;
}

EvalResult evaluate(Model& student, Model* teacher, const std::vector<std::vector<int32_t>>& windows,
                    const EvalOptions& opt, const std::vector<std::vector<const float*>>& rows) {
  if (!rows.empty() && rows.size() != windows.size())
    fail("evaluate: {} row lists for {} windows", rows.size(), windows.size());
  EvalResult r;
  const int64_t vocab = student.vocab_size();
  if (teacher && teacher->vocab_size() != vocab)
    fail("teacher vocabulary ({}) differs from the student's ({}): not the same model family",
         teacher->vocab_size(), vocab);
  LoadObserver obs(&r.expert_load, student.config());
  student.set_observer(&obs);
  struct Detach {
    Model& m;
    ~Detach() { m.set_observer(nullptr); }
  } detach{student};
  uint64_t total_positions = 0;
  for (const auto& w : windows) total_positions += w.size() > 1 ? w.size() - 1 : 0;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<float> s_logits, t_logits;
  std::unique_ptr<Progress> bar;
  if (opt.show_progress) bar = std::make_unique<Progress>("eval", total_positions, "tok");
  for (size_t wi = 0; wi < windows.size(); ++wi) {
    const auto& w = windows[wi];
    std::span<const float* const> w_rows;
    if (!rows.empty()) w_rows = rows[wi];
    if (!w_rows.empty() && w_rows.size() != w.size())
      fail("evaluate: window {} has {} tokens but {} input rows", wi, w.size(), w_rows.size());
    if (w.size() < 2) continue;
    r.n_windows += 1;
    auto s_seq = student.new_sequence();
    auto t_seq = teacher ? teacher->new_sequence() : nullptr;
    const int64_t n_pred = int64_t(w.size()) - 1;  // positions 0..n-2 predict w[1..n-1]
    LineScorer lines(opt.line_end);
    for (int64_t begin = 0; begin < n_pred; begin += opt.chunk) {
      int64_t end = std::min<int64_t>(n_pred, begin + opt.chunk);
      std::span<const int32_t> toks(w.data() + begin, size_t(end - begin));
      std::span<const float* const> chunk_rows;
      if (!w_rows.empty()) chunk_rows = w_rows.subspan(size_t(begin), size_t(end - begin));
      student.forward(*s_seq, toks, s_logits, /*all_logits=*/true, chunk_rows);
      if (teacher) teacher->forward(*t_seq, toks, t_logits, /*all_logits=*/true, chunk_rows);
      for (int64_t p = 0; p < end - begin; ++p) {
        if (!scored_position(w_rows, size_t(begin + p))) {
          lines.restart();  // an image breaks the line: start over after it
          continue;
        }
        const int32_t target = w[size_t(begin + p + 1)];
        bool correct = score_position(r.totals, s_logits.data() + p * vocab,
                                      teacher ? t_logits.data() + p * vocab : nullptr, vocab, target);
        if (!opt.line_end.empty()) lines.feed(r.totals, target, correct);
      }
      if (bar) bar->add(uint64_t(end - begin));
    }
  }
  if (bar) bar->finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (r.totals.nonfinite_logits)
    r.warnings.push_back(fmt::format("{} of {} positions produced NaN/Inf logits", r.totals.nonfinite_logits,
                                     r.totals.n_tokens));
  for (const auto& [il, v] : r.expert_load) {
    int64_t dead = 0, total = 0, mx = 0;
    for (auto c : v) {
      dead += c == 0;
      total += c;
      mx = std::max(mx, c);
    }
    if (dead)
      r.warnings.push_back(fmt::format("layer {}: {} of {} experts were never chosen", il, dead, v.size()));
    if (total > 0 && !v.empty()) {
      double fair = double(total) / double(v.size());
      if (double(mx) > 8.0 * fair)
        r.warnings.push_back(fmt::format("layer {}: one expert takes {:.1f}x its fair share of tokens", il,
                                         double(mx) / fair));
    }
  }
  if (teacher && r.totals.n_compared && r.totals.ppl_ratio() > 2.0)
    r.warnings.push_back(fmt::format("perplexity {:.2f} is {:.2f}x the teacher's ({:.2f})", r.totals.ppl(),
                                     r.totals.ppl_ratio(), r.totals.teacher_ppl()));
  return r;
}

std::vector<std::string> scan_weights(const Checkpoint& ck, uint64_t max_bytes, bool* scanned_all) {
  std::vector<std::string> out;
  uint64_t scanned = 0;
  bool all = true;
  for (const auto& name : ck.tensor_names()) {
    const TensorInfo& info = ck.info(name);
    if (max_bytes && scanned + info.nbytes() > max_bytes) {
      all = false;
      continue;
    }
    TensorView v = ck.tensor(name);
    int64_t bad = 0, n = v.numel();
    switch (v.dtype) {
      case DType::BF16: {
        auto p = v.as<uint16_t>();
        for (int64_t i = 0; i < n; ++i) bad += (p[i] & 0x7f80) == 0x7f80;
        break;
      }
      case DType::F16: {
        auto p = v.as<uint16_t>();
        for (int64_t i = 0; i < n; ++i) bad += (p[i] & 0x7c00) == 0x7c00;
        break;
      }
      case DType::F32: {
        auto p = v.as<uint32_t>();
        for (int64_t i = 0; i < n; ++i) bad += (p[i] & 0x7f800000u) == 0x7f800000u;
        break;
      }
      case DType::F8_E4M3: {
        auto p = v.as<uint8_t>();
        for (int64_t i = 0; i < n; ++i) bad += (p[i] & 0x7f) == 0x7f;
        break;
      }
      default: break;  // integer tensors (packed int4, shapes) cannot hold NaN
    }
    scanned += info.nbytes();
    if (bad) out.push_back(fmt::format("{}: {} NaN/Inf values", name, bad));
  }
  if (scanned_all) *scanned_all = all;
  return out;
}

}  // namespace sickle
