// sickle observe — run calibration data through the model and record per-expert REAP statistics.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "eval/data.h"
#include "model/model.h"
#include "prune/calib_data.h"
#include "prune/fingerprint.h"
#include "prune/observer.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "observe",
    "Run calibration data through the model and record expert statistics (REAP, EAN, frequency...)", 20,
    [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::string model, out, format = "text", shard = "0/1", long_policy = "split";
        std::vector<std::string> data;
        CalibOptions calib;
        bool no_pack = false, force = false, no_stats = false;
        int threads = 0;
        int64_t step_tokens = 2048;
      };
      auto a = std::make_shared<Args>();
      sub.add_option("-m,--model", a->model, "Model directory")->required();
      sub.add_option("--data", a->data, "Calibration data files")->required();
      sub.add_option(
             "--format", a->format,
             "text|jsonl|chat-jsonl|tokens. chat-jsonl image_url parts (Kimi-K2.5: data:image/...;base64 "
             "URLs, file:// or plain paths relative to the jsonl file) go through the vision tower; the "
             "image positions pass through the MoE layers like text and their routing is counted in "
             "the statistics")
          ->check(CLI::IsMember({"text", "jsonl", "chat-jsonl", "tokens"}));
      sub.add_option("--text-field", a->calib.text_field, "Field holding the text in jsonl");
      add_content_specials_flag(sub, a->calib.specials_in_content);
      sub.add_option("--samples", a->calib.max_samples, "Use the first N documents (0 = all)");
      sub.add_option("--seq-len", a->calib.seq_len,
                     "Sequence length (default 2048, capped at the model's context)");
      sub.add_flag("--pack,!--no-pack", a->calib.pack,
                   "Pack documents into seq-len windows (default) or keep them whole");
      sub.add_option("--long", a->long_policy, "With --no-pack, a document longer than seq-len: split|drop")
          ->check(CLI::IsMember({"split", "drop"}));
      sub.add_option("--shard", a->shard,
                     "i/n: observe every n-th sequence starting at i (merge with `sickle merge`)");
      add_threads_option(sub, a->threads);
      sub.add_option("--step-tokens", a->step_tokens,
                     "Tokens per forward step (sequences batched up to this)")
          ->check(CLI::Range(int64_t(1), int64_t(1) << 24))
          ->capture_default_str();
      sub.add_option("-o,--out", a->out, "Statistics file (.safetensors; never the model or a --data file)")
          ->required();
      sub.add_flag("--force", a->force, "Replace an existing output file");
      sub.add_flag(
          "--no-stats", a->no_stats,
          "Run the same forward passes without the observer and write nothing (measures observation cost)");
      return [a]() {
        namespace fs = std::filesystem;
        std::vector<fs::path> files(a->data.begin(), a->data.end());
        if (!a->no_stats)  // --no-stats writes nothing
          check_output(a->out, OutputKind::kFile, a->force,
                       with_inputs({{"model directory", a->model}}, "--data file", a->data));
        check_data_files(files);
        CalibOptions& co = a->calib;
        co.format = parse_data_format(a->format);
        co.long_policy = a->long_policy == "drop" ? LongPolicy::kDrop : LongPolicy::kSplit;
        parse_shard(a->shard, co.shard_index, co.n_shards);
        clamp_seq_len(co, model_positions(a->model), "observe");
        ModelOptions mo;
        mo.n_threads = a->threads;
        mo.max_step_tokens = std::max<int64_t>(a->step_tokens, co.seq_len);
        auto model = Model::load(a->model, mo);
        CalibReport rep;
        WindowImages images;
        images.checkpoint = &model->checkpoint();
        images.pool = &model->pool();
        auto seqs = load_token_windows(a->model, files, co, &rep, "observe", &images);
        if (seqs.empty()) fail("no calibration tokens in this shard: nothing to observe");
        const int64_t vocab = model->vocab_size();
        for (const auto& s : seqs)
          for (int32_t t : s)
            if (t < 0 || t >= vocab)
              fail("calibration token id {} is outside the model's vocabulary [0, {})", t, vocab);

        StatsObserver obs(model->config());
        if (!a->no_stats) model->set_observer(&obs);
        std::vector<float> logits;
        auto t0 = std::chrono::steady_clock::now();
        {
          Progress bar("observe", uint64_t(rep.tokens_used), "tok");
          size_t i = 0;
          while (i < seqs.size()) {
            // Batch whole sequences up to step_tokens (at least one) into one step.
            std::vector<std::unique_ptr<Sequence>> live;
            std::vector<StepItem> items;
            int64_t n = 0;
            while (i < seqs.size() && (items.empty() || n + int64_t(seqs[i].size()) <= a->step_tokens)) {
              live.push_back(model->new_sequence());
              items.push_back(StepItem{live.back().get(), std::span<const int32_t>(seqs[i]), false});
              if (!images.rows[i].empty()) items.back().embed_rows = images.rows[i];  // image positions
              n += int64_t(seqs[i].size());
              ++i;
            }
            model->forward(std::span<StepItem>(items), logits);
            bar.add(uint64_t(n));
          }
          bar.finish();
        }
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        model->set_observer(nullptr);
        if (a->no_stats) {
          std::printf("forward only (--no-stats): %lld tokens in %lld sequences in %.2f s (%.1f tok/s)\n",
                      (long long)rep.tokens_used, (long long)rep.n_sequences, secs,
                      double(rep.tokens_used) / std::max(secs, 1e-9));
          return 0;
        }

        ExpertStats st;
        st.meta.model_fingerprint = model_fingerprint(model->checkpoint());
        st.meta.model_dir = fs::absolute(a->model).string();
        st.meta.data = rep.files;
        st.meta.data_format = a->format;
        st.meta.data_options = co.key();
        st.meta.samples = rep.n_sequences;
        st.meta.tokens = rep.tokens_used;
        st.meta.seq_len = co.seq_len;
        st.meta.n_shards = co.n_shards;
        st.meta.shards = {co.shard_index};
        st.meta.created = utc_now_iso();
        st.layers = obs.take();
        st.save(a->out);
        std::printf("observed %lld tokens in %lld sequences in %.2f s (%.1f tok/s) -> %s\n",
                    (long long)rep.tokens_used, (long long)rep.n_sequences, secs,
                    double(rep.tokens_used) / std::max(secs, 1e-9), a->out.c_str());
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
