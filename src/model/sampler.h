// sickle/model/sampler.h — choosing the next token from logits.
//
// Order of filters (as llama.cpp's default chain and HF's warpers): temperature == 0 -> argmax
// (ties: lowest id). Otherwise: top_k (if > 0) keeps the k largest logits; softmax at
// `temperature`; min_p keeps tokens with p >= min_p * p_max; top_p keeps the smallest prefix
// (by descending p) whose mass reaches top_p; renormalize; draw with a seeded RNG
// (splitmix64-seeded xoshiro256**), so a given seed gives the same sequence of draws on any machine.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sickle {

struct SamplingParams {
  float temperature = 0;  // 0 = greedy
  float top_p = 1;
  int top_k = 0;    // 0 = off
  float min_p = 0;  // 0 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams params = {});
  const SamplingParams& params() const { return params_; }
  // Restart the random stream from `seed`.
  void reseed(uint64_t seed);
  int32_t sample(const float* logits, int64_t vocab);
  // A uniform draw in [0, 1) from the sampler's stream (exposed for tests).
  double next_uniform();

 private:
  SamplingParams params_;
  uint64_t state_[4] = {};
  std::vector<int32_t> ids_;                      // [vocab] scratch, reused across calls
  std::vector<float> probs_;                      // [vocab] scratch
  std::vector<std::pair<float, int32_t>> pairs_;  // [vocab] scratch for top_p ordering
};

// Logits processing before sampling, as vLLM's sampler orders it (v1 sampler.py): min_tokens
// (the stop ids are -inf until min_tokens were generated), logit_bias (added, each bias clamped
// to [-100, 100]), then the penalties:
//   repetition (HF/CTRL): for each token seen in the prompt or the output,
//                         logit > 0 ? logit / r : logit * r
//   frequency:            logit -= f * (times the token appears in the output)
//   presence:             logit -= p * (1 if it appears in the output)
// Logprobs are reported from the raw logits (vLLM's default logprobs_mode raw_logprobs).
struct LogitsAdjust {
  float presence_penalty = 0;                         // [-2, 2]
  float frequency_penalty = 0;                        // [-2, 2]
  float repetition_penalty = 1;                       // > 0; 1 = off
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias)
  int64_t min_tokens = 0;
  std::vector<int32_t> min_tokens_blocked;  // ids masked while fewer than min_tokens were generated
  bool active() const {
    return presence_penalty != 0 || frequency_penalty != 0 || repetition_penalty != 1 ||
           !logit_bias.empty() || (min_tokens > 0 && !min_tokens_blocked.empty());
  }
};

// The per-sequence state the adjustments need, kept incrementally: O(distinct tokens) a step.
class LogitsAdjuster {
 public:
  LogitsAdjuster() = default;
  LogitsAdjuster(LogitsAdjust adjust, std::span<const int32_t> prompt);
  bool active() const { return adjust_.active(); }
  // A token was generated (counts for frequency / presence / repetition / min_tokens).
  void on_output(int32_t id);
  // Applies the adjustments in place to one row of `vocab` logits.
  void apply(float* logits, int64_t vocab) const;

 private:
  LogitsAdjust adjust_;
  std::vector<int32_t> seen_;                       // distinct ids of prompt + output
  std::unordered_map<int32_t, int32_t> out_count_;  // output id -> count
  int64_t n_output_ = 0;
};

// Index of the largest value (lowest index on ties); -1 if n == 0.
int32_t argmax(const float* x, int64_t n);

}  // namespace sickle
