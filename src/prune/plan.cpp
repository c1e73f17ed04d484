#include "prune/plan.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <set>

#include "base/error.h"
#include "base/log.h"

namespace sickle {

std::vector<int64_t> find_super_experts(const LayerStats& l, double sigma) {
  std::vector<double> acts;
  for (int64_t j = 0; j < l.n_experts(); ++j)
    if (l.count[size_t(j)] > 0) acts.push_back(l.max_act[size_t(j)]);
  std::vector<int64_t> out;
  if (acts.size() < 2) return out;
  double mean = 0, var = 0;
  for (double a : acts) mean += a;
  mean /= double(acts.size());
  for (double a : acts) var += (a - mean) * (a - mean);
  double sd = std::sqrt(var / double(acts.size()));
  if (sd <= 0) return out;
  for (int64_t j = 0; j < l.n_experts(); ++j)
    if (l.count[size_t(j)] > 0 && l.max_act[size_t(j)] > mean + sigma * sd) out.push_back(j);
  return out;
}

namespace {

// One layer: experts split into n_groups contiguous groups; `order[g]` lists group g's experts
// in the order they are kept (super experts first, then score descending, then lower id).
// Keeping c per group keeps the first c of every group.
struct LayerWork {
  int64_t il = 0, n_experts = 0, n_groups = 1, group_size = 0;
  std::vector<double> scores, normalized;
  std::vector<int64_t> supers;
  std::vector<std::vector<int64_t>> order;
  int64_t min_per_group = 0;  // floor from routing rules and super experts
  int64_t per_group = 0;      // chosen
};

std::string join_ids(const std::vector<int64_t>& v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// Throws when keeping `per_group` experts in each of the layer's groups cannot route.
void check_routable(const ModelConfig& cfg, const LayerWork& w, int64_t keep, bool from_ratio) {
  const int64_t k = cfg.num_experts_per_tok;
  const char* flag = from_ratio ? "--ratio" : "--keep";
  if (keep > w.n_experts)
    fail("{} asks to keep {} experts but layer {} has only {}", flag, keep, w.il, w.n_experts);
  if (keep < k)
    fail(
        "{} keeps {} experts in layer {}, fewer than num_experts_per_tok = {}: the router must choose {} "
        "distinct "
        "experts per token",
        flag, keep, w.il, k, k);
  if (w.n_groups > 1) {
    if (keep % w.n_groups)
      fail(
          "{} keeps {} experts in layer {}, but with n_group = {} every group must keep the same count: the "
          "kept "
          "count must be a multiple of {}",
          flag, keep, w.il, w.n_groups, w.n_groups);
    int64_t c = keep / w.n_groups;
    if (c < 2)
      fail("{} keeps {} per group in layer {} (n_group = {}): grouped routing needs at least 2 per group",
           flag, c, w.il, w.n_groups);
    if (cfg.topk_group * c < k)
      fail(
          "{} keeps {} per group in layer {}: topk_group ({}) x {} = {} < num_experts_per_tok ({}), the "
          "router "
          "could not fill its top-k",
          flag, c, w.il, cfg.topk_group, c, cfg.topk_group * c, k);
  }
  int64_t c = keep / w.n_groups;
  if (c < w.min_per_group)
    fail("{} keeps {} experts in layer {}, but {} super experts ({}) must be kept{}", flag, keep, w.il,
         w.supers.size(), join_ids(w.supers), w.n_groups > 1 ? " (counted per group)" : "");
}

}  // namespace

PrunePlan make_plan(const ModelConfig& cfg, const std::map<int64_t, LayerStats>& stats,
                    const std::map<int64_t, std::vector<int64_t>>& origin_ids, const PlanOptions& opt) {
  if (opt.keep <= 0 && !(opt.ratio >= 0 && opt.ratio < 1))
    fail("give --keep N (N >= 1) or --ratio R with 0 <= R < 1 (the fraction of experts removed)");
  const int64_t k = cfg.num_experts_per_tok;
  const int64_t n_groups = std::max<int64_t>(1, cfg.n_group);
  PrunePlan plan;
  plan.options = opt;
  std::vector<LayerWork> work;
  std::vector<int64_t> uniform_keep;
  for (int64_t il = 0; il < cfg.num_hidden_layers; ++il) {
    if (!cfg.is_moe_layer(il)) continue;
    auto it = stats.find(il);
    if (it == stats.end()) fail("statistics have no entry for MoE layer {}", il);
    const LayerStats& l = it->second;
    LayerWork w;
    w.il = il;
    w.n_experts = cfg.n_experts(il);
    if (l.n_experts() != w.n_experts)
      fail("statistics for layer {} have {} experts but the model has {}", il, l.n_experts(), w.n_experts);
    w.n_groups = n_groups;
    if (w.n_experts % n_groups)
      fail("layer {} has {} experts, not divisible by n_group = {}", il, w.n_experts, n_groups);
    w.group_size = w.n_experts / n_groups;
    auto oi = origin_ids.find(il);
    w.scores = expert_scores(l, opt.criterion, il, opt.seed,
                             oi == origin_ids.end() ? std::vector<int64_t>{} : oi->second);
    double mx = 0;
    for (double s : w.scores) mx = std::max(mx, s);
    w.normalized.resize(w.scores.size());
    for (size_t j = 0; j < w.scores.size(); ++j) w.normalized[j] = mx > 0 ? w.scores[j] / mx : 0.0;
    std::vector<char> is_super(size_t(w.n_experts), 0);
    w.supers = find_super_experts(l, opt.super_sigma);
    if (opt.keep_super_experts)
      for (int64_t j : w.supers) is_super[size_t(j)] = 1;
    int64_t max_supers_in_group = 0;
    for (int64_t g = 0; g < n_groups; ++g) {
      std::vector<int64_t> ord(size_t(w.group_size));
      for (int64_t i = 0; i < w.group_size; ++i) ord[size_t(i)] = g * w.group_size + i;
      std::stable_sort(ord.begin(), ord.end(), [&](int64_t a, int64_t b) {
        if (is_super[size_t(a)] != is_super[size_t(b)]) return is_super[size_t(a)] > is_super[size_t(b)];
        if (w.scores[size_t(a)] != w.scores[size_t(b)]) return w.scores[size_t(a)] > w.scores[size_t(b)];
        return a < b;
      });
      int64_t ns = 0;
      for (int64_t j : ord) ns += is_super[size_t(j)];
      max_supers_in_group = std::max(max_supers_in_group, ns);
      w.order.push_back(std::move(ord));
    }
    // Floor per group: routing needs top_k experts overall; grouped routing at least 2 per
    // group and topk_group * per_group >= top_k; super experts must fit.
    int64_t floor_c = (k + n_groups - 1) / n_groups;
    if (n_groups > 1)
      floor_c =
          std::max({floor_c, int64_t(2), (k + cfg.topk_group - 1) / std::max<int64_t>(1, cfg.topk_group)});
    w.min_per_group = std::max(floor_c, max_supers_in_group);
    int64_t keep = opt.keep;
    if (keep <= 0) {
      keep = w.n_experts - int64_t(std::llround(double(w.n_experts) * opt.ratio));
      if (n_groups > 1) keep = std::max<int64_t>(n_groups, (keep + n_groups / 2) / n_groups * n_groups);
    }
    check_routable(cfg, w, keep, opt.keep <= 0);
    uniform_keep.push_back(keep);
    work.push_back(std::move(w));
  }
  if (work.empty()) fail("the model has no MoE layers to prune");

  if (opt.budget == Budget::kUniform) {
    for (size_t i = 0; i < work.size(); ++i) work[i].per_group = uniform_keep[i] / n_groups;
  } else {
    // Global budget (reap.md): the uniform plan's total, spent greedily on the highest
    // normalized scores. One step adds one expert to every group of a layer; its value is the
    // mean normalized score of the experts it adds.
    int64_t total = 0, spent = 0;
    for (auto x : uniform_keep) total += x;
    for (auto& w : work) {
      w.per_group = w.min_per_group;
      spent += w.per_group * n_groups;
    }
    if (spent > total)
      fail(
          "global budget of {} experts is below the per-layer floors (num_experts_per_tok, group rules, "
          "super "
          "experts), which need {}",
          total, spent);
    auto value = [&](const LayerWork& w) {
      double v = 0;
      for (int64_t g = 0; g < n_groups; ++g)
        v += w.normalized[size_t(w.order[size_t(g)][size_t(w.per_group)])];
      return v / double(n_groups);
    };
    using Item = std::pair<double, int64_t>;  // value, -layer position (ties: lower layer first)
    std::priority_queue<Item> pq;
    for (size_t i = 0; i < work.size(); ++i)
      if (work[i].per_group < work[i].group_size) pq.emplace(value(work[i]), -int64_t(i));
    while (spent < total && !pq.empty()) {
      auto [v, neg] = pq.top();
      pq.pop();
      LayerWork& w = work[size_t(-neg)];
      ++w.per_group;
      spent += n_groups;
      if (w.per_group < w.group_size) pq.emplace(value(w), neg);
    }
    SICKLE_CHECK(spent == total, "spent {} of {}", spent, total);
  }

  std::set<int64_t> counts;
  for (auto& w : work) {
    LayerPlan lp;
    lp.il = w.il;
    lp.n_experts = w.n_experts;
    lp.scores = w.scores;
    lp.super_experts = w.supers;
    std::vector<char> keep(size_t(w.n_experts), 0);
    for (const auto& ord : w.order)
      for (int64_t i = 0; i < w.per_group; ++i) keep[size_t(ord[size_t(i)])] = 1;
    for (int64_t j = 0; j < w.n_experts; ++j) (keep[size_t(j)] ? lp.kept : lp.dropped).push_back(j);
    lp.min_kept_score = INFINITY;
    lp.max_dropped_score = -INFINITY;
    for (auto j : lp.kept) lp.min_kept_score = std::min(lp.min_kept_score, w.scores[size_t(j)]);
    for (auto j : lp.dropped) lp.max_dropped_score = std::max(lp.max_dropped_score, w.scores[size_t(j)]);
    if (lp.dropped.empty()) lp.max_dropped_score = 0;
    lp.order_ok = lp.dropped.empty() || lp.min_kept_score >= lp.max_dropped_score;
    for (auto j : lp.kept)
      if (!lp.dropped.empty() && w.scores[size_t(j)] < lp.max_dropped_score) lp.out_of_order.push_back(j);
    if (!lp.dropped.empty() && lp.min_kept_score == lp.max_dropped_score)
      for (int64_t j = 0; j < w.n_experts; ++j)
        if (w.scores[size_t(j)] == lp.min_kept_score) lp.ties.push_back(j);
    plan.total_kept += int64_t(lp.kept.size());
    counts.insert(int64_t(lp.kept.size()));
    plan.layers.emplace(w.il, std::move(lp));
  }
  plan.is_uniform = counts.size() == 1;
  for (int64_t c : counts)
    if (c % 8)
      plan.warnings.push_back(
          fmt::format("kept count {} is not a multiple of 8: expert-parallel serving (EP degree 8) and some "
                      "fused MoE kernels "
                      "need a multiple of the EP degree",
                      c));
  return plan;
}

}  // namespace sickle
