// sickle — one binary, many subcommands. Thin: parse flags, call the library.
#include <algorithm>
#include <cstdio>
#include <exception>

#include "apps/cli/command.h"
#include "base/error.h"
#include "base/log.h"

namespace sickle::cli {
std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}
}  // namespace sickle::cli

int main(int argc, char** argv) {
  using namespace sickle;
  CLI::App app{
      "sickle — measure, prune (REAP), verify and run DeepSeek-V3-family MoE checkpoints on a CPU.\n"
      "Run `sickle COMMAND --help` for a command's options."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("sickle ") + SICKLE_VERSION);
  bool quiet = false, verbose = false;
  app.add_flag("-q,--quiet", quiet, "Only errors and results");
  app.add_flag("-v,--verbose", verbose, "Debug logging");
  auto& cmds = cli::registry();
  std::stable_sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  std::function<int()> to_run;
  std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.summary);
    runners.emplace_back(sub, c.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  set_log_level(quiet ? LogLevel::kQuiet : verbose ? LogLevel::kDebug : LogLevel::kInfo);
  try {
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const Error& e) {
    std::fprintf(stderr, "sickle: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sickle: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
