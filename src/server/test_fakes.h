// sickle/server/test_fakes.h — a tiny tokenizer and a deterministic model for the server's
// unit tests (header only; not part of the library).
//
// FakeCodec: ids 0..255 are single bytes; special tokens from 1000 up are the Kimi markers
// and <|im_end|>. FakeEngine: each sequence's "KV cache" is its token history; the next token
// is a hash of the whole history, so any mix-up of caches between sequences (batching, prefix
// reuse, truncation) changes the output.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "model/model.h"
#include "server/codec.h"
#include "server/scheduler.h"

namespace sickle::server::testing {

inline const std::vector<std::string>& fake_specials() {
  static const std::vector<std::string> s = {"<think>",
                                             "</think>",
                                             "<|tool_calls_section_begin|>",
                                             "<|tool_calls_section_end|>",
                                             "<|tool_call_begin|>",
                                             "<|tool_call_argument_begin|>",
                                             "<|tool_call_end|>",
                                             "<|im_end|>"};
  return s;
}

class FakeStream : public TokenTextStream {
 public:
  std::string push(int32_t id) override {
    if (id >= 256) return {};
    pending_ += char(id);
    // Emit whole UTF-8 characters only.
    size_t n = pending_.size(), i = n;
    while (i > 0 && i > n - 4 && (static_cast<unsigned char>(pending_[i - 1]) & 0xC0) == 0x80) --i;
    if (i > 0) {
      unsigned char lead = static_cast<unsigned char>(pending_[i - 1]);
      size_t len = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
      if (n - (i - 1) < len) {
        std::string out = pending_.substr(0, i - 1);
        pending_.erase(0, i - 1);
        return out;
      }
    }
    return std::exchange(pending_, {});
  }
  std::string flush() override { return std::exchange(pending_, {}); }

 private:
  std::string pending_;
};

class FakeCodec : public TextCodec {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
      bool matched = false;
      for (size_t s = 0; s < fake_specials().size(); ++s) {
        const std::string& sp = fake_specials()[s];
        if (text.substr(i, sp.size()) == sp) {
          ids.push_back(int32_t(1000 + s));
          i += sp.size();
          matched = true;
          break;
        }
      }
      if (!matched) ids.push_back(static_cast<unsigned char>(text[i++]));
    }
    return ids;
  }
  int32_t special_id(std::string_view text) const override {
    for (size_t s = 0; s < fake_specials().size(); ++s)
      if (fake_specials()[s] == text) return int32_t(1000 + s);
    return -1;
  }
  bool is_special(int32_t id) const override { return id >= 1000; }
  std::string token_text(int32_t id) const override {
    return id < 256 ? std::string(1, char(id)) : fake_specials().at(size_t(id - 1000));
  }
  int64_t vocab_size() const override { return 1000 + int64_t(fake_specials().size()); }
  std::vector<int32_t> stop_ids() const override { return {special_id("<|im_end|>")}; }
  std::unique_ptr<TokenTextStream> new_stream() const override { return std::make_unique<FakeStream>(); }
  // Values are bytes, whatever they spell.
  std::vector<int32_t> encode(const RenderedPrompt& prompt) const override {
    std::vector<int32_t> ids;
    for (const auto& s : prompt.spans) {
      if (!s.is_value) {
        auto t = encode(s.text);
        ids.insert(ids.end(), t.begin(), t.end());
      } else {
        for (char c : s.text) ids.push_back(static_cast<unsigned char>(c));
      }
    }
    return ids;
  }
  using TextCodec::render_chat;
  RenderedPrompt render_chat(const nlohmann::json& messages, const nlohmann::ordered_json& tools,
                             bool thinking, const nlohmann::json& /*template_kwargs*/,
                             bool add_generation_prompt) const override {
    RenderedPrompt p;
    for (auto& m : messages) {
      p.add_template(m["role"].get<std::string>() + ":");
      p.add_value(m["content"].get<std::string>());
      p.add_template("\n");
    }
    if (add_generation_prompt) p.add_template(thinking ? "assistant:<think>" : "assistant:<think></think>");
    return p;
  }
};

class FakeSequence : public EngineSequence {
 public:
  int64_t n_past() const override { return int64_t(history.size()); }
  void truncate(int64_t n) override {
    if (n < 0 || n > n_past()) throw std::runtime_error("bad truncate");
    history.resize(size_t(n));
  }
  uint64_t cache_bytes() const override { return history.capacity() * 8; }
  std::vector<int32_t> history;
};

// The fake model's next token after `history` (greedy: the argmax of forward's logits).
inline int32_t fake_next(const std::vector<int32_t>& history, int64_t vocab) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : history) h = (h ^ uint64_t(t)) * 1099511628211ull;
  return int32_t(h % uint64_t(vocab));
}

class FakeEngine : public Engine {
 public:
  explicit FakeEngine(int64_t vocab = 64, int64_t max_ctx = 4096, int step_sleep_us = 200)
      : vocab_(vocab), max_ctx_(max_ctx), sleep_us_(step_sleep_us) {}
  std::unique_ptr<EngineSequence> new_sequence() override {
    ++n_new_sequences;
    return std::make_unique<FakeSequence>();
  }
  std::unique_ptr<EngineSequence> fork(const EngineSequence& seq) override {
    if (!can_fork) return nullptr;
    ++n_forks;
    auto s = std::make_unique<FakeSequence>();
    s->history = static_cast<const FakeSequence&>(seq).history;
    return s;
  }
  void forward(std::span<const EngineItem> items, std::vector<float>& logits) override {
    ++n_forward_calls;
    {
      std::lock_guard lk(mu);
      forward_thread = std::this_thread::get_id();
    }
    while (hold) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // As the real model: items holding `nonfinite` make the step throw NonFiniteError naming
    // them (the token's position in its sequence), before any sequence changes.
    std::vector<NonFiniteError::Hit> hits;
    for (size_t i = 0; i < items.size(); ++i)
      for (size_t j = 0; j < items[i].tokens.size(); ++j)
        if (items[i].tokens[j] == nonfinite) {
          hits.push_back({i, items[i].seq->n_past() + int64_t(j), true});
          break;
        }
    if (!hits.empty()) throw NonFiniteError(3, "moe", std::move(hits));
    size_t n_rows = 0;
    for (auto& it : items) n_rows += it.all_logits ? it.tokens.size() : 1;
    logits.assign(n_rows * size_t(vocab_), 0.0f);
    StepLog log;
    float* row = logits.data();
    for (size_t i = 0; i < items.size(); ++i) {
      auto* s = static_cast<FakeSequence*>(items[i].seq);
      for (int32_t t : items[i].tokens)
        if (t == poison) throw std::runtime_error("poisoned token");
      log.item_sizes.push_back(int64_t(items[i].tokens.size()));
      log.rows.insert(log.rows.end(), items[i].embed_rows.begin(), items[i].embed_rows.end());
      for (const float* r : items[i].embed_rows) log.row_values.push_back(r ? r[0] : -1.0f);
      for (size_t j = 0; j < items[i].tokens.size(); ++j) {
        s->history.push_back(items[i].tokens[j]);
        if (!items[i].all_logits && j + 1 < items[i].tokens.size()) continue;
        for (int64_t v = 0; v < vocab_; ++v) row[v] = float(v % 7) * 0.1f;  // a non-flat background
        row[fake_next(s->history, vocab_)] = 5.0f;
        row += vocab_;
      }
    }
    {
      std::lock_guard lk(mu);
      steps.push_back(std::move(log));
    }
    if (sleep_us_) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
  }
  int64_t vocab_size() const override { return vocab_; }
  int64_t max_context() const override { return max_ctx_; }
  uint64_t kv_bytes_per_token() const override { return 8; }
  ThreadPool* pool() override { return pool_; }

  struct StepLog {
    std::vector<int64_t> item_sizes;
    std::vector<const float*> rows;  // the items' embed_rows, in order
    std::vector<float> row_values;   // their first floats when forward read them (-1: null)
  };
  std::mutex mu;
  std::vector<StepLog> steps;
  std::atomic<int64_t> n_new_sequences{0}, n_forks{0};
  bool can_fork = true;
  int32_t poison = -1;            // a step holding it throws std::runtime_error
  int32_t nonfinite = -1;         // a step holding it throws NonFiniteError naming those items
  std::atomic<bool> hold{false};  // forward() waits while set
  std::atomic<int64_t> n_forward_calls{0};  // forward() entered (before `hold`)
  std::thread::id forward_thread;           // the last forward()'s thread (under mu)
  ThreadPool* pool_ = nullptr;              // what pool() returns

 private:
  int64_t vocab_, max_ctx_;
  int sleep_us_;
};

// Greedy continuation of `prompt` by the fake model, stopping after `n` tokens or at a stop id.
inline std::vector<int32_t> fake_reference(std::vector<int32_t> prompt, int64_t n, int64_t vocab,
                                           const std::vector<int32_t>& stops = {}) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) {
    int32_t t = fake_next(prompt, vocab);
    out.push_back(t);
    if (std::find(stops.begin(), stops.end(), t) != stops.end()) break;
    prompt.push_back(t);
  }
  return out;
}

}  // namespace sickle::server::testing
