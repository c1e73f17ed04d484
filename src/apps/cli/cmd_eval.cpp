// sickle eval — is the (pruned) model broken? Perplexity, agreement with a teacher, expert load,
// sanity checks, and gates for scripts.
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "eval/data.h"
#include "eval/evaluate.h"
#include "eval/metrics.h"
#include "model/model.h"

namespace sickle::cli {
namespace {

// Exit codes: 0 pass, 1 error, 2 a --fail-if gate fired or the checkpoint is broken (NaN/Inf).
constexpr int kGateFailed = 2;

Registrar reg{Command{
    "eval",
    "Perplexity, agreement with the original (--teacher), expert load and sanity checks; --fail-if gates for "
    "scripts",
    40, [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::string model, teacher, format = "text", fail_if, check_weights = "auto";
        std::vector<std::string> data;
        CalibOptions calib;
        int64_t max_tokens = 0, chunk = 256;
        int threads = 0;
        bool bf16_acts = false;
        bool json = false, csv = false;
      };
      auto a = std::make_shared<Args>();
      a->calib.seq_len = 2048;
      sub.add_option("-m,--model", a->model, "Model directory to evaluate (the student)")->required();
      sub.add_option("--data", a->data, "Held-out data files")->required();
      sub.add_option(
             "--format", a->format,
             "text|jsonl|chat-jsonl|tokens. chat-jsonl image_url parts (Kimi-K2.5: data:image/...;base64 "
             "URLs, file:// or plain paths relative to the jsonl file) go through the vision tower into "
             "the forward, the teacher's too; image positions and the token right after each image "
             "(<|media_end|>) are not scored")
          ->check(CLI::IsMember({"text", "jsonl", "chat-jsonl", "tokens"}));
      sub.add_option("--text-field", a->calib.text_field, "Field holding the text in jsonl");
      add_content_specials_flag(sub, a->calib.specials_in_content);
      sub.add_option("--teacher", a->teacher,
                     "The original model: adds top-1 agreement, KL(teacher||student), top-5");
      sub.add_option("--seq-len", a->calib.seq_len,
                     "Window length in tokens (capped at the model's context)");
      sub.add_option("--samples", a->calib.max_samples, "Use the first N documents (0 = all)");
      sub.add_flag(
          "--pack,!--no-pack", a->calib.pack,
          "Pack documents into seq-len windows (default) or keep each document (line) as its own window");
      sub.add_option("--max-tokens", a->max_tokens, "Score at most N tokens (0 = all)");
      add_threads_option(sub, a->threads);
      add_bf16_acts_option(sub, a->bf16_acts);
      sub.add_option("--chunk", a->chunk, "Positions per forward call (bounds memory for logits)")
          ->check(CLI::Range(int64_t(1), int64_t(1) << 20))
          ->capture_default_str();
      sub.add_option(
          "--fail-if", a->fail_if,
          "Comma-separated gates, e.g. \"ppl_ratio>1.5,top1<0.6\"; exit code 2 if any holds. Metrics: "
          "ppl, teacher_ppl, ppl_ratio, kl, top1, top5, nonfinite, dead_experts, tokens, line_em (next-line "
          "exact match: greedy decoding reproduces the line, scored on every newline-ended line), "
          "line_prefix (mean "
          "fraction of each line right before the first wrong token), lines");
      sub.add_option("--check-weights", a->check_weights,
                     "Scan stored weights for NaN/Inf: auto (<= 8 GiB), all, none")
          ->check(CLI::IsMember({"auto", "all", "none"}));
      sub.add_flag("--json", a->json, "Print results as JSON");
      sub.add_flag("--csv", a->csv, "Print results as CSV (one header line, one row)");
      return [a]() {
        namespace fs = std::filesystem;
        std::vector<std::string> known = {"ppl",    "teacher_ppl", "ppl_ratio",   "kl",
                                          "top1",   "top5",        "nonfinite",   "dead_experts",
                                          "tokens", "line_em",     "line_prefix", "lines"};
        std::vector<Gate> gates = a->fail_if.empty() ? std::vector<Gate>{} : parse_gates(a->fail_if, known);
        std::vector<fs::path> files(a->data.begin(), a->data.end());
        check_data_files(files);
        ModelOptions mo;
        mo.n_threads = a->threads;
        mo.bf16_activations = a->bf16_acts;
        mo.check_finite = false;  // NaN/Inf logits are counted and reported (exit 2), not an error
        auto student = Model::load(a->model, mo);
        std::unique_ptr<Model> teacher;
        if (!a->teacher.empty()) teacher = Model::load(a->teacher, mo);
        CalibOptions& co = a->calib;
        co.format = parse_data_format(a->format);
        int64_t ctx = student->max_context();
        if (teacher) ctx = std::min(ctx, teacher->max_context());
        clamp_seq_len(co, ctx, "eval");
        CalibReport rep;
        WindowImages images;
        images.checkpoint = &student->checkpoint();
        images.pool = &student->pool();
        auto windows = load_token_windows(a->model, files, co, &rep, "eval", &images);
        limit_scored_tokens(windows, a->max_tokens, &images.rows);
        if (teacher && images.n_images && teacher->config().hidden_size != student->config().hidden_size)
          fail(
              "--teacher {}: hidden size {} differs from the student's {}: the student's image embeddings "
              "cannot feed it",
              a->teacher, teacher->config().hidden_size, student->config().hidden_size);
        if (windows.empty()) fail("no evaluation tokens in {}", a->data.front());
        for (const auto& w : windows)
          for (int32_t t : w)
            if (t < 0 || t >= student->vocab_size())
              fail("token id {} is outside the model's vocabulary [0, {})", t, student->vocab_size());

        std::vector<std::string> weight_problems;
        bool scanned_all = true;
        if (a->check_weights != "none")
          weight_problems =
              scan_weights(student->checkpoint(), a->check_weights == "all" ? 0 : (8ull << 30), &scanned_all);

        EvalOptions eo;
        eo.chunk = a->chunk;
        eo.show_progress = !a->json && !a->csv;
        eo.line_end = line_end_tokens(a->model, student->vocab_size());
        EvalResult r = evaluate(*student, teacher.get(), windows, eo, images.rows);
        for (const auto& w : weight_problems) r.warnings.push_back("weights: " + w);
        auto values = r.values();
        values["bad_weight_tensors"] = double(weight_problems.size());
        auto fired = failing_gates(gates, values);
        bool broken = !weight_problems.empty() || r.totals.nonfinite_logits > 0;

        if (a->json) {
          nlohmann::json j;
          for (const auto& [k, v] : values)
            j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
          j["model"] = a->model;
          if (teacher) j["teacher"] = a->teacher;
          j["data_files"] = a->data;
          j["seq_len"] = co.seq_len;
          j["images"] = images.n_images;
          j["image_tokens"] = images.n_image_tokens;
          j["warnings"] = r.warnings;
          nlohmann::json load = nlohmann::json::object();
          for (const auto& [il, v] : r.expert_load) load[std::to_string(il)] = v;
          j["expert_load"] = load;
          j["gates_failed"] = nlohmann::json::array();
          for (const auto& g : fired) j["gates_failed"].push_back(g.text);
          j["pass"] = fired.empty() && !broken;
          std::printf("%s\n", j.dump(2).c_str());
        } else if (a->csv) {
          std::string head, row;
          for (const auto& [k, v] : values) {
            head += (head.empty() ? "" : ",") + k;
            row += (row.empty() ? "" : ",") + fmt::format("{:.6g}", v);
          }
          std::printf("%s\n%s\n", head.c_str(), row.c_str());
        } else {
          std::printf("model      %s\n", a->model.c_str());
          if (teacher) std::printf("teacher    %s\n", a->teacher.c_str());
          std::printf("data       %zu files, %lld windows of <= %lld tokens, %lld tokens scored\n",
                      a->data.size(), (long long)r.n_windows, (long long)co.seq_len,
                      (long long)r.totals.n_tokens);
          if (images.n_images)
            std::printf("images     %lld (%lld image tokens, never scored, nor the token after each image)\n",
                        (long long)images.n_images, (long long)images.n_image_tokens);
          std::printf("perplexity %.4f\n", r.totals.ppl());
          if (teacher) {
            std::printf("teacher    %.4f  (ratio %.4f)\n", r.totals.teacher_ppl(), r.totals.ppl_ratio());
            std::printf("top-1 agreement        %.4f\n", r.totals.top1());
            std::printf("teacher top-1 in top-5 %.4f\n", r.totals.top5());
            std::printf("KL(teacher||student)   %.5f nats/token\n", r.totals.mean_kl());
          }
          if (r.totals.lines)
            std::printf(
                "next-line exact match  %.4f  (%lld of %lld lines; right before the first miss: %.4f)\n",
                r.totals.line_em(), (long long)r.totals.lines_exact, (long long)r.totals.lines,
                r.totals.line_prefix());
          std::printf("expert load (chosen / fair share, min..max; dead = never chosen):\n");
          for (const auto& [il, v] : r.expert_load) {
            int64_t total = 0, mn = INT64_MAX, mx = 0, dead = 0;
            for (auto c : v) {
              total += c;
              mn = std::min(mn, c);
              mx = std::max(mx, c);
              dead += c == 0;
            }
            double fair = v.empty() ? 0 : double(total) / double(v.size());
            std::printf("  layer %3lld: %3zu experts, %.2f..%.2f, dead %lld\n", (long long)il, v.size(),
                        fair ? double(mn) / fair : 0.0, fair ? double(mx) / fair : 0.0, (long long)dead);
          }
          if (!scanned_all)
            std::printf("weights: scanned the first 8 GiB only (--check-weights all for everything)\n");
          for (const auto& w : r.warnings) std::printf("warning: %s\n", w.c_str());
          for (const auto& g : fired) std::printf("FAIL: %s\n", g.text.c_str());
          std::printf("%s (%.1f s)\n", fired.empty() && !broken ? "PASS" : "FAIL", r.seconds);
        }
        return fired.empty() && !broken ? 0 : kGateFailed;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
