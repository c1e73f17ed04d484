// sickle/model/sampler.cpp — see sampler.h for the filter order.
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/error.h"

namespace sickle {

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

int32_t argmax(const float* x, int64_t n) {
  if (n <= 0) return -1;
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

Sampler::Sampler(SamplingParams params) : params_(params) {
  if (!(params_.temperature >= 0)) fail("sampling: temperature must be >= 0, got {}", params_.temperature);
  if (!(params_.top_p > 0 && params_.top_p <= 1))
    fail("sampling: top_p must be in (0, 1], got {}", params_.top_p);
  if (params_.top_k < 0) fail("sampling: top_k must be >= 0, got {}", params_.top_k);
  if (!(params_.min_p >= 0 && params_.min_p <= 1))
    fail("sampling: min_p must be in [0, 1], got {}", params_.min_p);
  reseed(params_.seed);
}

void Sampler::reseed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : state_) s = splitmix64(x);
}

// xoshiro256** (Blackman & Vigna), top 53 bits -> [0, 1).
double Sampler::next_uniform() {
  uint64_t* s = state_;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return double(result >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  SICKLE_CHECK(vocab > 0);
  if (params_.temperature == 0 || params_.top_k == 1) return argmax(logits, vocab);
  ids_.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) ids_[i] = int32_t(i);
  auto by_logit = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int64_t n = vocab;
  bool sorted = false;
  if (params_.top_k > 0 && params_.top_k < vocab) {
    n = params_.top_k;
    std::partial_sort(ids_.begin(), ids_.begin() + n, ids_.end(), by_logit);
    sorted = true;
  }
  // Softmax at temperature over the candidates (f64 sum for stability over large vocabularies).
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, logits[ids_[i]]);
  probs_.resize(size_t(n));
  const float inv_t = 1.0f / params_.temperature;
  for (int64_t i = 0; i < n; ++i) probs_[i] = std::exp((logits[ids_[i]] - mx) * inv_t);
  // min_p: relative to the most likely token, whose unnormalized p is exp(0) = 1.
  if (params_.min_p > 0) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; ++i)
      if (probs_[i] >= params_.min_p) {
        ids_[m] = ids_[i];
        probs_[m] = probs_[i];
        ++m;
      }
    n = m;  // never empty: the max has p = 1 >= min_p
  }
  if (params_.top_p < 1) {
    if (!sorted) {
      // Sort the survivors by probability (descending, then id) keeping ids and probs paired.
      std::vector<int32_t>& order = ids_;
      auto& tmp = pairs_;
      tmp.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) tmp[i] = {probs_[i], order[i]};
      std::sort(tmp.begin(), tmp.begin() + n, [](const auto& a, const auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      for (int64_t i = 0; i < n; ++i) {
        probs_[i] = tmp[i].first;
        order[i] = tmp[i].second;
      }
    }
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += probs_[i];
    double cum = 0;
    int64_t keep = n;
    for (int64_t i = 0; i < n; ++i) {
      cum += probs_[i];
      if (cum >= params_.top_p * total) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += probs_[i];
  double r = next_uniform() * total, cum = 0;
  for (int64_t i = 0; i < n; ++i) {
    cum += probs_[i];
    if (r < cum) return ids_[i];
  }
  return ids_[n - 1];
}

LogitsAdjuster::LogitsAdjuster(LogitsAdjust adjust, std::span<const int32_t> prompt)
    : adjust_(std::move(adjust)) {
  if (!(adjust_.repetition_penalty > 0))
    fail("sampling: repetition_penalty must be > 0, got {}", adjust_.repetition_penalty);
  if (adjust_.repetition_penalty != 1) {
    seen_.assign(prompt.begin(), prompt.end());
    std::sort(seen_.begin(), seen_.end());
    seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());
  }
}

void LogitsAdjuster::on_output(int32_t id) {
  ++n_output_;
  if (adjust_.presence_penalty == 0 && adjust_.frequency_penalty == 0 && adjust_.repetition_penalty == 1)
    return;
  if (out_count_[id]++ == 0 && adjust_.repetition_penalty != 1) {
    auto it = std::lower_bound(seen_.begin(), seen_.end(), id);
    if (it == seen_.end() || *it != id) seen_.insert(it, id);
  }
}

void LogitsAdjuster::apply(float* logits, int64_t vocab) const {
  const LogitsAdjust& a = adjust_;
  auto in_vocab = [vocab](int32_t id) { return id >= 0 && int64_t(id) < vocab; };
  if (n_output_ < a.min_tokens)
    for (int32_t id : a.min_tokens_blocked)
      if (in_vocab(id)) logits[id] = -std::numeric_limits<float>::infinity();
  for (auto [id, bias] : a.logit_bias)
    if (in_vocab(id)) logits[id] += std::clamp(bias, -100.0f, 100.0f);
  const float r = a.repetition_penalty;
  if (r != 1)
    for (int32_t id : seen_)
      if (in_vocab(id)) logits[id] = logits[id] > 0 ? logits[id] / r : logits[id] * r;
  if (a.frequency_penalty != 0 || a.presence_penalty != 0)
    for (auto [id, n] : out_count_)
      if (in_vocab(id)) logits[id] -= a.frequency_penalty * float(n) + a.presence_penalty;
}

}  // namespace sickle
