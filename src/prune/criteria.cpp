#include "prune/criteria.h"

#include "base/error.h"
#include "base/hash.h"

namespace sickle {

namespace {
struct NamedCriterion {
  Criterion c;
  const char* name;
};
constexpr NamedCriterion kCriteria[] = {
    {Criterion::kReap, "reap"},
    {Criterion::kFrequency, "frequency"},
    {Criterion::kWeightedFrequency, "weighted_frequency"},
    {Criterion::kEan, "ean"},
    {Criterion::kEanMean, "ean_mean"},
    {Criterion::kWeightedEan, "weighted_ean"},
    {Criterion::kRandom, "random"},
};
}  // namespace

std::vector<std::string> criterion_names() {
  std::vector<std::string> v;
  for (const auto& c : kCriteria) v.push_back(c.name);
  return v;
}

Criterion parse_criterion(std::string_view name) {
  for (const auto& c : kCriteria)
    if (name == c.name) return c.c;
  std::string all;
  for (const auto& c : kCriteria) all += std::string(all.empty() ? "" : ", ") + c.name;
  fail("unknown criterion '{}' (expected one of: {})", name, all);
}

std::string_view criterion_name(Criterion c) {
  for (const auto& n : kCriteria)
    if (n.c == c) return n.name;
  return "?";
}

std::vector<double> expert_scores(const LayerStats& l, Criterion c, int64_t il, uint64_t seed,
                                  const std::vector<int64_t>& origin_ids) {
  const size_t n = size_t(l.n_experts());
  SICKLE_CHECK(origin_ids.empty() || origin_ids.size() == n);
  std::vector<double> s(n, 0.0);
  for (size_t j = 0; j < n; ++j) {
    const double cnt = l.count[j];
    if (c == Criterion::kRandom) {
      uint64_t key[3] = {seed, uint64_t(il), uint64_t(origin_ids.empty() ? int64_t(j) : origin_ids[j])};
      uint64_t h = hash64(key, sizeof key, 0x7a4d0e);
      s[j] = double((h >> 11) + 1) * 0x1.0p-53;  // (0, 1]
      continue;
    }
    if (cnt <= 0) continue;  // never chosen: 0 whatever the criterion
    switch (c) {
      case Criterion::kReap: s[j] = l.reap_sum[j] / cnt; break;
      case Criterion::kFrequency: s[j] = cnt; break;
      case Criterion::kWeightedFrequency: s[j] = l.gate_sum[j]; break;
      case Criterion::kEan: s[j] = l.ean_sum[j]; break;
      case Criterion::kEanMean: s[j] = l.ean_sum[j] / cnt; break;
      case Criterion::kWeightedEan: s[j] = l.reap_sum[j]; break;
      case Criterion::kRandom: break;
    }
  }
  return s;
}

}  // namespace sickle
