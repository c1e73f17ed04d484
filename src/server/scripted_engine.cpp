// sickle/server/scripted_engine.cpp — see scripted_engine.h.
#include "server/scripted_engine.h"

#include <algorithm>

#include "base/error.h"

namespace sickle::server {

namespace {

class ScriptedSequence : public EngineSequence {
 public:
  int64_t n_past() const override { return int64_t(history.size()); }
  void truncate(int64_t n) override {
    SICKLE_CHECK(n >= 0 && n <= n_past(), "truncate {} of {}", n, n_past());
    history.resize(size_t(n));
  }
  uint64_t cache_bytes() const override { return history.capacity() * sizeof(int32_t); }
  std::vector<int32_t> history;
};

class ScriptedEngine : public Engine {
 public:
  ScriptedEngine(const TextCodec& codec, const nlohmann::json& rules, int64_t max_context)
      : codec_(codec), max_context_(max_context) {
    if (!rules.is_array()) fail("--script: expected an array of {{\"when\", \"reply\"}} objects");
    for (size_t i = 0; i < rules.size(); ++i) {
      const auto& r = rules[i];
      if (!r.is_object() || !r.contains("when") || !r["when"].is_string() || !r.contains("reply") ||
          !r["reply"].is_string())
        fail("--script: rule {} needs string fields 'when' and 'reply'", i);
      rules_.push_back({r["when"].get<std::string>(), codec.encode(r["reply"].get<std::string>())});
    }
    default_reply_ = codec.encode("OK");
    auto ids = codec.stop_ids();
    end_ = ids.empty() ? 0 : ids.front();
    assistant_ = codec.encode("<|im_assistant|>assistant<|im_middle|>");
    think_ = codec.special_id("<think>");
    think_end_ = codec.special_id("</think>");
  }

  std::unique_ptr<EngineSequence> new_sequence() override { return std::make_unique<ScriptedSequence>(); }

  void forward(std::span<const EngineItem> items, std::vector<float>& logits) override {
    const int64_t V = vocab_size();
    size_t n_rows = 0;
    for (auto& it : items) n_rows += it.all_logits ? it.tokens.size() : 1;
    logits.assign(n_rows * size_t(V), 0.0f);
    size_t row = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      auto* s = static_cast<ScriptedSequence*>(items[i].seq);
      if (s->n_past() + int64_t(items[i].tokens.size()) > max_context_) fail("scripted: context exceeded");
      for (size_t j = 0; j < items[i].tokens.size(); ++j) {
        s->history.push_back(items[i].tokens[j]);
        if (!items[i].all_logits && j + 1 < items[i].tokens.size()) continue;
        logits[row++ * size_t(V) + size_t(next_token(s->history))] = 30.0f;
      }
    }
  }
  int64_t vocab_size() const override { return codec_.vocab_size(); }
  int64_t max_context() const override { return max_context_; }
  uint64_t kv_bytes_per_token() const override { return sizeof(int32_t); }

 private:
  int32_t next_token(const std::vector<int32_t>& h) const {
    // The last generation prompt in the history splits prompt from reply.
    auto it = std::find_end(h.begin(), h.end(), assistant_.begin(), assistant_.end());
    if (it == h.end()) return end_;
    size_t gen = size_t(it - h.begin()) + assistant_.size();
    if (gen < h.size() && h[gen] == think_) {
      ++gen;
      if (gen < h.size() && h[gen] == think_end_) ++gen;
    }
    std::string prompt_text;
    {
      auto st = codec_.new_stream();
      for (size_t k = 0; k < size_t(it - h.begin()); ++k)
        prompt_text += codec_.is_special(h[k]) ? codec_.token_text(h[k]) : st->push(h[k]);
      prompt_text += st->flush();
    }
    const std::vector<int32_t>* reply = &default_reply_;
    for (auto& r : rules_)
      if (prompt_text.find(r.when) != std::string::npos) {
        reply = &r.reply;
        break;
      }
    // Reply tokens already produced: all of them once the reply occurs after the generation
    // prompt; else the longest tail of what follows it that begins the reply. That is the
    // reply's prefix itself, or what comes after an opening the prompt forced (tool_choice).
    const auto g = h.begin() + std::ptrdiff_t(gen);
    const auto& r = *reply;
    if (!r.empty() && std::search(g, h.end(), r.begin(), r.end()) != h.end()) return end_;
    size_t n = size_t(h.end() - g), k = std::min(n, r.size());
    while (k > 0 && !std::equal(h.end() - std::ptrdiff_t(k), h.end(), r.begin())) --k;
    return k < r.size() ? r[k] : end_;
  }

  struct Rule {
    std::string when;
    std::vector<int32_t> reply;
  };
  const TextCodec& codec_;
  int64_t max_context_;
  std::vector<Rule> rules_;
  std::vector<int32_t> default_reply_, assistant_;
  int32_t end_ = 0, think_ = -1, think_end_ = -1;
};

}  // namespace

std::unique_ptr<Engine> make_scripted_engine(const TextCodec& codec, const nlohmann::json& rules,
                                             int64_t max_context) {
  return std::make_unique<ScriptedEngine>(codec, rules, max_context);
}

}  // namespace sickle::server
