#include "eval/sweep.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>

#include "base/error.h"
#include "base/log.h"
#include "eval/plot.h"
#include "io/output_path.h"
#include "prune/criteria.h"
#include "prune/prune.h"
#include "prune/stats.h"

namespace sickle {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json result_json(const EvalResult& r) {
  json j;
  for (const auto& [k, v] : r.values()) j[k] = std::isfinite(v) ? json(v) : json(nullptr);
  j["warnings"] = r.warnings;
  return j;
}

}  // namespace

SweepReport run_sweep(const SweepRequest& req, const std::vector<std::vector<int32_t>>& windows) {
  if (req.criteria.empty()) fail("sweep: no criteria given (--criteria reap,frequency,...)");
  if (req.keeps.empty()) fail("sweep: no expert counts given (--keep 24,16,8)");
  for (const auto& c : req.criteria) parse_criterion(c);  // validate names before any work
  std::error_code ec;
  if (fs::exists(req.out_dir, ec) && !req.force)
    fail("{}: output already exists (pass --force to replace it)", req.out_dir.string());
  ModelOptions mo;
  mo.n_threads = req.n_threads;
  auto teacher = Model::load(req.model_dir, mo);
  const ModelConfig& cfg = teacher->config();
  int64_t n_experts = cfg.n_routed_experts;
  for (auto k : req.keeps)
    if (k <= 0 || k > n_experts)
      fail("sweep: --keep {} outside [1, {}] (the model's experts per layer)", k, n_experts);

  SweepReport rep;
  log_info("sweep: evaluating the original model ({} windows)", windows.size());
  EvalOptions quiet = req.eval;
  rep.original = evaluate(*teacher, nullptr, windows, quiet);
  for (const auto& crit : req.criteria) {
    for (int64_t keep : req.keeps) {
      log_info("sweep: {} keep {} of {}", crit, keep, n_experts);
      // The pruned model lives in a temp of the report's target: removed after this point, or
      // by the next run if this one is killed.
      TempOutput tmp(req.out_dir, OutputKind::kDirectory);
      PruneRequest pr;
      pr.model_dir = req.model_dir;
      pr.stats_path = req.stats_path;
      pr.out = tmp.path() / "model";
      pr.plan.criterion = parse_criterion(crit);
      pr.plan.keep = keep;
      pr.plan.budget = req.budget;
      pr.plan.seed = req.seed;
      pr.progress = false;
      prune_model(pr);
      auto student = Model::load(pr.out, mo);
      SweepPoint p;
      p.criterion = crit;
      p.keep = keep;
      p.pruned_fraction = 1.0 - double(keep) / double(n_experts);
      p.result = evaluate(*student, teacher.get(), windows, quiet);
      log_info("sweep: {} keep {}: ppl {:.3f} (original {:.3f}), top-1 {:.3f}, KL {:.4f}", crit, keep,
               p.result.totals.ppl(), rep.original.totals.ppl(), p.result.totals.top1(),
               p.result.totals.mean_kl());
      rep.points.push_back(std::move(p));
    }
  }
  ExpertStats stats = ExpertStats::load(req.stats_path);
  std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  rep.provenance = {{"model", fs::absolute(req.model_dir).string()},
                    {"model_fingerprint", stats.meta.model_fingerprint},
                    {"n_experts", n_experts},
                    {"top_k", cfg.num_experts_per_tok},
                    {"statistics", fs::absolute(req.stats_path).string()},
                    {"statistics_samples", stats.meta.samples},
                    {"statistics_tokens", stats.meta.tokens},
                    {"statistics_data_format", stats.meta.data_format},
                    {"statistics_seq_len", stats.meta.seq_len},
                    {"data_files", req.data_files},
                    {"data", req.data_desc},
                    {"windows", rep.original.n_windows},
                    {"tokens_scored", rep.original.totals.n_tokens},
                    {"budget", req.budget == Budget::kUniform ? "uniform" : "global"},
                    {"seed", req.seed},
                    {"sickle_version", SICKLE_VERSION},
                    {"time", when}};
  return rep;
}

std::string sweep_table(const SweepReport& r) {
  // The next-line exact-match column only when lines were scored (a line-end table was given).
  const bool em = r.original.totals.lines > 0;
  std::string o = fmt::format("{:<20} {:>6} {:>8} {:>10} {:>9} {:>8} {:>8} {:>9}", "criterion", "kept",
                              "pruned", "ppl", "ppl/orig", "top-1", "top-5", "KL");
  o += em ? fmt::format(" {:>8} {:>8}\n", "line-EM", "line-pre") : "\n";
  o += fmt::format("{:<20} {:>6} {:>7.0f}% {:>10.3f} {:>9} {:>8} {:>8} {:>9}", "original", "all", 0.0,
                   r.original.totals.ppl(), "1.000", "-", "-", "-");
  o += em ? fmt::format(" {:>8.3f} {:>8.3f}\n", r.original.totals.line_em(), r.original.totals.line_prefix())
          : "\n";
  for (const auto& p : r.points) {
    const auto& t = p.result.totals;
    o += fmt::format("{:<20} {:>6} {:>7.0f}% {:>10.3f} {:>9.3f} {:>8.3f} {:>8.3f} {:>9.4f}", p.criterion,
                     p.keep, 100 * p.pruned_fraction, t.ppl(), t.ppl() / r.original.totals.ppl(), t.top1(),
                     t.top5(), t.mean_kl());
    o += em ? fmt::format(" {:>8.3f} {:>8.3f}\n", t.line_em(), t.line_prefix()) : "\n";
  }
  return o;
}

void write_sweep_report(const SweepRequest& req, const SweepReport& r) {
  TempOutput tmp(req.out_dir, OutputKind::kDirectory);  // `.<name>.tmp-XXXXXX` beside the report
  // results.csv
  {
    std::ofstream csv(tmp.path() / "results.csv");
    // line_em: next-line exact match (empty when no lines were scored)
    auto em = [](const EvalTotals& t) {
      return t.lines ? fmt::format("{:.6f},{:.6f}", t.line_em(), t.line_prefix()) : std::string(",");
    };
    csv << "criterion,kept,pruned_fraction,ppl,ppl_ratio_vs_original,top1,top5,kl,tokens,dead_experts,line_"
           "em,"
           "line_prefix\n";
    csv << fmt::format("original,{},0,{:.6f},1,,,,{},{},{}\n", r.provenance.value("n_experts", 0),
                       r.original.totals.ppl(), r.original.totals.n_tokens, r.original.dead_experts(),
                       em(r.original.totals));
    for (const auto& p : r.points) {
      const auto& t = p.result.totals;
      csv << fmt::format("{},{},{:.4f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{},{},{}\n", p.criterion, p.keep,
                         p.pruned_fraction, t.ppl(), t.ppl() / r.original.totals.ppl(), t.top1(), t.top5(),
                         t.mean_kl(), t.n_tokens, p.result.dead_experts(), em(t));
    }
  }
  // results.json
  {
    json j;
    j["provenance"] = r.provenance;
    j["original"] = result_json(r.original);
    j["points"] = json::array();
    for (const auto& p : r.points) {
      json pj = result_json(p.result);
      pj["criterion"] = p.criterion;
      pj["kept"] = p.keep;
      pj["pruned_fraction"] = p.pruned_fraction;
      j["points"].push_back(pj);
    }
    std::ofstream out(tmp.path() / "results.json");
    out << j.dump(2) << "\n";
  }
  // plot
  PlotPanel ppl{
      "Perplexity vs experts kept", "routed experts kept per layer", "perplexity (held-out)", false, {}};
  PlotPanel agree{
      "Agreement with the original", "routed experts kept per layer", "top-1 agreement", false, {}};
  std::map<std::string, size_t> idx;
  for (const auto& p : r.points) {
    if (!idx.count(p.criterion)) {
      idx[p.criterion] = ppl.series.size();
      ppl.series.push_back({p.criterion, {}, {}});
      agree.series.push_back({p.criterion, {}, {}});
    }
    size_t i = idx[p.criterion];
    ppl.series[i].x.push_back(double(p.keep));
    ppl.series[i].y.push_back(p.result.totals.ppl());
    agree.series[i].x.push_back(double(p.keep));
    agree.series[i].y.push_back(p.result.totals.top1());
  }
  double n_exp = r.provenance.value("n_experts", 0.0);
  ppl.series.push_back({"original", {n_exp}, {r.original.totals.ppl()}});
  agree.series.push_back({"original", {n_exp}, {1.0}});
  // Log scale only when perplexities span more than a factor of 20 (a collapsed criterion).
  double lo = INFINITY, hi = 0;
  for (const auto& s : ppl.series)
    for (double y : s.y)
      if (std::isfinite(y)) {
        lo = std::min(lo, y);
        hi = std::max(hi, y);
      }
  ppl.log_y = lo > 0 && hi / lo > 20;
  std::string caption = fmt::format("model {} | stats {} | data {} | {} tokens scored",
                                    fs::path(r.provenance.value("model", "")).filename().string(),
                                    fs::path(r.provenance.value("statistics", "")).filename().string(),
                                    r.provenance.value("data", ""), r.original.totals.n_tokens);
  std::string svg = render_svg({ppl, agree}, caption);
  bool has_png = write_plot_files(svg, tmp.path() / "plot");
  // index.html
  {
    std::ofstream html(tmp.path() / "index.html");
    html << "<!doctype html><html><head><meta charset=\"utf-8\"><title>sickle sweep</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:2em "
            "auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px "
            "8px;text-align:right}td:first-child{text-align:left}</style>"
            "</head><body><h1>sickle sweep</h1>\n";
    html << "<p>" << (has_png ? "<img src=\"plot.png\" alt=\"plot\">" : "<img src=\"plot.svg\" alt=\"plot\">")
         << "</p>\n";
    html << "<h2>Results</h2><pre>" << sweep_table(r) << "</pre>\n";
    html << "<p>Files: <a href=\"results.csv\">results.csv</a>, <a href=\"results.json\">results.json</a>, "
            "<a href=\"plot.svg\">plot.svg</a></p>\n";
    html << "<h2>Provenance</h2><pre>" << r.provenance.dump(2) << "</pre></body></html>\n";
  }
  tmp.commit(req.force);
}

}  // namespace sickle
