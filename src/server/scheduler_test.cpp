// Tests of the continuous-batching scheduler on a deterministic fake model whose next token
// hashes the sequence's whole cached history: any cache mix-up changes the output.
#include "server/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <map>
#include <thread>

#include "base/test_temp_dir.h"
#include "model/model.h"
#include "model/test_poke.h"
#include "runtime/thread_pool.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/test_fakes.h"

namespace sickle::server {
namespace {

using testing::fake_reference;
using testing::FakeEngine;

namespace fs = std::filesystem;

constexpr int64_t kVocab = 64;

std::vector<int32_t> make_prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(int32_t((i * 7 + salt * 13 + 1) % kVocab));
  return p;
}

GenRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  GenRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

std::vector<int32_t> drain(GenHandle& h) {
  std::vector<GenToken> toks;
  while (h.next(toks, std::chrono::milliseconds(100))) {
  }
  std::vector<int32_t> ids;
  for (auto& t : toks) ids.push_back(t.id);
  return ids;
}

TEST(Scheduler, SingleRequestMatchesModel) {
  FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  auto p = make_prompt(20, 1);
  auto h = s.submit(greedy(p, 12));
  EXPECT_EQ(drain(*h), fake_reference(p, 12, kVocab));
  EXPECT_EQ(h->finish(), Finish::kLength);
  EXPECT_EQ(h->n_generated(), 12);
}

TEST(Scheduler, StopIdEndsWithStop) {
  FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  auto p = make_prompt(9, 2);
  auto ref = fake_reference(p, 10, kVocab);
  GenRequest r = greedy(p, 10);
  r.stop_ids = {ref[3]};
  auto h = s.submit(r);
  auto out = drain(*h);
  auto expect = fake_reference(p, 10, kVocab, {ref[3]});
  EXPECT_EQ(out, expect);
  EXPECT_EQ(h->finish(), Finish::kStop);
  // ignore_eos keeps going past it.
  r.ignore_eos = true;
  auto h2 = s.submit(r);
  EXPECT_EQ(drain(*h2), ref);
}

// The fake model's log-softmax, computed here independently of token_logprobs().
double fake_logprob(const std::vector<int32_t>& history, int32_t id) {
  std::vector<double> row(kVocab);
  for (int64_t v = 0; v < kVocab; ++v) row[size_t(v)] = double(float(v % 7) * 0.1f);
  row[size_t(testing::fake_next(history, kVocab))] = 5.0;
  double sum = 0;
  for (double x : row) sum += std::exp(x);
  return row[size_t(id)] - std::log(sum);
}

// Prompt logprobs across prefill chunks (3 steps of 8), with the prompt also in the prefix cache
// (it must be read in full anyway), and max_tokens 0 (prompt only).
TEST(Scheduler, PromptLogprobsAndPromptOnly) {
  FakeEngine eng(kVocab);
  SchedulerOptions o;
  o.prefill_chunk = 8;
  Scheduler s(eng, o);
  auto p = make_prompt(20, 4);
  drain(*s.submit(greedy(p, 2)));  // leaves p in the prefix cache
  GenRequest r = greedy(p, 3);
  r.prompt_logprobs = 2;
  auto h = s.submit(r);
  EXPECT_EQ(drain(*h), fake_reference(p, 3, kVocab));
  EXPECT_EQ(h->n_cached(), 0);
  auto lps = h->prompt_logprobs();
  ASSERT_EQ(lps.size(), p.size() - 1);
  for (size_t i = 0; i + 1 < p.size(); ++i) {
    std::vector<int32_t> prefix(p.begin(), p.begin() + ptrdiff_t(i) + 1);
    EXPECT_EQ(lps[i].id, p[i + 1]);
    EXPECT_NEAR(lps[i].logprob, fake_logprob(prefix, p[i + 1]), 1e-5) << i;
    ASSERT_EQ(lps[i].top.size(), 2u);
    EXPECT_EQ(lps[i].top[0].first, testing::fake_next(prefix, kVocab));
    EXPECT_NEAR(lps[i].top[0].second, fake_logprob(prefix, lps[i].top[0].first), 1e-5);
  }
  GenRequest z = greedy(p, 0);
  z.prompt_only = true;
  z.prompt_logprobs = 0;
  auto hz = s.submit(z);
  EXPECT_TRUE(drain(*hz).empty());
  EXPECT_EQ(hz->finish(), Finish::kLength);
  auto zl = hz->prompt_logprobs();
  ASSERT_EQ(zl.size(), p.size() - 1);
  for (size_t i = 0; i < zl.size(); ++i) EXPECT_FLOAT_EQ(zl[i].logprob, lps[i].logprob);
}

// Penalties act in the scheduler: a huge logit_bias on one id makes every greedy token that id;
// stop_token_ids end at it even with ignore_eos; min_tokens delays it.
TEST(Scheduler, LogitsAdjustmentsAndStopTokenIds) {
  FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  auto p = make_prompt(10, 5);
  GenRequest r = greedy(p, 4);
  r.adjust.logit_bias = {{11, 100.0f}};
  EXPECT_EQ(drain(*s.submit(r)), std::vector<int32_t>(4, 11));
  r.stop_token_ids = {11};
  r.ignore_eos = true;
  auto h = s.submit(r);
  EXPECT_EQ(drain(*h), std::vector<int32_t>{11});
  EXPECT_EQ(h->finish(), Finish::kStop);
  r.adjust.min_tokens = 2;
  auto out = drain(*s.submit(r));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_NE(out[0], 11);
  EXPECT_NE(out[1], 11);
  EXPECT_EQ(out[2], 11);
}

// n = 3 choices: the prompt is read once (one prefill, two forks of its cache); each choice is
// what a single request with its seed produces; a fork-less engine gives the same outputs.
TEST(Scheduler, NChoicesShareThePromptAndFollowTheirSeeds) {
  auto p = make_prompt(30, 6);
  std::vector<uint64_t> seeds = {11, 12, 13};
  auto sampled = [&](uint64_t seed) {
    GenRequest r = greedy(p, 8);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    return r;
  };
  std::vector<std::vector<int32_t>> alone;
  {
    FakeEngine eng(kVocab);
    Scheduler s(eng, {});
    for (uint64_t seed : seeds) alone.push_back(drain(*s.submit(sampled(seed))));
  }
  EXPECT_NE(alone[0], alone[1]);  // the seeds matter (temperature 1 over a flat-ish row)
  for (bool can_fork : {true, false}) {
    FakeEngine eng(kVocab);
    eng.can_fork = can_fork;
    SchedulerOptions o;
    o.prefix_cache_entries = 0;
    Scheduler s(eng, o);
    auto hs = s.submit_n(sampled(0), seeds);
    ASSERT_EQ(hs.size(), 3u);
    for (size_t i = 0; i < hs.size(); ++i) EXPECT_EQ(drain(*hs[i]), alone[i]) << i << " fork " << can_fork;
    EXPECT_EQ(eng.n_forks.load(), can_fork ? 2 : 0);
    EXPECT_EQ(eng.n_new_sequences.load(), can_fork ? 1 : 3);
    if (can_fork) {
      EXPECT_EQ(hs[1]->n_cached(), int64_t(p.size()));
    }
  }
  // More choices than slots: refused naming n.
  FakeEngine eng(kVocab);
  SchedulerOptions o;
  o.max_num_seqs = 2;
  Scheduler s(eng, o);
  try {
    s.submit_n(sampled(0), seeds);
    ADD_FAILURE();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param, "n");
  }
}

// A generation its caller stopped (stop string) ends as kStop, not cancelled, wherever it was
// (waiting, prefilling or decoding: the engine is held so it cannot finish first).
TEST(Scheduler, CallerStopFinishesAsStop) {
  FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  eng.hold = true;
  auto h = s.submit(greedy(make_prompt(5, 7), 100));
  h->stop();
  eng.hold = false;
  EXPECT_LE(drain(*h).size(), 1u);
  EXPECT_EQ(h->finish(), Finish::kStop);
}

// The scheduler may run a request to its length before the caller reads the tokens where its stop
// string is (a loaded machine): the caller's stop then relabels the finish, and /metrics counts
// the `stop` the client is told, not `length`.
TEST(Scheduler, StopAfterALengthEndCountsAsStop) {
  FakeEngine eng(kVocab);
  Metrics m("m");
  Scheduler s(eng, {}, &m);
  auto h = s.submit(greedy(make_prompt(5, 3), 4));
  EXPECT_EQ(drain(*h).size(), 4u);
  ASSERT_EQ(h->finish(), Finish::kLength);
  auto text = m.render({});
  EXPECT_NE(text.find("finished_reason=\"length\"} 1"), std::string::npos) << text;
  h->stop();
  EXPECT_EQ(h->finish(), Finish::kStop);
  text = m.render({});
  EXPECT_NE(text.find("finished_reason=\"stop\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("finished_reason=\"length\"} 0"), std::string::npos) << text;
  h->stop();  // twice: counted once
  EXPECT_NE(m.render({}).find("finished_reason=\"stop\"} 1"), std::string::npos);
}

// The equivalence: a request alone == the same request among 7 concurrent others.
TEST(Scheduler, BatchingDoesNotChangeOutputs) {
  FakeEngine eng(kVocab);
  SchedulerOptions o;
  o.max_num_seqs = 8;
  o.prefill_chunk = 16;
  Scheduler s(eng, o);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(make_prompt(5 + 9 * i, 10 + i));
  std::vector<std::shared_ptr<GenHandle>> hs;
  for (auto& p : prompts) hs.push_back(s.submit(greedy(p, 24)));
  for (size_t i = 0; i < hs.size(); ++i)
    EXPECT_EQ(drain(*hs[i]), fake_reference(prompts[i], 24, kVocab)) << i;
  EXPECT_GT(s.max_batch_seen(), 4);  // they really ran together
}

TEST(Scheduler, ChunkedPrefillKeepsDecodersStreaming) {
  FakeEngine eng(kVocab, 4096, 500);
  SchedulerOptions o;
  o.prefill_chunk = 8;
  Scheduler s(eng, o);
  auto short_p = make_prompt(4, 3);
  auto long_p = make_prompt(200, 4);
  // Both are queued before the first step ends (the engine holds it), so h1 (60 tokens to
  // generate) decodes in every one of h2's 25 prompt-chunk steps however the threads are
  // scheduled. (Waiting for h1's first token instead let a loaded machine run h1 to its end
  // before h2 arrived, and kept only the first of the tokens that one next() returned.)
  eng.hold = true;
  auto h1 = s.submit(greedy(short_p, 60));
  auto h2 = s.submit(greedy(long_p, 5));
  eng.hold = false;
  auto out2 = drain(*h2);
  auto out1 = drain(*h1);
  EXPECT_EQ(out1, fake_reference(short_p, 60, kVocab));
  EXPECT_EQ(out2, fake_reference(long_p, 5, kVocab));
  // No step fed more than the chunk of prompt, and some steps mixed a decode with a prompt chunk.
  int mixed = 0;
  std::lock_guard lk(eng.mu);
  for (auto& st : eng.steps) {
    int64_t prompt_tokens = 0;
    bool has_decode = false;
    for (size_t i = 0; i < st.item_sizes.size(); ++i) {
      if (st.item_sizes[i] > 1) prompt_tokens += st.item_sizes[i];
      has_decode |= st.item_sizes[i] == 1;
    }
    EXPECT_LE(prompt_tokens, 8);
    mixed += has_decode && prompt_tokens > 0;
  }
  EXPECT_GE(mixed, 200 / 8 - 2);
}

TEST(Scheduler, PrefixCacheReusesSharedPrompt) {
  FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  auto sys = make_prompt(50, 5);
  auto a = sys, b = sys;
  a.insert(a.end(), {1, 2, 3});
  b.insert(b.end(), {4, 5, 6, 7});
  auto ha = s.submit(greedy(a, 6));
  EXPECT_EQ(drain(*ha), fake_reference(a, 6, kVocab));
  EXPECT_EQ(ha->n_cached(), 0);
  auto hb = s.submit(greedy(b, 6));
  EXPECT_EQ(drain(*hb), fake_reference(b, 6, kVocab));  // truncation to the shared prefix was right
  EXPECT_EQ(hb->n_cached(), 50);
  // The same prompt again: all but the last prompt token come from the cache.
  auto hb2 = s.submit(greedy(b, 6));
  EXPECT_EQ(drain(*hb2), fake_reference(b, 6, kVocab));
  EXPECT_EQ(hb2->n_cached(), int64_t(b.size()) - 1);
  EXPECT_EQ(eng.n_new_sequences.load(), 1);
  // Continuing the conversation (prompt = old prompt + answer + more) reuses it all.
  auto ans = fake_reference(b, 6, kVocab);
  auto c = b;
  c.insert(c.end(), ans.begin(), ans.end() - 1);  // what the cache holds
  c.insert(c.end(), {9, 9});
  auto hc = s.submit(greedy(c, 3));
  EXPECT_EQ(drain(*hc), fake_reference(c, 3, kVocab));
  EXPECT_EQ(hc->n_cached(), int64_t(b.size() + ans.size() - 1));
}

// Image positions (server/media.h): the same placeholder token whatever the image, told apart by
// their content keys. The same image reuses the cached prefix; another image shares only the
// text before it. Chunked prefill hands each chunk the rows at its own offset.
TEST(Scheduler, PrefixCacheKeysImagePositionsOnContent) {
  FakeEngine eng(kVocab);
  SchedulerOptions o;
  o.prefill_chunk = 4;  // the 14-token prompt is read in 4 chunks
  Scheduler s(eng, o);
  const int32_t pad = 9;
  std::vector<float> img_a(6), img_b(6);
  auto request = [&](const std::vector<float>& img, uint64_t key) {
    GenRequest g = greedy(make_prompt(5, 3), 3);
    g.embed_rows.assign(5, nullptr);
    g.prompt_keys.assign(5, 0);
    for (size_t j = 0; j < img.size(); ++j) {
      g.prompt.push_back(pad);
      g.embed_rows.push_back(&img[j]);
      g.prompt_keys.push_back(key);
    }
    for (int32_t t : {1, 2, 3}) {
      g.prompt.push_back(t);
      g.embed_rows.push_back(nullptr);
      g.prompt_keys.push_back(0);
    }
    return g;
  };
  auto rows_fed = [&] {
    std::lock_guard lk(eng.mu);
    std::vector<const float*> out;
    for (auto& st : eng.steps) out.insert(out.end(), st.rows.begin(), st.rows.end());
    eng.steps.clear();
    return out;
  };
  const GenRequest a = request(img_a, 0xA), b = request(img_b, 0xB);
  auto h1 = s.submit(a);
  drain(*h1);
  EXPECT_EQ(h1->n_cached(), 0);
  EXPECT_EQ(rows_fed(), a.embed_rows);  // every position's row, across the chunks
  auto h2 = s.submit(a);
  drain(*h2);
  EXPECT_EQ(h2->n_cached(), int64_t(a.prompt.size()) - 1);  // the same image: all but the last token
  EXPECT_EQ(rows_fed(), std::vector<const float*>{nullptr});
  auto h3 = s.submit(b);
  drain(*h3);
  EXPECT_EQ(h3->n_cached(), 5);  // another image: only the text before it
  EXPECT_EQ(rows_fed(), std::vector<const float*>(b.embed_rows.begin() + 5, b.embed_rows.end()));
}

// A request with `n` image positions (after 3 text tokens) whose rows a prepare job writes
// (value base + j at row j), as server/media.h's attach_images builds it; `job` runs first.
GenRequest image_request(int salt, size_t n, float base, std::function<void(ThreadPool*)> job = {}) {
  GenRequest g = greedy(make_prompt(3, salt), 3);
  auto rows = std::make_shared<std::vector<float>>(n, 0.0f);
  g.embed_rows.assign(3, nullptr);
  g.prompt_keys.assign(3, 0);
  for (size_t j = 0; j < n; ++j) {
    g.prompt.push_back(9);
    g.embed_rows.push_back(rows->data() + j);
    g.prompt_keys.push_back(uint64_t(salt));
  }
  g.prepare.push_back([rows, base, job](ThreadPool* pool) {
    if (job) job(pool);
    for (size_t j = 0; j < rows->size(); ++j) (*rows)[j] = base + float(j);
  });
  g.embed_storage = rows;
  return g;
}

// The image tower's jobs (GenRequest::prepare) run on the inference thread — the one that runs
// the model's steps — with the engine's pool, never on the submitting thread; each request's
// rows reach the model written by its own job.
TEST(Scheduler, PrepareJobsRunOnTheInferenceThreadWithTheEnginesPool) {
  ThreadPool pool(2);
  FakeEngine eng(kVocab);
  eng.pool_ = &pool;
  Scheduler s(eng, {});
  std::mutex mu;
  std::vector<std::pair<std::thread::id, ThreadPool*>> seen;
  auto record = [&](ThreadPool* p) {
    std::lock_guard lk(mu);
    seen.emplace_back(std::this_thread::get_id(), p);
  };
  GenRequest a = image_request(1, 4, 10.0f, record), b = image_request(2, 3, 20.0f, record);
  const std::vector<const float*> rows_a = a.embed_rows, rows_b = b.embed_rows;
  const std::vector<int32_t> prompt_a = a.prompt;
  auto ha = s.submit(std::move(a));
  auto hb = s.submit(std::move(b));
  EXPECT_EQ(drain(*ha), fake_reference(prompt_a, 3, kVocab));
  drain(*hb);
  EXPECT_EQ(ha->finish(), Finish::kLength);
  EXPECT_EQ(hb->finish(), Finish::kLength);
  EXPECT_EQ(s.n_prepared(), 2);
  std::thread::id fwd;
  std::map<const float*, float> fed;  // row -> its first float when the model read it
  {
    std::lock_guard lk(eng.mu);
    fwd = eng.forward_thread;
    for (auto& st : eng.steps)
      for (size_t k = 0; k < st.rows.size(); ++k)
        if (st.rows[k]) fed[st.rows[k]] = st.row_values[k];
  }
  ASSERT_EQ(seen.size(), 2u);
  for (auto& [tid, p] : seen) {
    EXPECT_EQ(tid, fwd);  // the thread of the model's steps
    EXPECT_NE(tid, std::this_thread::get_id());
    EXPECT_EQ(p, &pool);
  }
  ASSERT_EQ(fed.size(), 7u);
  for (size_t j = 0; j < 4; ++j) EXPECT_EQ(fed[rows_a[3 + j]], 10.0f + float(j));
  for (size_t j = 0; j < 3; ++j) EXPECT_EQ(fed[rows_b[3 + j]], 20.0f + float(j));
}

// One prepare job per loop turn: a running stream gets a step between any two jobs (it waits
// for one encode at most); a job that throws fails its request only.
TEST(Scheduler, PrepareJobsInterleaveWithStepsAndFailAlone) {
  FakeEngine eng(kVocab, 100000);  // >= 200 us a step: the stream cannot end during the test
  Scheduler s(eng, {});
  auto running = s.submit(greedy(make_prompt(4, 5), 100000 - 20));
  std::vector<GenToken> first;
  while (first.empty()) running->next(first, std::chrono::milliseconds(100));  // decoding now
  // n_steps() when each job ran
  std::vector<int64_t> steps_at;
  GenRequest b = image_request(2, 2, 1.0f);
  b.prepare.clear();
  for (int k = 0; k < 3; ++k) b.prepare.push_back([&](ThreadPool*) { steps_at.push_back(s.n_steps()); });
  auto hb = s.submit(std::move(b));
  GenRequest c = image_request(3, 2, 1.0f, [](ThreadPool*) { throw Error("the tower broke"); });
  auto hc = s.submit(std::move(c));
  drain(*hb);
  drain(*hc);
  EXPECT_EQ(hb->finish(), Finish::kLength);
  ASSERT_EQ(steps_at.size(), 3u);
  EXPECT_LT(steps_at[0], steps_at[1]);
  EXPECT_LT(steps_at[1], steps_at[2]);
  EXPECT_EQ(hc->finish(), Finish::kError);
  EXPECT_NE(hc->error().find("the tower broke"), std::string::npos) << hc->error();
  EXPECT_EQ(running->finish(), Finish::kNone);  // unharmed
  running->cancel();
  drain(*running);
}

// A client that leaves before its image is encoded: the job never runs; one that leaves while
// it runs: the request is dropped after it, never fed. Either way its rows are freed.
TEST(Scheduler, ClientGoneBeforeOrDuringItsEncodeLeaksNothing) {
  FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  eng.hold = true;
  auto ha = s.submit(greedy(make_prompt(4, 1), 2));
  for (int i = 0; i < 100000 && eng.n_forward_calls == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GT(eng.n_forward_calls.load(), 0);  // the inference thread is inside a step
  std::atomic<int> ran{0};
  GenRequest b = image_request(2, 2, 1.0f, [&](ThreadPool*) { ++ran; });
  std::weak_ptr<const void> rows_b = b.embed_storage;
  auto hb = s.submit(std::move(b));
  hb->cancel();
  eng.hold = false;
  drain(*ha);
  drain(*hb);
  EXPECT_EQ(hb->finish(), Finish::kCancelled);
  EXPECT_EQ(ran.load(), 0);

  std::promise<std::shared_ptr<GenHandle>> handle;
  auto future = handle.get_future().share();
  GenRequest c = image_request(3, 2, 1.0f, [future](ThreadPool*) { future.get()->cancel(); });
  std::weak_ptr<const void> rows_c = c.embed_storage;
  const auto* row_c = c.embed_rows[3];
  {
    std::lock_guard lk(eng.mu);
    eng.steps.clear();
  }
  auto hc = s.submit(std::move(c));
  handle.set_value(hc);
  drain(*hc);
  EXPECT_EQ(hc->finish(), Finish::kCancelled);
  EXPECT_EQ(s.n_prepared(), 1);  // c's job ran (b's never did)
  s.stop();                      // the inference thread is gone: nothing can hold the rows now
  EXPECT_TRUE(rows_b.expired());
  EXPECT_TRUE(rows_c.expired());
  std::lock_guard lk(eng.mu);
  for (auto& st : eng.steps)
    for (const float* r : st.rows) EXPECT_NE(r, row_c);
}

TEST(Scheduler, CancelFreesSequence) {
  FakeEngine eng(kVocab, 100000, 1000);
  Scheduler s(eng, {});
  auto h = s.submit(greedy(make_prompt(10, 6), 100000 - 20));
  std::vector<GenToken> toks;
  while (toks.size() < 3) h->next(toks, std::chrono::milliseconds(100));
  h->cancel();
  drain(*h);
  EXPECT_EQ(h->finish(), Finish::kCancelled);
  for (int i = 0; i < 100 && s.gauges().running > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto g = s.gauges();
  EXPECT_EQ(g.running, 0);
  EXPECT_EQ(g.prefix_cache_entries, 0);  // a cancelled sequence is not kept
  EXPECT_EQ(g.kv_reserved_bytes, 0u);
}

TEST(Scheduler, RefusesWhatCannotFitAndQueuesWhatMust) {
  FakeEngine eng(kVocab, 128);
  SchedulerOptions o;
  o.kv_budget_bytes = 100 * 8;  // 100 tokens of cache
  o.prefix_cache_entries = 0;
  Scheduler s(eng, o);
  try {
    s.submit(greedy(make_prompt(128, 1), 1));
    FAIL() << "accepted a prompt as long as the context";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "context_length_exceeded");
  }
  try {
    s.submit(greedy(make_prompt(100, 1), 50));
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.code, "context_length_exceeded");
  }
  try {
    s.submit(greedy(make_prompt(90, 1), 20));  // fits the context, not the KV budget
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.code, "kv_budget_exceeded");
  }
  EXPECT_THROW(s.submit(greedy({}, 1)), ApiError);
  EXPECT_THROW(s.submit(greedy({1, 999}, 1)), ApiError);
  // Two requests of 60 tokens each: the second waits for the first, then both are right.
  auto p1 = make_prompt(30, 2), p2 = make_prompt(30, 3);
  auto h1 = s.submit(greedy(p1, 30));
  auto h2 = s.submit(greedy(p2, 30));
  EXPECT_EQ(drain(*h1), fake_reference(p1, 30, kVocab));
  EXPECT_EQ(drain(*h2), fake_reference(p2, 30, kVocab));
  EXPECT_EQ(s.max_batch_seen(), 1);
  // Unset max_tokens = what the context (128) and the KV budget (100 tokens) leave.
  auto h3 = s.submit(greedy(make_prompt(10, 4), 0));
  EXPECT_EQ(drain(*h3).size(), 100u - 10u);
}

TEST(Scheduler, ForwardFailureFailsRequestNotServer) {
  FakeEngine eng(kVocab);
  eng.poison = 63;
  Scheduler s(eng, {});
  auto bad = s.submit(greedy({1, 63, 2}, 4));
  drain(*bad);
  EXPECT_EQ(bad->finish(), Finish::kError);
  EXPECT_NE(bad->error().find("poisoned"), std::string::npos);
  auto p = make_prompt(5, 9);
  auto good = s.submit(greedy(p, 4));
  EXPECT_EQ(drain(*good), fake_reference(p, 4, kVocab));
}

// Activations that stop being finite (NonFiniteError naming some items of a step): those
// requests end with an error naming the layer; the other requests of the same step were not
// touched by the failed step and run on to exactly their outputs alone.
TEST(Scheduler, NonFiniteFailsOnlyTheRequestsItNames) {
  constexpr int64_t V = 4000;  // room for a token no good request ever feeds
  FakeEngine eng(V);
  Scheduler s(eng, {});
  const auto p1 = make_prompt(6, 1), p2 = make_prompt(9, 2);
  const auto r1 = fake_reference(p1, 40, V), r2 = fake_reference(p2, 40, V);
  int32_t bad = 100;  // above the ids of the bad prompt's other tokens
  while (std::find(r1.begin(), r1.end(), bad) != r1.end() ||
         std::find(r2.begin(), r2.end(), bad) != r2.end() ||
         std::find(p1.begin(), p1.end(), bad) != p1.end() || std::find(p2.begin(), p2.end(), bad) != p2.end())
    ++bad;
  eng.nonfinite = bad;
  // The first step (h1's prefill) waits until all three are queued, so the bad prompt is
  // prefilled in a step with h1's decoding and h2's prefill.
  eng.hold = true;
  auto h1 = s.submit(greedy(p1, 40));
  auto h2 = s.submit(greedy(p2, 40));
  auto hb = s.submit(greedy({1, 2, bad, 3}, 40));
  eng.hold = false;
  EXPECT_EQ(drain(*h1), r1);
  EXPECT_EQ(drain(*h2), r2);
  EXPECT_TRUE(drain(*hb).empty());
  EXPECT_EQ(h1->finish(), Finish::kLength);
  EXPECT_EQ(h2->finish(), Finish::kLength);
  EXPECT_EQ(hb->finish(), Finish::kError);
  EXPECT_EQ(hb->error(), "layer 3 (moe output): non-finite activation (NaN) at token 2");
  EXPECT_GE(s.max_batch_seen(), 3);
}

// The real model with a NaN weight: each request ends with the error naming the layer, and the
// scheduler keeps taking requests.
TEST(Scheduler, RealModelWithANanWeightFailsRequestsNamingTheLayer) {
  test_util::TempDir t("sickle-sched-nan");
  const fs::path demo = fs::path(SICKLE_SOURCE_DIR) / "models/brown-kimi";
  test_util::poked_copy(demo, t.path / "m",
                        Checkpoint::open(demo)->names().layer(2, "self_attn.o_proj.weight"), 0,
                        test_util::Poke::kNaN);
  ModelOptions mo;
  mo.n_threads = 2;
  auto model = Model::load(t.path / "m", mo);
  auto eng = make_engine(*model);
  Scheduler s(*eng, {});
  for (int i = 0; i < 2; ++i) {
    auto h = s.submit(greedy({5, 17, 300, int32_t(40 + i)}, 4));
    EXPECT_TRUE(drain(*h).empty());
    EXPECT_EQ(h->finish(), Finish::kError);
    EXPECT_EQ(h->error().rfind("layer 2 (attention output): non-finite activation (NaN) at token ", 0), 0u)
        << h->error();
  }
}

TEST(Scheduler, LogprobsAreNormalized) {
  FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  GenRequest r = greedy(make_prompt(5, 1), 3);
  r.top_logprobs = 3;
  auto h = s.submit(r);
  std::vector<GenToken> toks;
  while (h->next(toks, std::chrono::milliseconds(100))) {
  }
  ASSERT_EQ(toks.size(), 3u);
  for (auto& t : toks) {
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_EQ(t.top[0].first, t.id);  // greedy picks the best
    EXPECT_FLOAT_EQ(t.top[0].second, t.logprob);
    EXPECT_LT(t.logprob, 0.0f);
    EXPECT_GE(t.top[0].second, t.top[1].second);
    // One logit of 5 against 63 of at most 0.6: p(best) = e^5 / (e^5 + sum e^bg).
    double bg = 0;
    for (int v = 0; v < kVocab; ++v)
      if (v != t.id) bg += std::exp((v % 7) * 0.1);
    EXPECT_NEAR(t.logprob, std::log(std::exp(5.0) / (std::exp(5.0) + bg)), 1e-4);
  }
}

}  // namespace
}  // namespace sickle::server

namespace sickle::server {
namespace {

// No silent "fair share" cap (issue 16.6): an unset max_tokens runs to what the context and
// the whole KV budget leave; two such requests run one after the other, both to the limit.
TEST(Scheduler, UnsetMaxTokensRunsToTheLimitAndQueues) {
  testing::FakeEngine eng(kVocab, 4096, 0);
  SchedulerOptions o;
  o.max_num_seqs = 4;
  o.max_model_len = 600;
  o.kv_budget_bytes = 1000 * 8;  // 1000 tokens
  Scheduler s(eng, o);
  auto p1 = make_prompt(10, 1), p2 = make_prompt(10, 2);
  auto h1 = s.submit(greedy(p1, 0));
  auto h2 = s.submit(greedy(p2, 0));
  EXPECT_EQ(drain(*h1), fake_reference(p1, 590, kVocab));  // max_model_len 600 - prompt 10
  EXPECT_EQ(drain(*h2), fake_reference(p2, 590, kVocab));
  EXPECT_EQ(h1->finish(), Finish::kLength);
  EXPECT_EQ(s.max_batch_seen(), 1);  // 2 x 600 > 1000: the second waited
}

}  // namespace
}  // namespace sickle::server
