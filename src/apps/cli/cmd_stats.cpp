// sickle stats show FILE — a readable summary of an expert statistics file.
#include <cstdio>

#include "apps/cli/command.h"
#include "prune/stats.h"

namespace sickle::cli {
namespace {

Registrar reg{Command{"stats", "Inspect expert statistics files (`sickle stats show FILE`)", 26,
                      [](CLI::App& sub) -> std::function<int()> {
                        auto file = std::make_shared<std::string>();
                        auto top = std::make_shared<int64_t>(5);
                        sub.require_subcommand(1);
                        CLI::App* show = sub.add_subcommand(
                            "show",
                            "Per layer: tokens, experts never chosen, top/bottom REAP, load imbalance");
                        show->add_option("file", *file, "Statistics file")->required();
                        show->add_option("--top", *top, "Experts listed at each end");
                        return [file, top]() {
                          ExpertStats s = ExpertStats::load(*file);
                          std::fputs(describe_stats(s, *top).c_str(), stdout);
                          return 0;
                        };
                      }}};

}  // namespace
}  // namespace sickle::cli
