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
#include "runtime/thread_pool.h"
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
  Sequence* get() const { return s_.get(); }

 private:
  std::unique_ptr<Sequence> s_;
};

class ModelEngine : public Engine {
 public:
  explicit ModelEngine(Model& m) : m_(m) {}
  std::unique_ptr<EngineSequence> new_sequence() override {
    return std::make_unique<ModelSequence>(m_.new_sequence());
  }
  std::unique_ptr<EngineSequence> fork(const EngineSequence& seq) override {
    // Sequence is a value (its cache rows): a copy is an independent sequence at the same point.
    return std::make_unique<ModelSequence>(
        std::make_unique<Sequence>(*static_cast<const ModelSequence&>(seq).get()));
  }
  void forward(std::span<const EngineItem> items, std::vector<float>& logits) override {
    steps_.clear();
    for (auto& it : items)
      steps_.push_back(
          StepItem{static_cast<ModelSequence*>(it.seq)->get(), it.tokens, it.all_logits, it.embed_rows});
    m_.forward(std::span<StepItem>(steps_), logits);
  }
  int64_t vocab_size() const override { return m_.vocab_size(); }
  int64_t max_context() const override { return m_.max_context(); }
  uint64_t kv_bytes_per_token() const override {
    // model.h: per layer and token, kv_lora_rank + qk_rope_head_dim floats.
    const ModelConfig& c = m_.config();
    return uint64_t(c.num_hidden_layers) * uint64_t(c.kv_lora_rank + c.qk_rope_head_dim) * sizeof(float);
  }
  ThreadPool* pool() override { return &m_.pool(); }

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

std::vector<GenToken> GenHandle::prompt_logprobs() const {
  std::lock_guard lk(mu_);
  return prompt_lps_;
}

GenToken token_logprobs(const float* row, int64_t vocab, int32_t id, int64_t top) {
  // log softmax of the raw logits (OpenAI reports the model's distribution).
  GenToken t;
  t.id = id;
  float mx = *std::max_element(row, row + vocab);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v] - mx));
  const double lse = double(mx) + std::log(sum);
  t.logprob = float(double(row[id]) - lse);
  if (top > 0) {
    int64_t k = std::min<int64_t>(top, vocab);
    // Called per generated token, and per prompt position for echo + logprobs: the [vocab]
    // index buffer is the thread's, reused, not allocated each call.
    thread_local std::vector<int32_t> idx;
    idx.resize(static_cast<size_t>(vocab));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    for (int64_t j = 0; j < k; ++j)
      t.top.emplace_back(idx[size_t(j)], float(double(row[idx[size_t(j)]]) - lse));
  }
  return t;
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

Finish GenHandle::end(Finish f, std::string error, std::optional<double> e2e_seconds) {
  {
    std::lock_guard lk(mu_);
    if (finish_ != Finish::kNone) return finish_;
    if (f == Finish::kLength && stop_requested_) f = Finish::kStop;
    finish_ = f;
    error_ = std::move(error);
    // Counted under the lock: a stop() after this sees the count it may have to move, and a
    // caller woken by the end finds it counted.
    if (e2e_seconds && metrics_) metrics_->on_finished(finish_name(f), *e2e_seconds);
  }
  cv_.notify_all();
  return f;
}

void GenHandle::stop() {
  std::lock_guard lk(mu_);
  stop_requested_ = true;
  cancelled_ = true;
  if (finish_ != Finish::kLength) return;
  finish_ = Finish::kStop;
  if (metrics_) metrics_->on_relabelled(finish_name(Finish::kLength), finish_name(Finish::kStop));
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
  LogitsAdjuster adjuster;
  std::unique_ptr<grammar::TokenConstraint> constraint;  // from req.make_constraint
  Clock::time_point arrival, last_token;
  std::vector<GenToken> prompt_lps;  // GenRequest::prompt_logprobs, gathered while prefilling
  std::vector<std::pair<std::shared_ptr<GenHandle>, uint64_t>> forks;  // choices to start after the prompt
  uint64_t forks_reserved = 0;  // their KV reservations (held from admission)
  bool is_prefilling() const { return n_fed_prompt < req.prompt.size(); }
};

Scheduler::Scheduler(Engine& engine, SchedulerOptions options, Metrics* metrics)
    : engine_(engine), opt_(options), metrics_(metrics), bytes_per_token_(engine.kv_bytes_per_token()) {
  if (opt_.max_model_len <= 0 || opt_.max_model_len > engine_.max_context())
    opt_.max_model_len = engine_.max_context();
  opt_.max_num_seqs = std::max<int64_t>(1, opt_.max_num_seqs);
  opt_.prefill_chunk = std::max<int64_t>(1, opt_.prefill_chunk);
  if (opt_.kv_budget_bytes == 0)
    opt_.kv_budget_bytes = uint64_t(opt_.max_num_seqs) * uint64_t(opt_.max_model_len) * bytes_per_token_;
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
  for (auto* q : {&inbox_, &waiting_})
    for (auto& w : *q) {
      w.h->end(Finish::kCancelled, "server shutting down");
      for (auto& f : w.forks) f.first->end(Finish::kCancelled, "server shutting down");
    }
  for (auto& l : live_) {
    l->h->end(Finish::kCancelled, "server shutting down");
    for (auto& f : l->forks) f.first->end(Finish::kCancelled, "server shutting down");
  }
  inbox_.clear();
  waiting_.clear();
  live_.clear();
  cache_.clear();
}

uint64_t Scheduler::reserve_of(const GenRequest& r) const {
  return uint64_t(r.prompt.size() + r.max_tokens) * bytes_per_token_;
}

std::shared_ptr<GenHandle> Scheduler::submit(GenRequest req) {
  const uint64_t seed = req.sampling.seed;
  return submit_n(std::move(req), {seed}).front();
}

std::vector<std::shared_ptr<GenHandle>> Scheduler::submit_n(GenRequest req,
                                                            const std::vector<uint64_t>& seeds) {
  const int64_t n_prompt = int64_t(req.prompt.size());
  if (n_prompt == 0) throw ApiError(400, "The prompt is empty.", "messages");
  SICKLE_CHECK((req.embed_rows.empty() || int64_t(req.embed_rows.size()) == n_prompt) &&
                   (req.prompt_keys.empty() || int64_t(req.prompt_keys.size()) == n_prompt),
               "submit: {} embedding rows and {} keys for {} prompt tokens", req.embed_rows.size(),
               req.prompt_keys.size(), n_prompt);
  const int64_t vocab = engine_.vocab_size();
  for (int32_t t : req.prompt)
    if (t < 0 || t >= vocab)
      throw ApiError(400, fmt::format("Token id {} is out of vocabulary [0, {}).", t, vocab), "prompt");
  const int64_t max_len = opt_.max_model_len;
  if (n_prompt >= max_len)
    throw ApiError(
        400,
        fmt::format("This model's maximum context length is {} tokens. However, your request has {} input "
                    "tokens. Please reduce the length of the input messages.",
                    max_len, n_prompt),
        "messages", "invalid_request_error", "context_length_exceeded");
  if (req.max_tokens > 0 && n_prompt + req.max_tokens > max_len)
    throw ApiError(
        400,
        fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens "
                    "({} in the messages, {} in the completion). Please reduce the length of the messages "
                    "or completion.",
                    max_len, n_prompt + req.max_tokens, n_prompt, req.max_tokens),
        "max_tokens", "invalid_request_error", "context_length_exceeded");
  // As vLLM: an unset max_tokens (<= 0) means whatever the context leaves (no silent cap). The
  // request reserves that much KV cache (at most the whole budget): when the budget is short it
  // waits for running requests to finish rather than being cut off early.
  if (req.prompt_only) {
    req.max_tokens = 0;
  } else if (req.max_tokens <= 0) {
    const int64_t budget_tokens = int64_t(opt_.kv_budget_bytes / std::max<uint64_t>(1, bytes_per_token_));
    req.max_tokens = std::max<int64_t>(1, std::min(max_len, budget_tokens) - n_prompt);
  }
  const int64_t n = std::max<int64_t>(1, int64_t(seeds.size()));
  if (n > opt_.max_num_seqs)
    throw ApiError(
        400, fmt::format("n = {} choices exceed the server's --max-num-seqs ({}).", n, opt_.max_num_seqs),
        "n");
  if (n > 1 && uint64_t(n) * reserve_of(req) > opt_.kv_budget_bytes)
    throw ApiError(
        400,
        fmt::format("{} choices of {} tokens each need more KV cache than the server's budget ({} bytes); "
                    "lower n or max_tokens.",
                    n, n_prompt + req.max_tokens, opt_.kv_budget_bytes),
        "n", "invalid_request_error", "kv_budget_exceeded");
  if (reserve_of(req) > opt_.kv_budget_bytes)
    throw ApiError(
        400,
        fmt::format("The request needs {} tokens of KV cache ({} bytes) but the server's KV budget is {} "
                    "bytes; lower max_tokens or shorten the prompt.",
                    n_prompt + req.max_tokens, reserve_of(req), opt_.kv_budget_bytes),
        "max_tokens", "invalid_request_error", "kv_budget_exceeded");
  std::vector<std::shared_ptr<GenHandle>> handles;
  Waiting w{nullptr, std::move(req), Clock::now(), {}};
  for (int64_t i = 0; i < n; ++i) {
    auto h = std::make_shared<GenHandle>();
    h->n_prompt_ = n_prompt;
    h->metrics_ = metrics_;
    handles.push_back(h);
    if (i == 0) {
      w.h = h;
      if (!seeds.empty()) w.req.sampling.seed = seeds[0];
    } else {
      w.forks.emplace_back(h, seeds[size_t(i)]);
    }
  }
  {
    std::lock_guard lk(mu_);
    if (stop_) throw ApiError(503, "The server is shutting down.");
    if (int64_t(inbox_.size()) + gauges_.waiting >= opt_.max_waiting)
      throw ApiError(503, fmt::format("Too many requests waiting ({}); retry later.", opt_.max_waiting), "",
                     "server_error", "queue_full");
    inbox_.push_back(std::move(w));
  }
  cv_.notify_all();
  return handles;
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
    // Requests whose client left before admission (their prepare jobs are not run).
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      bool all = it->h->is_cancelled();
      for (auto& f : it->forks) all = all && f.first->is_cancelled();
      if (all) {
        end_waiting(*it, it->h->stop_requested() ? Finish::kStop : Finish::kCancelled);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    const bool prepared = prepare_one();
    admit();
    if (!live_.empty()) {
      step();
    } else if (!waiting_.empty() && !prepared) {
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

void Scheduler::end_waiting(Waiting& w, Finish f, const std::string& error) {
  w.h->end(f, error);
  for (auto& fk : w.forks) fk.first->end(f == Finish::kError ? f : Finish::kCancelled, error);
}

bool Scheduler::prepare_one() {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->ready()) continue;
    try {
      auto& job = it->req.prepare[it->n_prepared];
      job(engine_.pool());
      job = nullptr;  // done: what it holds (an image's patches) is freed now
      ++it->n_prepared;
      ++n_prepared_;
    } catch (const std::exception& e) {
      log_warn("serve: preparing a request failed: {}", e.what());
      end_waiting(*it, Finish::kError, e.what());
      waiting_.erase(it);
    }
    return true;
  }
  return false;
}

void Scheduler::admit() {
  while (!waiting_.empty()) {
    Waiting& w = waiting_.front();
    if (!w.ready()) return;  // FIFO: its prepare jobs run first (prepare_one)
    const int64_t n_choices = 1 + int64_t(w.forks.size());
    if (int64_t(live_.size()) + n_choices > opt_.max_num_seqs) return;
    const auto& prompt = w.req.prompt;
    // The cache entry sharing the longest prefix with the prompt (at least one prompt token
    // must still be fed to get the next token's logits).
    // A position matches when both its token and its content key do (an image position
    // holds the same placeholder id whatever the image: the key tells images apart).
    auto key_at = [](const std::vector<uint64_t>& keys, size_t k) {
      return k < keys.size() ? keys[k] : uint64_t{0};
    };
    auto best = cache_.end();
    size_t best_len = 0;
    for (auto it = cache_.begin(); it != cache_.end() && w.req.prompt_logprobs < 0; ++it) {
      size_t n = std::min(it->tokens.size(), prompt.size() - 1), k = 0;
      while (k < n && it->tokens[k] == prompt[k] && key_at(it->keys, k) == key_at(w.req.prompt_keys, k)) ++k;
      if (k > best_len) best_len = k, best = it;
    }
    const uint64_t need_one = reserve_of(w.req);
    const uint64_t need = need_one * uint64_t(n_choices);
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
    if (s->req.adjust.min_tokens > 0) {
      auto& blocked = s->req.adjust.min_tokens_blocked;
      blocked = s->req.stop_token_ids;
      if (!s->req.ignore_eos) blocked.insert(blocked.end(), s->req.stop_ids.begin(), s->req.stop_ids.end());
    }
    s->adjuster = LogitsAdjuster(s->req.adjust, s->req.prompt);
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
    s->reserved = need_one;
    s->forks = std::move(w.forks);
    s->forks_reserved = need - need_one;
    reserved_bytes_ += need;
    s->h->n_cached_ = int64_t(s->n_fed_prompt);
    if (metrics_) metrics_->on_prompt(int64_t(s->req.prompt.size()), int64_t(s->n_fed_prompt));
    live_.push_back(std::move(s));
    waiting_.pop_front();
  }
}

void Scheduler::retire(Live& s, Finish f, const std::string& error) {
  f = s.h->end(f, error, std::chrono::duration<double>(Clock::now() - s.arrival).count());
  reserved_bytes_ -= s.reserved + s.forks_reserved;
  s.reserved = s.forks_reserved = 0;
  // Choices not started yet (the prompt was not read): they end as their parent did.
  for (auto& fk : s.forks) fk.first->end(f == Finish::kError ? f : Finish::kCancelled, error);
  s.forks.clear();
  if ((f == Finish::kStop || f == Finish::kLength) && opt_.prefix_cache_entries > 0 && !s.tokens.empty() &&
      s.seq->n_past() == int64_t(s.tokens.size())) {
    reserved_bytes_ += uint64_t(s.tokens.size()) * bytes_per_token_;
    std::vector<uint64_t> keys = s.req.prompt_keys;  // generated tokens are text (key 0)
    if (!keys.empty()) keys.resize(s.tokens.size(), 0);
    cache_.push_front(CacheEntry{std::move(s.tokens), std::move(keys), std::move(s.seq)});
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
    if (s->h->is_cancelled()) retire(*s, s->h->stop_requested() ? Finish::kStop : Finish::kCancelled);
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
    std::span<const float* const> rows;  // this chunk's image rows, at the same offset
    if (!s->req.embed_rows.empty()) rows = {s->req.embed_rows.data() + s->n_fed_prompt, size_t(n)};
    items.push_back(EngineItem{s->seq.get(),
                               std::span<const int32_t>(s->req.prompt.data() + s->n_fed_prompt, size_t(n)),
                               s->req.prompt_logprobs >= 0, rows});
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
  int64_t n_rows = 0;
  for (auto& it : items) n_rows += it.all_logits ? int64_t(it.tokens.size()) : 1;
  SICKLE_CHECK(int64_t(logits_.size()) == n_rows * vocab, "forward returned {} logits for {} rows",
               logits_.size(), n_rows);
  const auto now = Clock::now();
  n_new_ = 0;
  int64_t row0 = 0;  // the first logits row of item i
  for (size_t i = 0; i < items.size(); ++i) {
    Live& s = *owners[i];
    const int64_t n_item = int64_t(items[i].tokens.size());
    const int64_t item_row0 = row0;
    row0 += items[i].all_logits ? n_item : 1;
    if (items[i].all_logits) {
      // Row j predicts the prompt token after position n_fed_prompt + j.
      for (int64_t j = 0; j < n_item; ++j) {
        const size_t next_pos = s.n_fed_prompt + size_t(j) + 1;
        if (next_pos >= s.req.prompt.size()) break;
        s.prompt_lps.push_back(token_logprobs(logits_.data() + (item_row0 + j) * vocab, vocab,
                                              s.req.prompt[next_pos], s.req.prompt_logprobs));
      }
    }
    s.tokens.insert(s.tokens.end(), items[i].tokens.begin(), items[i].tokens.end());
    const float* row = logits_.data() + (row0 - 1) * vocab;
    if (s.is_prefilling()) {
      s.n_fed_prompt += items[i].tokens.size();
      if (s.is_prefilling()) continue;  // more prompt to read: these logits are not needed
      if (s.req.prompt_logprobs >= 0) {
        std::lock_guard lk(s.h->mu_);
        s.h->prompt_lps_ = s.prompt_lps;
      }
      if (!s.forks.empty()) spawn_forks(s, row, now);
      if (s.req.prompt_only) {
        retire(s, Finish::kLength);
        continue;
      }
    }
    emit(s, row, now);
  }
  if (metrics_ && n_new_) metrics_->on_tokens(n_new_);
  std::erase_if(live_, [](const auto& s) { return s->h->finish() != Finish::kNone; });
}

void Scheduler::emit(Live& s, const float* row, Clock::time_point now) {
  const int64_t vocab = engine_.vocab_size();
  int32_t id;
  if (s.adjuster.active() || s.constraint) {
    // Adjustments, then the structured-output mask (server/structured.h), on a copy: logprobs
    // below describe the model's own distribution (raw row), as vLLM reports them.
    adjusted_.assign(row, row + vocab);
    if (s.adjuster.active()) s.adjuster.apply(adjusted_.data(), vocab);
    if (s.constraint) s.constraint->mask({adjusted_.data(), size_t(vocab)});
    id = s.sampler.sample(adjusted_.data(), vocab);
  } else {
    id = s.sampler.sample(row, vocab);
  }
  if (s.constraint) s.constraint->accept(id);
  s.adjuster.on_output(id);
  GenToken t;
  if (s.req.top_logprobs >= 0) t = token_logprobs(row, vocab, id, s.req.top_logprobs);
  else t.id = id;
  ++s.n_generated;
  ++n_new_;
  s.h->n_generated_ = s.n_generated;
  if (metrics_) {
    if (s.n_generated == 1) metrics_->on_ttft(std::chrono::duration<double>(now - s.arrival).count());
    else metrics_->on_itl(std::chrono::duration<double>(now - s.last_token).count());
  }
  s.last_token = now;
  s.h->push(std::move(t));
  auto has = [id](const std::vector<int32_t>& ids) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  };
  const bool is_stop = (!s.req.ignore_eos && has(s.req.stop_ids)) || has(s.req.stop_token_ids);
  if (is_stop) {
    retire(s, Finish::kStop);
  } else if (s.n_generated >= s.req.max_tokens || int64_t(s.tokens.size()) + 1 > opt_.max_model_len) {
    retire(s, Finish::kLength);
  } else {
    s.next = id;
  }
}

void Scheduler::spawn_forks(Live& parent, const float* row, Clock::time_point now) {
  const uint64_t each = parent.forks_reserved / std::max<size_t>(1, parent.forks.size());
  for (auto& [h, seed] : parent.forks) {
    auto c = std::make_unique<Live>();
    c->h = h;
    c->req = parent.req;
    c->req.sampling.seed = seed;
    c->arrival = parent.arrival;
    c->sampler = Sampler(c->req.sampling);
    c->adjuster = LogitsAdjuster(c->req.adjust, c->req.prompt);
    if (c->req.make_constraint) c->constraint = c->req.make_constraint();  // each choice its own state
    c->reserved = each;
    h->n_cached_ = int64_t(parent.req.prompt.size());  // the prompt was read once, for all choices
    if (parent.req.prompt_logprobs >= 0) {
      std::lock_guard lk(h->mu_);
      h->prompt_lps_ = parent.prompt_lps;
    }
    c->seq = engine_.fork(*parent.seq);
    if (c->seq) {
      c->tokens = parent.tokens;
      c->n_fed_prompt = parent.req.prompt.size();
    } else {
      c->seq = engine_.new_sequence();  // no fork: this choice reads the prompt itself
      h->n_cached_ = 0;
    }
    Live& child = *c;
    live_.push_back(std::move(c));
    if (h->is_cancelled()) {
      retire(child, Finish::kCancelled);
    } else if (!child.is_prefilling()) {
      if (child.req.prompt_only) retire(child, Finish::kLength);
      else emit(child, row, now);
    }
  }
  parent.forks_reserved -= each * parent.forks.size();
  parent.forks.clear();
}

}  // namespace sickle::server
