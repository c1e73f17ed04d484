// sickle prune — keep the highest-scoring experts per layer and stream the checkpoint to OUT.
#include <fmt/format.h>

#include <cstdio>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "prune/prune.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "prune", "Prune routed experts with REAP (or another criterion) using statistics from `sickle observe`",
    30, [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        PruneRequest req;
        std::string model, stats, out, criterion = "reap", budget = "uniform", shard_size = "5GiB";
        bool dry_run = false;
      };
      auto a = std::make_shared<Args>();
      std::string crits;
      for (const auto& c : criterion_names()) crits += (crits.empty() ? "" : "|") + c;
      sub.add_option("-m,--model", a->model, "Model directory to prune (only read)")->required();
      sub.add_option("--stats", a->stats,
                     "Statistics from `sickle observe`/`merge`, of this model or of an ancestor named in its "
                     "prune_report.json")
          ->required();
      auto* keep = sub.add_option("--keep", a->req.plan.keep, "Experts kept per MoE layer");
      auto* ratio =
          sub.add_option("--ratio", a->req.plan.ratio,
                         "Fraction of each layer's experts REMOVED (REAP's compression ratio: 0.5 halves)");
      keep->excludes(ratio);
      sub.add_option("--criterion", a->criterion, crits);
      sub.add_option(
             "--budget", a->budget,
             "uniform (same count per layer) | global (same total, spent on the highest layer-normalized "
             "scores; floor num_experts_per_tok; sickle-only config)")
          ->check(CLI::IsMember({"uniform", "global"}));
      sub.add_flag("--keep-super-experts", a->req.plan.keep_super_experts,
                   "Keep experts whose max activation is an outlier (> mean + 3 sd of the layer's) whatever "
                   "their score");
      sub.add_option("--seed", a->req.plan.seed, "Seed for --criterion random");
      sub.add_option(
          "-o,--out", a->out,
          "Output model directory (written via a temp dir, renamed when complete; never the model or the "
          "statistics, nor inside or around them)");
      sub.add_option("--shard-size", a->shard_size, "Output shard size limit, e.g. 5GiB");
      sub.add_flag("--force", a->req.force, "Replace an existing output directory");
      sub.add_flag("--dry-run", a->dry_run, "Print the plan and write nothing");
      return [a, keep, ratio]() {
        if (keep->count() == 0 && ratio->count() == 0) fail("give --keep N or --ratio R");
        if (!a->dry_run && a->out.empty()) fail("give -o OUT (or --dry-run)");
        auto& req = a->req;
        req.model_dir = a->model;
        req.stats_path = a->stats;
        req.out = a->out;
        req.plan.criterion = parse_criterion(a->criterion);
        req.plan.budget = a->budget == "global" ? Budget::kGlobal : Budget::kUniform;
        req.max_shard_bytes = parse_shard_size(a->shard_size);
        req.progress = log_level() >= LogLevel::kInfo;
        PruneOutcome out;
        if (a->dry_run) {
          auto ck = Checkpoint::open(req.model_dir);
          out = plan_prune(*ck, ExpertStats::load(req.stats_path), req);
          for (const auto& w : out.plan.warnings) log_warn("{}", w);
        } else {
          out = prune_model(req);
        }
        const auto& plan = out.plan;
        int64_t before = 0, n_bad = 0, n_ties = 0, n_super = 0;
        for (const auto& [il, lp] : plan.layers) {
          before += lp.n_experts;
          n_bad += lp.order_ok ? 0 : 1;
          n_ties += lp.ties.empty() ? 0 : 1;
          n_super += int64_t(lp.super_experts.size());
          log_info("layer {:>3}: keep {:>4} of {:>4}  min kept {:.4g}  max dropped {:.4g}{}{}", il,
                   lp.kept.size(), lp.n_experts, lp.min_kept_score, lp.max_dropped_score,
                   lp.ties.empty() ? "" : "  (tie at boundary)",
                   lp.order_ok ? "" : "  (kept below dropped: super/group rules)");
        }
        std::printf("criterion %s, budget %s: kept %lld of %lld routed experts in %zu MoE layers (%s)\n",
                    std::string(criterion_name(req.plan.criterion)).c_str(), a->budget.c_str(),
                    (long long)plan.total_kept, (long long)before, plan.layers.size(),
                    out.report["stats"]["mapped"].get<std::string>().c_str());
        std::printf(
            "check every kept score >= every dropped score: %s (%lld layers violate by rule, %lld with "
            "ties); "
            "%lld super experts flagged\n",
            n_bad ? "NO" : "yes", (long long)n_bad, (long long)n_ties, (long long)n_super);
        if (a->dry_run) return 0;
        const auto& rw = out.rewrite;
        std::printf(
            "wrote %s: %lld tensors (%lld renamed, %lld sliced, %lld dropped), %s in %.2f s (%s/s), "
            "%lld checksums verified, %lld other files copied\n",
            a->out.c_str(), (long long)rw.n_tensors, (long long)rw.n_renamed, (long long)rw.n_sliced,
            (long long)rw.n_dropped, format_bytes(double(rw.tensor_bytes)).c_str(), rw.seconds,
            format_bytes(double(rw.tensor_bytes) / std::max(rw.seconds, 1e-9)).c_str(),
            (long long)rw.n_verified, (long long)rw.n_files_copied);
        log_info(
            "time: {:.2f} s writing, {:.2f} s commit (last shard, fsync, re-read + checksums), {:.2f} s "
            "waiting "
            "for source checksums",
            rw.seconds_copy, rw.seconds_commit, rw.seconds_source_hash_wait);
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
