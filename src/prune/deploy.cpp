#include "prune/deploy.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/error.h"
#include "base/log.h"
#include "prune/plan.h"

namespace sickle {
using json = nlohmann::json;

int64_t routable_keep(const ModelConfig& c, int64_t keep, double ratio) {
  // make_plan applies prune's rules to each MoE layer; every layer of a uniform model has the
  // same count, so one layer stands for all (its statistics are all zero: which experts are kept
  // does not matter here, only how many).
  int64_t il0 = -1;
  for (int64_t il = 0; il < c.num_hidden_layers && il0 < 0; ++il)
    if (c.is_moe_layer(il)) il0 = il;
  if (il0 < 0) fail("the model has no MoE layers: there are no experts to keep");
  if (!c.experts_per_layer.empty())
    fail("--keep / --ratio / --fit need a model with the same expert count in every layer");
  ModelConfig one = c;
  one.num_hidden_layers = il0 + 1;
  std::map<int64_t, LayerStats> stats{{il0, LayerStats(c.n_experts(il0))}};
  PlanOptions opt;
  opt.keep = keep;
  opt.ratio = ratio;
  PrunePlan p = make_plan(one, stats, {}, opt);
  return int64_t(p.layers.at(il0).kept.size());
}

namespace {

struct Evaluated {
  ModelReport report;
  std::optional<MemoryPlan> gpu;
  std::optional<CpuPlan> cpu;
  bool fits() const { return gpu ? gpu->fits() : cpu->fits(); }
};

Evaluated evaluate(const ModelSource& src, const DeployRequest& req, int64_t keep) {
  Evaluated e;
  e.report = analyze_source(keep && keep != src.config.n_routed_experts ? with_experts(src, keep) : src);
  if (req.scale_layers) e.report = scale_layers(e.report, req.scale_layers);
  if (req.gpu) e.gpu = plan_memory(e.report, *req.gpu);
  if (req.cpu) e.cpu = plan_cpu(e.report, *req.cpu);
  return e;
}

std::string gbs(double b) { return fmt::format("{:.2f} GB", b / 1e9); }

// Why `keep` does not fit: the term that grows with keep (routed experts on the busiest device)
// against what is left.
std::string why_not(const Evaluated& at, int64_t keep, const Evaluated* below, int64_t keep_below) {
  std::string s;
  if (at.gpu) {
    const MemoryPlan& p = *at.gpu;
    const auto& t = p.target;
    s = fmt::format("keep {}: routed experts {} on the busiest GPU", keep, gbs(double(p.experts_share)));
    if (t.expert_parallel) s += fmt::format(" ({} per MoE layer)", p.experts_busiest);
    if (below && below->gpu)
      s += fmt::format(", +{} over keep {}", gbs(double(p.experts_share) - double(below->gpu->experts_share)),
                       keep_below);
    if (!p.loads())
      s += fmt::format("; weights {} + overhead {} leave no KV block in the usable {} (short by {})",
                       gbs(double(p.weights_per_device)), gbs(double(t.runtime_overhead)),
                       gbs(double(p.usable)), gbs(double(p.shortfall())));
    else
      s += fmt::format(
          "; the KV cache left holds {} tokens per sequence < {} (--context, x {} sequences; short by {})",
          p.max_context, t.context, t.max_num_seqs, gbs(double(p.shortfall())));
    return s;
  }
  const CpuPlan& p = *at.cpu;
  if (p.kv_room <= 0)
    return fmt::format("keep {}: weights {} + overhead exceed the RAM by {}", keep, gbs(double(p.weights)),
                       gbs(double(-p.kv_room)));
  return fmt::format("keep {}: the RAM left holds {} tokens per sequence < {} (--context)", keep,
                     p.max_context, p.target.context);
}

}  // namespace

Deployment plan_deployment(const ModelSource& src, const DeployRequest& req) {
  const ModelConfig& c = src.config;
  Deployment d;
  d.source = src.dir;
  d.experts = c.n_routed_experts;
  if (req.fit && !req.gpu && !req.cpu)
    fail("--fit needs a target: --gpus N --gpu-mem SIZE, or --cpu-mem SIZE");
  if (req.even_experts && !(req.gpu && req.gpu->expert_parallel))
    fail("--even-experts needs --ep (it makes the kept count a multiple of --gpus)");
  int64_t keep = 0;
  if (req.keep > 0 || req.ratio >= 0) {
    keep = routable_keep(c, req.keep, req.keep > 0 ? -1 : req.ratio);
  } else if (req.fit) {
    FitOutcome f;
    for (int64_t k = 1; k <= c.n_routed_experts; ++k) {
      if (req.even_experts && k % req.gpu->n_gpus) continue;
      try {
        if (routable_keep(c, k, -1) == k) f.candidates.push_back(k);
      } catch (const Error&) {
      }
    }
    if (f.candidates.empty())
      fail("--fit: no expert count is routable{}", req.even_experts ? " and a multiple of --gpus" : "");
    // Memory grows with keep: bisect for the last candidate that fits.
    size_t lo = 0, hi = f.candidates.size();  // candidates[0, lo) fit, [hi, end) do not
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (evaluate(src, req, f.candidates[mid]).fits()) lo = mid + 1;
      else hi = mid;
    }
    if (lo == 0) {
      Evaluated e = evaluate(src, req, f.candidates[0]);
      f.binds = why_not(e, f.candidates[0], nullptr, 0) + " (the smallest routable count)";
      keep = f.candidates[0];
    } else {
      f.keep = keep = f.candidates[lo - 1];
      if (lo < f.candidates.size()) {
        f.next_keep = f.candidates[lo];
        Evaluated at = evaluate(src, req, f.next_keep), below = evaluate(src, req, f.keep);
        f.binds = why_not(at, f.next_keep, &below, f.keep);
      }
    }
    d.fit = f;
  }
  Evaluated e = evaluate(src, req, keep);
  d.keep = keep ? keep : c.n_routed_experts;
  d.report = std::move(e.report);
  d.gpu = e.gpu;
  d.cpu = e.cpu;
  return d;
}

std::string format_deployment(const Deployment& d) {
  const ModelReport& r = d.report;
  std::string o = fmt::format("model        {}  (bytes from {})\n", d.source, r.bytes_from);
  o += fmt::format(
      "experts      {} of {} routed experts per MoE layer{}, top-{}, {} MoE layers\n", d.keep, d.experts,
      d.keep != d.experts ? " (what `sickle prune --keep " + std::to_string(d.keep) + "` writes)" : "",
      r.config.num_experts_per_tok, r.n_moe_layers());
  Tally t = r.total();
  uint64_t params = 0;
  for (const auto& u : t.component) params += u.params;
  const double loaded = double(r.loaded_bytes());
  o += fmt::format("weights      {:.2f} GB ({}) loaded, {} parameters, {} active per token\n", loaded / 1e9,
                   format_bytes(loaded), format_count(double(params)),
                   format_count(double(r.active_params())));
  if (d.gpu) o += format_memory_plan(r, *d.gpu);
  if (d.fit) {
    const FitOutcome& f = *d.fit;
    if (!f.keep) o += fmt::format("fit          NOTHING FITS: {}\n", f.binds);
    else
      o += fmt::format("fit          keep {}: the largest of {} routable counts that fits{}\n", f.keep,
                       f.candidates.size(),
                       f.next_keep ? "" : fmt::format(" (all {} experts fit)", d.experts));
    if (f.keep && f.next_keep) o += fmt::format("binds        {}\n", f.binds);
  }
  if (d.cpu) o += format_cpu_plan(r, *d.cpu);
  return o;
}

json deployment_json(const Deployment& d) {
  json j;
  j["source"] = d.source;
  j["bytes_from"] = d.report.bytes_from;
  j["experts"] = {{"source", d.experts}, {"keep", d.keep}};
  j["model"] = report_json(d.report, nullptr);
  if (d.gpu) j["gpu"] = memory_plan_json(*d.gpu);
  if (d.cpu) j["cpu"] = cpu_plan_json(*d.cpu);
  if (d.fit)
    j["fit"] = {{"keep", d.fit->keep},
                {"candidates", d.fit->candidates},
                {"next_keep", d.fit->next_keep},
                {"binds", d.fit->binds}};
  return j;
}

}  // namespace sickle
