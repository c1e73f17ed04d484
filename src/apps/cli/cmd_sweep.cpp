// sickle sweep — prune to several points with several criteria, evaluate each against the
// original, and write a report (CSV, JSON, plot, HTML).
#include <fmt/format.h>

#include <cstdio>
#include <sstream>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "eval/data.h"
#include "eval/sweep.h"
#include "model/model.h"

namespace sickle::cli {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

Registrar reg{Command{
    "sweep", "Prune to each --keep point with each criterion, evaluate against the original, write a report",
    45, [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::string model, stats, out, criteria = "reap,frequency,ean,random", keeps, format = "text",
                                       budget = "uniform";
        std::vector<std::string> data;
        CalibOptions calib;
        int64_t max_tokens = 0;
        uint64_t seed = 0;
        int threads = 0;
        bool force = false;
      };
      auto a = std::make_shared<Args>();
      a->calib.seq_len = 2048;
      sub.add_option("-m,--model", a->model, "The original model directory")->required();
      sub.add_option("--stats", a->stats, "Statistics from `sickle observe` on this model")->required();
      sub.add_option(
          "--criteria", a->criteria,
          "Comma-separated criteria (reap,frequency,weighted_frequency,ean,ean_mean,weighted_ean,random)");
      sub.add_option("--keep", a->keeps, "Comma-separated experts kept per layer, e.g. 24,16,8")->required();
      sub.add_option("--budget", a->budget, "uniform|global")->check(CLI::IsMember({"uniform", "global"}));
      sub.add_option("--data", a->data, "Held-out evaluation files")->required();
      sub.add_option("--format", a->format, "text|jsonl|chat-jsonl|tokens")
          ->check(CLI::IsMember({"text", "jsonl", "chat-jsonl", "tokens"}));
      sub.add_option("--seq-len", a->calib.seq_len, "Window length (capped at the model's context)");
      sub.add_option("--max-tokens", a->max_tokens, "Score at most N tokens per point (0 = all)");
      sub.add_option("--seed", a->seed, "Seed for the random criterion");
      add_threads_option(sub, a->threads);
      sub.add_option("-o,--out", a->out, "Report directory (never an input, inside or around one)")
          ->required();
      sub.add_flag("--force", a->force, "Replace an existing report directory");
      return [a]() {
        check_output(
            a->out, OutputKind::kDirectory, a->force,
            with_inputs({{"model directory", a->model}, {"--stats file", a->stats}}, "--data file", a->data));
        std::vector<std::filesystem::path> files(a->data.begin(), a->data.end());
        check_data_files(files);
        SweepRequest req;
        req.model_dir = a->model;
        req.stats_path = a->stats;
        req.out_dir = a->out;
        req.criteria = split_list(a->criteria);
        for (const auto& k : split_list(a->keeps)) {
          try {
            req.keeps.push_back(std::stoll(k));
          } catch (...) {
            fail("--keep: '{}' is not an integer", k);
          }
        }
        req.budget = a->budget == "global" ? Budget::kGlobal : Budget::kUniform;
        req.seed = a->seed;
        req.n_threads = a->threads;
        req.force = a->force;
        req.data_files = a->data;
        req.eval.show_progress = false;
        req.eval.line_end = line_end_tokens(
            a->model, ModelConfig::load(std::filesystem::path(a->model) / "config.json").vocab_size);
        CalibOptions& co = a->calib;
        co.format = parse_data_format(a->format);
        clamp_seq_len(co, model_positions(a->model), "sweep");
        CalibReport rep;
        auto windows = load_token_windows(a->model, files, co, &rep, "sweep");
        limit_scored_tokens(windows, a->max_tokens);
        if (windows.empty()) fail("no evaluation tokens in the --data files");
        req.data_desc =
            fmt::format("{} ({} windows of <= {} tokens)",
                        std::filesystem::path(a->data.front()).filename().string() +
                            (a->data.size() > 1 ? fmt::format(" +{} files", a->data.size() - 1) : ""),
                        windows.size(), co.seq_len);
        SweepReport rep_out = run_sweep(req, windows);
        write_sweep_report(req, rep_out);
        std::printf("%s", sweep_table(rep_out).c_str());
        std::printf("report: %s/index.html\n", a->out.c_str());
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
