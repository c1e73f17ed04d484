// bench/serve_bench.cpp — the scheduler and engine without HTTP: aggregate decode throughput
// at 1, 2, 4, 8 concurrent sequences (continuous batching) and the raw cost of one batched
// decode step, so the HTTP-level figures of bench/serve_bench.mjs can be attributed.
//
//   serve_bench MODEL_DIR [max_tokens=64] [prompt_tokens=32] [threads=0]
//   env SICKLE_FUSE_SHARED=0: shared experts in their own call (ModelOptions::fuse_shared_experts
//   off), for A/B runs of the same binary.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "model/model.h"
#include "server/scheduler.h"

using namespace sickle;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: serve_bench MODEL_DIR [max_tokens=64] [prompt_tokens=32] [threads=0]\n");
    return 2;
  }
  const int64_t max_tokens = argc > 2 ? std::atoll(argv[2]) : 64;
  const int64_t prompt_tokens = argc > 3 ? std::atoll(argv[3]) : 32;
  ModelOptions mo;
  mo.n_threads = argc > 4 ? std::atoi(argv[4]) : 0;
  if (const char* f = std::getenv("SICKLE_FUSE_SHARED")) mo.fuse_shared_experts = std::string(f) != "0";
  mo.max_context = 4096;
  auto model = Model::load(argv[1], mo);
  auto engine = server::make_engine(*model);
  const int64_t vocab = model->vocab_size();
  auto prompt = [&](int salt) {
    std::vector<int32_t> p;
    for (int64_t i = 0; i < prompt_tokens; ++i)
      p.push_back(int32_t((i * 131 + salt * 7919 + 17) % (vocab - 300)));
    return p;
  };

  // Raw engine: one decode step of B sequences (each with prompt_tokens of context).
  std::printf("raw decode step (engine only):\n| batch | ms/step | tok/s |\n|---:|---:|---:|\n");
  double tps1 = 0;
  for (int b : {1, 2, 4, 8}) {
    std::vector<std::unique_ptr<server::EngineSequence>> seqs;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<float> logits;
    for (int i = 0; i < b; ++i) {
      seqs.push_back(engine->new_sequence());
      prompts.push_back(prompt(i));
      server::EngineItem it{seqs.back().get(), prompts.back()};
      engine->forward(std::span<const server::EngineItem>(&it, 1), logits);
    }
    // Each sequence feeds its own token, a new one every step, as in real decoding: the same
    // token in every row would route every row to the same experts and flatter batching.
    std::vector<int32_t> tok(static_cast<size_t>(b));
    const int n_steps = 16;
    auto t0 = Clock::now();
    for (int s = 0; s < n_steps; ++s) {
      std::vector<server::EngineItem> items;
      for (int i = 0; i < b; ++i) {
        tok[size_t(i)] = int32_t((s * 389 + i * 7919 + 5) % (vocab - 300));
        items.push_back({seqs[size_t(i)].get(), std::span<const int32_t>(&tok[size_t(i)], 1)});
      }
      engine->forward(items, logits);
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / n_steps;
    if (b == 1) tps1 = 1000.0 / ms;
    std::printf("| %d | %.2f | %.1f (%.2fx) |\n", b, ms, 1000.0 * b / ms, (1000.0 * b / ms) / tps1);
  }

  // Scheduler: N concurrent requests of max_tokens each.
  std::printf(
      "\nscheduler (no HTTP), %lld prompt + %lld generated tokens per request:\n"
      "| concurrent | aggregate tok/s | mean TTFT ms | steps |\n|---:|---:|---:|---:|\n",
      (long long)prompt_tokens, (long long)max_tokens);
  double agg1 = 0;
  for (int c : {1, 2, 4, 8}) {
    server::SchedulerOptions so;
    so.max_num_seqs = 8;
    so.max_model_len = 4096;
    so.prefix_cache_entries = 0;  // distinct prompts anyway; keep runs independent
    server::Scheduler sched(*engine, so);
    auto t0 = Clock::now();
    std::vector<std::shared_ptr<server::GenHandle>> hs;
    for (int i = 0; i < c; ++i) {
      server::GenRequest r;
      r.prompt = prompt(100 + i);
      r.max_tokens = max_tokens;
      r.ignore_eos = true;
      hs.push_back(sched.submit(std::move(r)));
    }
    // One consumer thread per request (as the HTTP threads are), so each TTFT is its own.
    std::vector<double> ttft(size_t(c), 0);
    std::vector<int64_t> n_got(size_t(c), 0);
    std::vector<std::thread> consumers;
    for (int i = 0; i < c; ++i)
      consumers.emplace_back([&, i] {
        std::vector<server::GenToken> toks;
        bool first = true;
        while (hs[size_t(i)]->next(toks, std::chrono::milliseconds(50))) {
          if (first && !toks.empty()) {
            ttft[size_t(i)] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
            first = false;
          }
        }
        n_got[size_t(i)] = int64_t(toks.size());
      });
    for (auto& t : consumers) t.join();
    double ttft_sum = 0;
    int64_t n_tokens = 0;
    for (int i = 0; i < c; ++i) ttft_sum += ttft[size_t(i)], n_tokens += n_got[size_t(i)];
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    double agg = double(n_tokens) / s;
    if (c == 1) agg1 = agg;
    std::printf("| %d | %.1f (%.2fx) | %.0f | %lld |\n", c, agg, agg / agg1, ttft_sum / c,
                (long long)sched.n_steps());
  }
  return 0;
}
