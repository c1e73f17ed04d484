// sickle merge — sum statistics shards exactly.
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "apps/cli/command.h"
#include "apps/cli/options.h"
#include "base/error.h"
#include "base/log.h"
#include "prune/stats.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{
    "merge",
    "Sum statistics shards (`observe --shard i/n`) exactly; refuses other models' and overlapping shards; "
    "warns "
    "about missing shards (--require-complete refuses)",
    25, [](CLI::App& sub) -> std::function<int()> {
      struct Args {
        std::vector<std::string> inputs;
        std::string out;
        MergeOptions opt;
        bool force = false;
      };
      auto a = std::make_shared<Args>();
      sub.add_option("inputs", a->inputs, "Statistics files")->required();
      sub.add_option("-o,--out", a->out, "Merged statistics file (never one of the inputs)")->required();
      sub.add_flag("--require-complete", a->opt.require_complete, "Refuse when some shards of n are missing");
      sub.add_flag(
          "--allow-different-data", a->opt.allow_different_data,
          "Sum statistics of different calibration data (each input then counts as its own data set)");
      sub.add_flag("--force", a->force, "Replace an existing output file");
      return [a]() {
        check_output(a->out, OutputKind::kFile, a->force, with_inputs({}, "statistics file", a->inputs));
        std::vector<ExpertStats> parts;
        for (const auto& p : a->inputs) parts.push_back(ExpertStats::load(p));
        std::vector<int64_t> missing;
        ExpertStats m = merge_stats(parts, a->inputs, a->opt, &missing);
        if (!missing.empty())
          log_warn(
              "shards {} of {} are missing: the merged statistics cover only part of the data (pass "
              "--require-complete to refuse)",
              nlohmann::json(missing).dump(), m.meta.n_shards);
        m.save(a->out);
        std::printf("merged %zu files -> %s: %lld samples, %lld tokens, shards %s of %lld\n", parts.size(),
                    a->out.c_str(), (long long)m.meta.samples, (long long)m.meta.tokens,
                    nlohmann::json(m.meta.shards).dump().c_str(), (long long)m.meta.n_shards);
        return 0;
      };
    }}};

}  // namespace
}  // namespace sickle::cli
