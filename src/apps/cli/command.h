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

// The one switch of every command that renders chat messages (serve, chat, run --chat,
// observe / eval --format chat-jsonl): see tokenizer/prompt.h.
inline CLI::Option* add_content_specials_flag(CLI::App& sub, bool& value) {
  return sub.add_flag(
      "--allow-special-tokens-in-content", value,
      "Special-token strings typed in chat messages (<|im_end|>, <|im_system|>, "
      "<｜end▁of▁sentence｜>...) become control tokens, as HF's apply_chat_template + encode do. "
      "Default: they are plain text, so message content cannot close a turn or forge a system "
      "turn or tool call");
}

}  // namespace sickle::cli
