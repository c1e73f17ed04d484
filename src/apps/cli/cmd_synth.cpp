// sickle synth — write a deterministic random checkpoint in the real on-disk layout.
#include <fmt/format.h>

#include <cstdio>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/log.h"
#include "model/synth.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "synth", "Write a random but valid checkpoint (tiny-kimi, tiny-dsv3, mini, kimi-k2.5-layers)", 90,
    [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        SynthOptions opt;
        std::string out, dtype = "bf16", shard_size = "5GiB";
        bool dry_run = false;
      };
      auto a = std::make_shared<Args>();
      std::string presets;
      for (const auto& p : synth_presets()) presets += (presets.empty() ? "" : "|") + p;
      sub.add_option("--preset", a->opt.preset, presets)->required();
      sub.add_option("-o,--out", a->out, "Output directory (refused if it exists, unless --force)")
          ->required();
      sub.add_option("--seed", a->opt.seed, "Random seed (same seed, same bytes)");
      sub.add_option("--dtype", a->dtype, "Non-expert float weights: bf16|f32")
          ->check(CLI::IsMember({"bf16", "f32"}));
      sub.add_option(
             "--quant", a->opt.quant,
             "int4 (routed experts, compressed-tensors group 32) | fp8 (every linear but router, e4m3 "
             "128x128 blocks) | none; default: the preset's")
          ->check(CLI::IsMember({"int4", "fp8", "none"}));
      sub.add_option("--layers", a->opt.n_layers,
                     "Number of layers (first stays dense); default: the preset's");
      sub.add_option("--experts", a->opt.n_experts, "Routed experts per MoE layer; default: the preset's");
      sub.add_option("--shard-size", a->shard_size, "Shard size limit, e.g. 5GiB, 500MB");
      sub.add_flag("--force", a->opt.force, "Replace an existing output directory");
      sub.add_flag("--dry-run", a->dry_run, "Print the plan (tensors, bytes) and write nothing");
      return [a]() {
        a->opt.dtype = a->dtype == "f32" ? DType::F32 : DType::BF16;
        a->opt.max_shard_bytes = parse_shard_size(a->shard_size);
        if (!a->dry_run) check_output(a->out, OutputKind::kDirectory, a->opt.force, {});
        a->opt.progress = log_level() >= LogLevel::kInfo;
        SynthPlan plan = synth_plan(a->opt);
        const uint64_t bytes = plan.total_bytes();
        if (a->dry_run) {
          std::printf("%s: %zu tensors, %s (%llu bytes)\n", a->opt.preset.c_str(), plan.tensors.size(),
                      format_bytes(double(bytes)).c_str(), (unsigned long long)bytes);
          return 0;
        }
        log_info("synth: preset {} seed {} -> {} ({} tensors, {})", a->opt.preset, a->opt.seed, a->out,
                 plan.tensors.size(), format_bytes(double(bytes)));
        synth_write(plan, a->out, a->opt);
        std::printf("wrote %s: %zu tensors, %s\n", a->out.c_str(), plan.tensors.size(),
                    format_bytes(double(bytes)).c_str());
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
