// sickle/server/scheduler.h — continuous batching: one inference thread owns the model.
//
// HTTP threads submit() a tokenized request and read its tokens from a GenHandle (a
// thread-safe channel). Each step of the inference thread runs every live sequence together
// (one Model::forward over several StepItems): running sequences decode one token, sequences
// still in prefill take a chunk of their prompt (at most `prefill_chunk` prompt tokens per step
// in total, so running sequences keep streaming while a long prompt is read). Waiting requests
// are admitted as soon as a slot (--max-num-seqs) and KV budget are free, FIFO.
//
// KV budget: a request reserves (prompt + max_tokens) tokens of cache at admission, so a
// running sequence never runs out of cache. A request that could never fit is refused at
// submit(); one that does not fit now waits. A request without max_tokens may run to the
// context limit (vLLM): it reserves that, and waits while the budget is short.
//
// Prefix cache: a finished sequence's cache is kept (LRU, counted in the budget) with the tokens
// it holds (and their content keys: image positions carry a hash of the image); a new request
// takes the entry sharing the longest (token, key) prefix with its prompt, truncates
// it to the shared length and prefills only the rest. A cancelled request (client gone) frees
// its cache at once.
//
// Preparation (images): a request may carry jobs to run before it is admitted (GenRequest::
// prepare: the vision tower filling its image rows, server/media.h). The inference thread runs
// them with the engine's thread pool, one job per loop turn between steps (FIFO over the waiting
// requests), as vLLM's model runner runs its encoder before the decoder step: the model's threads
// do the encode, nothing runs beside the decode, and running streams wait at most one job. A
// request whose client left before its jobs ran is dropped without running them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "grammar/token_constraint.h"
#include "model/sampler.h"
#include "server/metrics.h"

namespace sickle {
class Model;
class ThreadPool;
}  // namespace sickle

namespace sickle::server {

// ---- the model as the scheduler sees it (real adapter: make_engine; tests use a fake) ----

class EngineSequence {
 public:
  virtual ~EngineSequence() = default;
  virtual int64_t n_past() const = 0;
  virtual void truncate(int64_t n_tokens) = 0;
  virtual uint64_t cache_bytes() const = 0;
};

struct EngineItem {
  EngineSequence* seq = nullptr;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // a logits row for every token of the item (else the last only)
  // Per token: a row of hidden floats that replaces its embed_tokens row (an image position), or
  // null; empty = all text (model.h StepItem::embed_rows).
  std::span<const float* const> embed_rows = {};
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::unique_ptr<EngineSequence> new_sequence() = 0;
  // A copy of `seq` (its cache), for n > 1 choices sharing their prompt; nullptr = not supported
  // (each choice then reads the prompt itself).
  virtual std::unique_ptr<EngineSequence> fork(const EngineSequence& /*seq*/) { return nullptr; }
  // Appends each item's tokens to its sequence; logits = [rows, vocab]: per item in order, a row
  // for each of its tokens when all_logits, else one row (its last position).
  // May throw NonFiniteError (model/model.h) changing no sequence: the requests of the items it
  // names fail, the others run again next step. Any other exception fails the whole step.
  virtual void forward(std::span<const EngineItem> items, std::vector<float>& logits) = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_context() const = 0;
  virtual uint64_t kv_bytes_per_token() const = 0;
  // The threads forward() computes with (GenRequest::prepare jobs get them); null = none.
  virtual ThreadPool* pool() { return nullptr; }
};

std::unique_ptr<Engine> make_engine(Model& model);

// ---- requests ----

struct GenRequest {
  std::vector<int32_t> prompt;
  // Images (server/media.h): per prompt token, its embedding row or null (text), and its content
  // key: 0 for text, a hash of the image's pixels at its positions. The prefix cache matches
  // (token, key), so a cached image is reused only for the same image. Both empty = all text;
  // else both as long as the prompt. `embed_storage` owns the rows.
  std::vector<const float*> embed_rows;
  std::vector<uint64_t> prompt_keys;
  std::shared_ptr<const void> embed_storage;
  // Jobs run on the inference thread with Engine::pool() before admission (in order, one per
  // loop turn; see the header comment): they fill the rows embed_rows points at. A job that
  // throws ends the request with kError and its message.
  std::vector<std::function<void(ThreadPool*)>> prepare;
  int64_t max_tokens = 0;  // <= 0: what the context (and the whole KV budget) leave
  SamplingParams sampling;
  LogitsAdjust adjust;                  // penalties, logit_bias, min_tokens (its blocked ids: filled in
                                        // at admission from stop_ids + stop_token_ids)
  std::vector<int32_t> stop_ids;        // end generation (EOS and the like; ignore_eos disables them)
  std::vector<int32_t> stop_token_ids;  // the request's own stop ids (vLLM: even with ignore_eos)
  bool ignore_eos = false;
  int64_t top_logprobs = -1;     // -1: no logprobs; 0: the chosen token's; k: and the top k
  int64_t prompt_logprobs = -1;  // as top_logprobs, for each prompt token after the first (the
                                 // prompt is then read in full, not taken from the prefix cache)
  bool prompt_only = false;      // max_tokens 0: read the prompt, generate nothing (kLength)
  // Structured output (server/structured.h): a constraint per sequence masks the logits right
  // before sampling (logprobs then describe the constrained distribution).
  std::function<std::unique_ptr<grammar::TokenConstraint>()> make_constraint;
};

struct GenToken {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (id, logprob), best first
};

// The logprob of `id` under the log-softmax of `row`, and the `top` most likely (best first,
// ties: lower id).
GenToken token_logprobs(const float* row, int64_t vocab, int32_t id, int64_t top);

enum class Finish { kNone, kStop, kLength, kCancelled, kError };
const char* finish_name(Finish f);

class GenHandle {
 public:
  // Waits up to `timeout` for tokens; appends them to `out`. Returns false once the request has
  // finished and every token was delivered.
  bool next(std::vector<GenToken>& out, std::chrono::milliseconds timeout);
  // The client is gone: the scheduler drops the sequence and frees its cache.
  void cancel() { cancelled_ = true; }
  // The caller ended the generation itself (a stop string matched, the tool parser is done): as
  // cancel(), but it finishes as kStop (counted as `stop`, its cache kept for prefix reuse).
  // When the scheduler already ended the request by length (it ran ahead of the caller, which
  // found the stop string in tokens already generated), the finish becomes kStop and the
  // metrics are corrected, so `/metrics` counts what the client is told.
  void stop();
  bool is_cancelled() const { return cancelled_; }
  bool stop_requested() const { return stop_requested_; }
  Finish finish() const;
  std::string error() const;
  int64_t n_prompt() const { return n_prompt_; }
  // GenRequest::prompt_logprobs: one entry per prompt token after the first, complete once the
  // first generated token (or the end) was delivered.
  std::vector<GenToken> prompt_logprobs() const;
  int64_t n_cached() const { return n_cached_.load(); }
  int64_t n_generated() const { return n_generated_.load(); }

 private:
  friend class Scheduler;
  void push(GenToken t);
  // Returns the finish recorded (a length end of a stopped request is a stop). With e2e_seconds
  // the finish is counted in the metrics.
  Finish end(Finish f, std::string error = {}, std::optional<double> e2e_seconds = std::nullopt);
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenToken> tokens_;
  std::vector<GenToken> prompt_lps_;
  Finish finish_ = Finish::kNone;
  std::string error_;
  std::atomic<bool> cancelled_{false}, stop_requested_{false};
  int64_t n_prompt_ = 0;
  Metrics* metrics_ = nullptr;  // for stop() after a length end
  std::atomic<int64_t> n_cached_{0}, n_generated_{0};
};

struct SchedulerOptions {
  int64_t max_num_seqs = 8;
  int64_t max_model_len = 0;     // 0 = the engine's max context
  int64_t prefill_chunk = 256;   // prompt tokens per step, over all sequences
  uint64_t kv_budget_bytes = 0;  // 0 = room for max_num_seqs sequences of max_model_len
  int64_t max_waiting = 1024;    // queue bound; submit() refuses past it (503)
  int64_t prefix_cache_entries = 32;
};

class Scheduler {
  using Clock = std::chrono::steady_clock;

 public:
  Scheduler(Engine& engine, SchedulerOptions options, Metrics* metrics = nullptr);
  ~Scheduler();  // stops the inference thread; pending requests end with kCancelled

  // Throws ApiError: empty prompt, ids out of range, prompt too long for max_model_len (400),
  // request larger than the whole KV budget (400), queue full (503).
  std::shared_ptr<GenHandle> submit(GenRequest req);
  // n choices of one prompt (OpenAI's `n`): the prompt is read once and its cache forked for the
  // others; choice i samples with seeds[i]. All n are admitted together (slots and KV budget for
  // n); n > max_num_seqs or n reservations over the whole budget are refused (400).
  std::vector<std::shared_ptr<GenHandle>> submit_n(GenRequest req, const std::vector<uint64_t>& seeds);
  void stop();

  const SchedulerOptions& options() const { return opt_; }
  SchedulerGauges gauges() const;
  // Steps run so far and the largest batch seen (for tests).
  int64_t n_steps() const { return n_steps_.load(); }
  int64_t max_batch_seen() const { return max_batch_.load(); }
  int64_t n_prepared() const { return n_prepared_.load(); }  // prepare jobs run so far

 private:
  struct Live;
  struct CacheEntry {
    std::vector<int32_t> tokens;  // what the cache holds
    std::vector<uint64_t> keys;   // their content keys (GenRequest::prompt_keys; missing = 0)
    std::unique_ptr<EngineSequence> seq;
  };
  struct Waiting {
    std::shared_ptr<GenHandle> h;
    GenRequest req;
    std::chrono::steady_clock::time_point arrival;
    std::vector<std::pair<std::shared_ptr<GenHandle>, uint64_t>> forks;  // the other choices, their seeds
    // req.prepare jobs done
    size_t n_prepared = 0;
    bool ready() const { return n_prepared == req.prepare.size(); }
  };

  void loop();
  void admit();
  // Runs the next GenRequest::prepare job of the first waiting request that has one; false if
  // there was none.
  bool prepare_one();
  // Ends a waiting request (and its pending choices) without running it.
  static void end_waiting(Waiting& w, Finish f, const std::string& error = {});
  void step();
  void retire(Live& s, Finish f, const std::string& error = {});
  // Samples the next token of `s` from its logits row, delivers it and retires `s` if done.
  void emit(Live& s, const float* row, Clock::time_point now);
  // The parent's prompt is read: its pending choices start from a copy of its cache.
  void spawn_forks(Live& parent, const float* row, Clock::time_point now);
  uint64_t reserve_of(const GenRequest& r) const;

  Engine& engine_;
  SchedulerOptions opt_;
  Metrics* metrics_;
  uint64_t bytes_per_token_ = 0;

  mutable std::mutex mu_;  // guards inbox_, stop_ and the gauges copy
  std::condition_variable cv_;
  std::deque<Waiting> inbox_;
  bool stop_ = false;
  SchedulerGauges gauges_;

  // Owned by the inference thread.
  std::deque<Waiting> waiting_;
  std::vector<std::unique_ptr<Live>> live_;
  std::list<CacheEntry> cache_;  // front = most recently used
  uint64_t reserved_bytes_ = 0;  // live reservations + cache entries
  std::vector<float> logits_;
  std::vector<float> adjusted_;  // one row after LogitsAdjuster
  int64_t n_new_ = 0;            // tokens generated in the current step

  std::atomic<int64_t> n_steps_{0}, max_batch_{0}, n_inbox_{0}, n_prepared_{0};
  std::thread thread_;
};

}  // namespace sickle::server
