// sickle/apps/cli/command.h — subcommand registry. Each cmd_*.cpp registers itself with a
// static Registrar, so adding a command touches no shared file.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace sickle::cli {

struct Command {
  std::string name;
  std::string summary;
  int order = 100;  // position in `sickle --help`
  // Adds options to `sub`; returns the function to run once parsed (its result is the exit code).
  std::function<std::function<int()>(CLI::App& sub)> setup;
};

std::vector<Command>& registry();

struct Registrar {
  explicit Registrar(Command c) { registry().push_back(std::move(c)); }
};

}  // namespace sickle::cli
