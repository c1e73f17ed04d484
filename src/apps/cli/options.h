// sickle/apps/cli/options.h — flags several commands share, validated the same way in each:
// thread counts, shard sizes, context lengths against the model's positions, the inputs an
// output is checked against (io/output_path.h).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "io/output_path.h"

namespace sickle {
class Tokenizer;
}

namespace sickle::cli {

// A compute thread count (`names`, e.g. "-t,--threads"): 1..4096 when given; not given leaves
// `n` at 0, which the runtime reads as every core.
CLI::Option* add_threads_option(CLI::App& sub, int& n, const std::string& names = "--threads");
// --bf16-acts: ModelOptions::bf16_activations (activations rounded to bf16 at bf16 weights).
CLI::Option* add_bf16_acts_option(CLI::App& sub, bool& on);

// --shard-size: a byte size (parse_bytes) that must be > 0.
uint64_t parse_shard_size(const std::string& text);

// max_position_embeddings in `model_dir`/config.json (reads nothing else).
int64_t model_positions(const std::filesystem::path& model_dir);

// --allow-long-context, for commands whose context flag may pass the model's positions.
CLI::Option* add_allow_long_context(CLI::App& sub, bool& allow);
// A context length asked for with `flag` (0 = the model's default, always fine): more than
// max_position_embeddings in `model_dir`/config.json is an Error unless `allow`. Returns the
// model's max_position_embeddings.
int64_t check_context(int64_t requested, const std::filesystem::path& model_dir, bool allow,
                      std::string_view flag);

// --chat-template FILE (vLLM's flag): a Jinja chat template file used instead of the
// checkpoint's for every conversation the command renders.
CLI::Option* add_chat_template_option(CLI::App& sub, std::string& path);
// Reads the file (an Error naming --chat-template and the path when unreadable) and installs
// it for `tokenizer` (tokenizer/chat.h override_chat_template). Nothing when `path` is empty.
void apply_chat_template_option(const Tokenizer& tokenizer, const std::string& path);

// Appends `files`, each named `what` (e.g. "--data file"), to the inputs for check_output.
std::vector<OutputInput> with_inputs(std::vector<OutputInput> inputs, std::string_view what,
                                     const std::vector<std::string>& files);

}  // namespace sickle::cli
