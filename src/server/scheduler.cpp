// sickle/server/scheduler.cpp — see scheduler.h.
#include "server/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "base/error.h"
#include "base/log.h"
#include "model/model.h"
#include "server/openai.h"

namespace sickle::server {

using Clock = std::chrono::steady_clock;

// ---- the real model behind Engine ----

namespace {

class ModelSequence : public EngineSequence {
 public:
  explicit ModelSequence(std::unique_ptr<Sequence> s) : s_(std::move(s)) {}
  int64_t n_past() const override { return s_->n_past(); }
  void truncate(int64_t n) override { s_->truncate(n); }
  uint64_t cache_bytes() const override { return s_->cache_bytes(); }
  Sequence* get() { return s_.get(); }

 private:
  std::unique_ptr<Sequence> s_;
};

class ModelEngine : public Engine {
 public:
  explicit ModelEngine(Model& m) : m_(m) {}
  std::unique_ptr<EngineSequence> new_sequence() override {
    return std::make_unique<ModelSequence>(m_.new_sequence());
  }
  void forward(std::span<const EngineItem> items, std::vector<float>& logits) override {
    steps_.clear();
    for (auto& it : items) steps_.push_back(StepItem{static_cast<ModelSequence*>(it.seq)->get(), it.tokens, false});
    m_.forward(std::span<StepItem>(steps_), logits);
  }
  int64_t vocab_size() const override { return m_.vocab_size(); }
  int64_t max_context() const override { return m_.max_context(); }
  uint64_t kv_bytes_per_token() const override {
    // model.h: per layer and token, kv_lora_rank + qk_rope_head_dim floats.
    const ModelConfig& c = m_.config();
    return uint64_t(c.num_hidden_layers) * uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * sizeof(float);
  }

 private:
  Model& m_;
  std::vector<StepItem> steps_;
};

}  // namespace

std::unique_ptr<Engine> make_engine(Model& model) { return std::make_unique<ModelEngine>(model); }

const char* finish_name(Finish f) {
  switch (f) {
    case Finish::kStop: return "stop";
    case Finish::kLength: return "length";
    case Finish::kCancelled: return "abort";
    case Finish::kError: return "error";
    default: return "none";
  }
}

// ---- GenHandle ----

bool GenHandle::next(std::vector<GenToken>& out, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return !tokens_.empty() || finish_ != Finish::kNone; });
  bool had = !tokens_.empty();
  while (!tokens_.empty()) {
    out.push_back(std::move(tokens_.front()));
    tokens_.pop_front();
  }
  return had || finish_ == Finish::kNone;
}

Finish GenHandle::finish() const {
  std::lock_guard lk(mu_);
  return finish_;
}

std::string GenHandle::error() const {
  std::lock_guard lk(mu_);
  return error_;
}

void GenHandle::push(GenToken t) {
  {
    std::lock_guard lk(mu_);
    tokens_.push_back(std::move(t));
  }
  cv_.notify_all();
}

void GenHandle::end(Finish f, std::string error) {
  {
    std::lock_guard lk(mu_);
    if (finish_ != Finish::kNone) return;
    finish_ = f;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

// ---- Scheduler ----

struct Scheduler::Live {
  std::shared_ptr<GenHandle> h;
  GenRequest req;
  std::unique_ptr<EngineSequence> seq;
  std::vector<int32_t> tokens;  // what the cache holds (mirrors seq->n_past())
  size_t n_fed_prompt = 0;      // prompt tokens in the cache
  int32_t next = -1;            // last sampled token, fed next step
  int64_t n_generated = 0;
  uint64_t reserved = 0;
  Sampler sampler;
  std::unique_ptr<grammar::TokenConstraint> constraint;  // from req.make_constraint
  Clock::time_point arrival, last_token;
  bool is_prefilling() const { return n_fed_prompt < req.prompt.size(); }
};

Scheduler::Scheduler(Engine& engine, SchedulerOptions options, Metrics* metrics)
    : engine_(engine), opt_(options), metrics_(metrics), bytes_per_token_(engine.kv_bytes_per_token()) {
  if (opt_.max_model_len <= 0 || opt_.max_model_len > engine_.max_context()) opt_.max_model_len = engine_.max_context();
  opt_.max_num_seqs = std::max<int64_t>(1, opt_.max_num_seqs);
  opt_.prefill_chunk = std::max<int64_t>(1, opt_.prefill_chunk);
  if (opt_.kv_budget_bytes == 0) opt_.kv_budget_bytes = uint64_t(opt_.max_num_seqs) * uint64_t(opt_.max_model_len) * bytes_per_token_;
  gauges_.kv_budget_bytes = opt_.kv_budget_bytes;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::stop() {
  {
    std::lock_guard lk(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& w : inbox_) w.h->end(Finish::kCancelled, "server shutting down");
  for (auto& w : waiting_) w.h->end(Finish::kCancelled, "server shutting down");
  for (auto& l : live_) l->h->end(Finish::kCancelled, "server shutting down");
  inbox_.clear();
  waiting_.clear();
  live_.clear();
  cache_.clear();
}

uint64_t Scheduler::reserve_of(const GenRequest& r) const {
  return uint64_t(r.prompt.size() + r.max_tokens) * bytes_per_token_;
}

std::shared_ptr<GenHandle> Scheduler::submit(GenRequest req) {
  const int64_t n_prompt = int64_t(req.prompt.size());
  if (n_prompt == 0) throw ApiError(400, "The prompt is empty.", "messages");
  const int64_t vocab = engine_.vocab_size();
  for (int32_t t : req.prompt)
    if (t < 0 || t >= vocab) throw ApiError(400, fmt::format("Token id {} is out of vocabulary [0, {}).", t, vocab), "prompt");
  const int64_t max_len = opt_.max_model_len;
  if (n_prompt >= max_len)
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens. However, your request has {} input "
                               "tokens. Please reduce the length of the input messages.",
                               max_len, n_prompt),
                   "messages", "invalid_request_error", "context_length_exceeded");
  if (req.max_tokens > 0 && n_prompt + req.max_tokens > max_len)
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                               "({} in the messages, {} in the completion). Please reduce the length of the messages "
                               "or completion.",
                               max_len, n_prompt + req.max_tokens, n_prompt, req.max_tokens),
                   "max_tokens", "invalid_request_error", "context_length_exceeded");
  // As vLLM: an unset max_tokens (<= 0) means whatever the context leaves.
  // An unset max_tokens means what the context leaves (as vLLM), but within a fair share of the
  // KV budget (budget / max_num_seqs, at least 256 tokens past the prompt), so requests without
  // max_tokens do not each reserve the whole budget and run one at a time.
  if (req.max_tokens <= 0) {
    const int64_t budget_tokens = int64_t(opt_.kv_budget_bytes / std::max<uint64_t>(1, bytes_per_token_));
    const int64_t share = std::max(budget_tokens / opt_.max_num_seqs, n_prompt + 256);
    req.max_tokens = std::max<int64_t>(1, std::min({max_len, share, budget_tokens}) - n_prompt);
  }
  if (reserve_of(req) > opt_.kv_budget_bytes)
    throw ApiError(400,
                   fmt::format("The request needs {} tokens of KV cache ({} bytes) but the server's KV budget is {} "
                               "bytes; lower max_tokens or shorten the prompt.",
                               n_prompt + req.max_tokens, reserve_of(req), opt_.kv_budget_bytes),
                   "max_tokens", "invalid_request_error", "kv_budget_exceeded");
  auto h = std::make_shared<GenHandle>();
  h->n_prompt_ = n_prompt;
  {
    std::lock_guard lk(mu_);
    if (stop_) throw ApiError(503, "The server is shutting down.");
    if (int64_t(inbox_.size()) + gauges_.waiting >= opt_.max_waiting)
      throw ApiError(503, fmt::format("Too many requests waiting ({}); retry later.", opt_.max_waiting), "", "server_error",
                     "queue_full");
    inbox_.push_back(Waiting{h, std::move(req), Clock::now()});
  }
  cv_.notify_all();
  return h;
}

SchedulerGauges Scheduler::gauges() const {
  std::lock_guard lk(mu_);
  SchedulerGauges g = gauges_;
  g.waiting += int64_t(inbox_.size());
  return g;
}

void Scheduler::loop() {
  while (true) {
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !inbox_.empty() || !live_.empty() || !waiting_.empty(); });
      if (stop_) return;
      while (!inbox_.empty()) {
        waiting_.push_back(std::move(inbox_.front()));
        inbox_.pop_front();
      }
    }
    // Requests whose client left before admission.
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (it->h->is_cancelled()) {
        it->h->end(Finish::kCancelled);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    admit();
    if (!live_.empty()) {
      step();
    } else if (!waiting_.empty()) {
      // Nothing running yet nothing admitted: cannot happen (submit() refuses what never fits);
      // wait briefly rather than spin.
      std::unique_lock lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(5));
    }
    uint64_t allocated = 0;
    for (auto& l : live_) allocated += l->seq->cache_bytes();
    for (auto& e : cache_) allocated += e.seq->cache_bytes();
    std::lock_guard lk(mu_);
    gauges_.running = int64_t(live_.size());
    gauges_.waiting = int64_t(waiting_.size());
    gauges_.kv_reserved_bytes = reserved_bytes_;
    gauges_.kv_allocated_bytes = allocated;
    gauges_.prefix_cache_entries = int64_t(cache_.size());
  }
}

void Scheduler::admit() {
  while (!waiting_.empty() && int64_t(live_.size()) < opt_.max_num_seqs) {
    Waiting& w = waiting_.front();
    const auto& prompt = w.req.prompt;
    // The cache entry sharing the longest prefix with the prompt (at least one prompt token
    // must still be fed to get the next token's logits).
    auto best = cache_.end();
    size_t best_len = 0;
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
      size_t n = std::min(it->tokens.size(), prompt.size() - 1), k = 0;
      while (k < n && it->tokens[k] == prompt[k]) ++k;
      if (k > best_len) best_len = k, best = it;
    }
    uint64_t need = reserve_of(w.req);
    uint64_t freed_by_best = best != cache_.end() ? uint64_t(best->tokens.size()) * bytes_per_token_ : 0;
    // Evict least recently used entries (never the one we will reuse) until the request fits.
    while (reserved_bytes_ - freed_by_best + need > opt_.kv_budget_bytes) {
      auto victim = cache_.end();
      for (auto it = cache_.begin(); it != cache_.end(); ++it)
        if (it != best) victim = it;  // the last one that is not `best` = least recently used
      if (victim == cache_.end()) break;
      reserved_bytes_ -= uint64_t(victim->tokens.size()) * bytes_per_token_;
      cache_.erase(victim);
    }
    if (reserved_bytes_ - freed_by_best + need > opt_.kv_budget_bytes) return;  // wait for running ones

    auto s = std::make_unique<Live>();
    s->h = w.h;
    s->req = std::move(w.req);
    s->arrival = w.arrival;
    s->sampler = Sampler(s->req.sampling);
    if (s->req.make_constraint) s->constraint = s->req.make_constraint();
    if (best != cache_.end()) {
      s->seq = std::move(best->seq);
      s->seq->truncate(int64_t(best_len));
      s->tokens.assign(s->req.prompt.begin(), s->req.prompt.begin() + best_len);
      s->n_fed_prompt = best_len;
      reserved_bytes_ -= freed_by_best;
      cache_.erase(best);
    } else {
      s->seq = engine_.new_sequence();
    }
    s->reserved = need;
    reserved_bytes_ += need;
    s->h->n_cached_ = int64_t(s->n_fed_prompt);
    if (metrics_) metrics_->on_prompt(int64_t(s->req.prompt.size()), int64_t(s->n_fed_prompt));
    live_.push_back(std::move(s));
    waiting_.pop_front();
  }
}

void Scheduler::retire(Live& s, Finish f, const std::string& error) {
  s.h->end(f, error);
  reserved_bytes_ -= s.reserved;
  s.reserved = 0;
  if (metrics_) metrics_->on_finished(finish_name(f), std::chrono::duration<double>(Clock::now() - s.arrival).count());
  if ((f == Finish::kStop || f == Finish::kLength) && opt_.prefix_cache_entries > 0 && !s.tokens.empty() &&
      s.seq->n_past() == int64_t(s.tokens.size())) {
    reserved_bytes_ += uint64_t(s.tokens.size()) * bytes_per_token_;
    cache_.push_front(CacheEntry{std::move(s.tokens), std::move(s.seq)});
    while (int64_t(cache_.size()) > opt_.prefix_cache_entries) {
      reserved_bytes_ -= uint64_t(cache_.back().tokens.size()) * bytes_per_token_;
      cache_.pop_back();
    }
  }
  s.seq.reset();  // cancelled / failed: free the cache now
}

void Scheduler::step() {
  // Cancelled sequences leave before the step.
  for (auto& s : live_)
    if (s->h->is_cancelled()) retire(*s, Finish::kCancelled);
  std::erase_if(live_, [](const auto& s) { return s->h->finish() != Finish::kNone; });
  if (live_.empty()) return;

  // Decoding sequences first (one token each), then prompt chunks within the prefill budget.
  std::vector<EngineItem> items;
  std::vector<Live*> owners;
  for (auto& s : live_)
    if (!s->is_prefilling()) {
      items.push_back(EngineItem{s->seq.get(), std::span<const int32_t>(&s->next, 1)});
      owners.push_back(s.get());
    }
  int64_t budget = opt_.prefill_chunk;
  for (auto& s : live_) {
    if (!s->is_prefilling() || budget <= 0) continue;
    int64_t n = std::min<int64_t>(budget, int64_t(s->req.prompt.size() - s->n_fed_prompt));
    items.push_back(EngineItem{s->seq.get(), std::span<const int32_t>(s->req.prompt.data() + s->n_fed_prompt, size_t(n))});
    owners.push_back(s.get());
    budget -= n;
  }
  if (items.empty()) return;
  max_batch_ = std::max<int64_t>(max_batch_, int64_t(items.size()));
  try {
    engine_.forward(items, logits_);
  } catch (const NonFiniteError& e) {
    // Activations or logits went NaN/Inf (a broken weight, an overflow) for the items it names:
    // their requests end with that error (the layer, the token). The step changed no sequence
    // and requests share no values (attention is per sequence, MLP/MoE per token), so the
    // other items are left as they were and simply run again next step.
    log_warn("serve: {}", e.what());
    for (const NonFiniteError::Hit& hit : e.hits) {
      SICKLE_CHECK(hit.item < owners.size(), "non-finite item {} of a {}-item step", hit.item, owners.size());
      retire(*owners[hit.item], Finish::kError, e.describe(hit));
    }
    std::erase_if(live_, [](const auto& s) { return s->h->finish() != Finish::kNone; });
    return;
  } catch (const std::exception& e) {
    // The model refused the step (should not happen after submit()'s checks): fail its requests,
    // keep serving. Their caches may be partly written, so they are dropped, not cached.
    log_warn("serve: forward failed: {}", e.what());
    for (Live* s : owners) retire(*s, Finish::kError, e.what());
    std::erase_if(live_, [](const auto& s) { return s->h->finish() != Finish::kNone; });
    return;
  }
  ++n_steps_;
  const int64_t vocab = engine_.vocab_size();
  SICKLE_CHECK(int64_t(logits_.size()) == int64_t(items.size()) * vocab, "forward returned {} logits for {} items",
               logits_.size(), items.size());
  const auto now = Clock::now();
  int64_t n_new = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Live& s = *owners[i];
    s.tokens.insert(s.tokens.end(), items[i].tokens.begin(), items[i].tokens.end());
    if (s.is_prefilling()) {
      s.n_fed_prompt += items[i].tokens.size();
      if (s.is_prefilling()) continue;  // more prompt to read: these logits are not needed
    }
    float* row = logits_.data() + int64_t(i) * vocab;
    if (s.constraint) s.constraint->mask({row, size_t(vocab)});
    GenToken t;
    t.id = s.sampler.sample(row, vocab);
    if (s.constraint) s.constraint->accept(t.id);
    if (s.req.top_logprobs >= 0) {
      // log softmax of the raw logits (OpenAI reports the model's distribution).
      float mx = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v] - mx));
      const float lse = mx + float(std::log(sum));
      t.logprob = row[t.id] - lse;
      if (s.req.top_logprobs > 0) {
        int64_t k = std::min<int64_t>(s.req.top_logprobs, vocab);
        std::vector<int32_t> idx(static_cast<size_t>(vocab));
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
          return row[a] > row[b] || (row[a] == row[b] && a < b);
        });
        for (int64_t j = 0; j < k; ++j) t.top.emplace_back(idx[size_t(j)], row[idx[size_t(j)]] - lse);
      }
    }
    const int32_t tok = t.id;
    ++s.n_generated;
    ++n_new;
    s.h->n_generated_ = s.n_generated;
    if (metrics_) {
      if (s.n_generated == 1)
        metrics_->on_ttft(std::chrono::duration<double>(now - s.arrival).count());
      else
        metrics_->on_itl(std::chrono::duration<double>(now - s.last_token).count());
    }
    s.last_token = now;
    s.h->push(std::move(t));
    const bool is_stop = !s.req.ignore_eos && std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), tok) != s.req.stop_ids.end();
    if (is_stop) {
      retire(s, Finish::kStop);
    } else if (s.n_generated >= s.req.max_tokens || int64_t(s.tokens.size()) + 1 > opt_.max_model_len) {
      retire(s, Finish::kLength);
    } else {
      s.next = tok;
    }
  }
  if (metrics_ && n_new) metrics_->on_tokens(n_new);
  std::erase_if(live_, [](const auto& s) { return s->h->finish() != Finish::kNone; });
}

}  // namespace sickle::server
