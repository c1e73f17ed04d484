#include "apps/cli/options.h"

#include "base/error.h"
#include "base/file.h"
#include "base/log.h"
#include "io/config.h"
#include "tokenizer/chat.h"

namespace sickle::cli {

CLI::Option* add_threads_option(CLI::App& sub, int& n, const std::string& names) {
  return sub.add_option(names, n, "Compute threads, 1..4096 (default: all cores)")
      ->check(CLI::Range(1, 4096));
}

CLI::Option* add_bf16_acts_option(CLI::App& sub, bool& on) {
  return sub.add_flag("--bf16-acts", on,
                      "Round activations to bf16 where they meet bf16 weights, as llama.cpp and bf16 GPU "
                      "inference do: each product moves by up to 2^-9 of itself; on CPUs with AVX512_BF16 "
                      "(Zen 4+, Sapphire Rapids) the bf16 matmuls run twice as fast (prompt processing "
                      "+25-35% at Kimi-K2.5's widths). Default: f32 activations, exact products");
}

uint64_t parse_shard_size(const std::string& text) {
  const uint64_t n = parse_bytes(text, "--shard-size");
  if (n == 0) fail("--shard-size {}: must be more than 0 bytes (e.g. 5GiB)", text);
  return n;
}

CLI::Option* add_allow_long_context(CLI::App& sub, bool& allow) {
  return sub.add_flag(
      "--allow-long-context", allow,
      "Allow a context longer than the model's max_position_embeddings (which already includes any "
      "YaRN rope_scaling in config.json): positions past it were never trained and output degrades");
}

int64_t model_positions(const std::filesystem::path& model_dir) {
  return ModelConfig::load(model_dir / "config.json").max_position_embeddings;
}

int64_t check_context(int64_t requested, const std::filesystem::path& model_dir, bool allow,
                      std::string_view flag) {
  if (requested < 0) fail("{} {}: must be >= 0 (0 = the model's)", flag, requested);
  const int64_t positions = model_positions(model_dir);
  if (requested > positions && !allow)
    fail(
        "{} {} exceeds the model's max_position_embeddings {} ({}; with YaRN rope_scaling that is already "
        "the "
        "extended length): pass --allow-long-context to use positions it was never trained on",
        flag, requested, positions, (model_dir / "config.json").string());
  return positions;
}

CLI::Option* add_chat_template_option(CLI::App& sub, std::string& path) {
  return sub
      .add_option("--chat-template", path,
                  "A Jinja chat template file to render conversations with, instead of the checkpoint's "
                  "(chat_template.jinja / tokenizer_config.json chat_template); see `sickle chat-template`")
      ->check(CLI::ExistingFile);
}

void apply_chat_template_option(const Tokenizer& tokenizer, const std::string& path) {
  if (path.empty()) return;
  override_chat_template(tokenizer, read_file(path, "--chat-template"), path);
}

std::vector<OutputInput> with_inputs(std::vector<OutputInput> inputs, std::string_view what,
                                     const std::vector<std::string>& files) {
  for (const auto& f : files) inputs.push_back({std::string(what), f});
  return inputs;
}

}  // namespace sickle::cli
