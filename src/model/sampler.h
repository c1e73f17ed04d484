// sickle/model/sampler.h — choosing the next token from logits.
//
// Order of filters (as llama.cpp's default chain and HF's warpers): temperature == 0 -> argmax
// (ties: lowest id). Otherwise: top_k (if > 0) keeps the k largest logits; softmax at
// `temperature`; min_p keeps tokens with p >= min_p * p_max; top_p keeps the smallest prefix
// (by descending p) whose mass reaches top_p; renormalize; draw with a seeded RNG
// (splitmix64-seeded xoshiro256**), so a given seed gives the same sequence of draws on any machine.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace sickle {

struct SamplingParams {
  float temperature = 0;  // 0 = greedy
  float top_p = 1;
  int top_k = 0;          // 0 = off
  float min_p = 0;        // 0 = off
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
  std::vector<int32_t> ids_;   // [vocab] scratch, reused across calls
  std::vector<float> probs_;   // [vocab] scratch
  std::vector<std::pair<float, int32_t>> pairs_;  // [vocab] scratch for top_p ordering
};

// Index of the largest value (lowest index on ties); -1 if n == 0.
int32_t argmax(const float* x, int64_t n);

}  // namespace sickle
