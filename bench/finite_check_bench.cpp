// finite_check_bench — the cost of ModelOptions::check_finite (the NaN/Inf check of the
// residual stream and logits) on prefill and decode throughput, measured A/B in one process:
// the model loaded twice, with and without the check, run alternately (which goes first
// alternates too) on the same tokens, so load from other processes hits both alike.
//
//   finite_check_bench MODEL_DIR [PROMPT_TOKENS=128] [DECODE_TOKENS=32] [ROUNDS=10] [THREADS=2]
//
// Prints the median and the best prefill and decode tok/s of each and their ratios. With
// THREADS=1 the rates are per second of the calling thread's CPU time (all the work runs on it),
// which other processes on a loaded machine disturb far less than wall time. SICKLE_CHECK_FINITE=0 turns the
// check off in both: an A/A run, for the noise of the comparison itself.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "model/model.h"

using namespace sickle;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double best(const std::vector<double>& v) { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }

void report(const char* what, const std::vector<double>& on, const std::vector<double>& off) {
  std::printf(
      "%s  check on %8.2f tok/s  off %8.2f tok/s  on/off %.3f   best: on %8.2f  off %8.2f  on/off %.3f\n",
      what, median(on), median(off), median(on) / median(off), best(on), best(off), best(on) / best(off));
}

struct Rates {
  std::vector<double> prefill, decode;
};

bool g_cpu_time = false;  // THREADS=1: time by the calling thread's CPU clock

double now_s() {
  if (!g_cpu_time) return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

void one_round(Model& m, const std::vector<int32_t>& prompt, int64_t n_decode, Rates& r) {
  auto seq = m.new_sequence();
  std::vector<float> logits;
  const double t0 = now_s();
  m.forward(*seq, prompt, logits);
  const double t1 = now_s();
  int32_t next = 1;
  for (int64_t i = 0; i < n_decode; ++i) {
    next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    m.forward(*seq, std::span<const int32_t>(&next, 1), logits);
  }
  const double t2 = now_s();
  r.prefill.push_back(double(prompt.size()) / (t1 - t0));
  r.decode.push_back(double(n_decode) / (t2 - t1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [PROMPT_TOKENS] [DECODE_TOKENS] [ROUNDS] [THREADS]\n", argv[0]);
    return 2;
  }
  const int64_t n_prompt = argc > 2 ? std::atoll(argv[2]) : 128,
                n_decode = argc > 3 ? std::atoll(argv[3]) : 32;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 10, threads = argc > 5 ? std::atoi(argv[5]) : 2;
  g_cpu_time = threads == 1;
  ModelOptions on, off;
  on.n_threads = off.n_threads = threads;
  off.check_finite = false;
  auto m_on = Model::load(argv[1], on), m_off = Model::load(argv[1], off);
  std::vector<int32_t> prompt(static_cast<size_t>(n_prompt));
  for (int64_t i = 0; i < n_prompt; ++i)
    prompt[size_t(i)] = int32_t((i * 7919 + 13) % (m_on->vocab_size() - 1) + 1);
  Rates r_on, r_off;
  one_round(*m_on, prompt, 2, r_on);  // warm-up: page in the weights, grow the scratch
  one_round(*m_off, prompt, 2, r_off);
  r_on = r_off = {};
  for (int i = 0; i < rounds; ++i) {
    if (i % 2) {
      one_round(*m_on, prompt, n_decode, r_on);
      one_round(*m_off, prompt, n_decode, r_off);
    } else {
      one_round(*m_off, prompt, n_decode, r_off);
      one_round(*m_on, prompt, n_decode, r_on);
    }
  }
  std::printf("%s: %d rounds of %lld prompt + %lld decode tokens, %d threads (medians, then bests)\n",
              argv[1], rounds, (long long)n_prompt, (long long)n_decode, threads);
  if (g_cpu_time) std::printf("(tok per second of thread CPU time)\n");
  report("prefill", r_on.prefill, r_off.prefill);
  report("decode ", r_on.decode, r_off.decode);
  return 0;
}
