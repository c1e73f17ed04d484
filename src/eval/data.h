// sickle/eval/data.h — text data to token windows for a model directory: the model's tokenizer
// (and chat format for chat-jsonl) wired into prune/calib_data's loader, which both observe and
// eval use so that calibration and evaluation tokenize identically.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "prune/calib_data.h"

namespace sickle {

class Checkpoint;
class ThreadPool;
class Tokenizer;

// Images of chat-jsonl records (Kimi-K2.5): OpenAI image_url parts whose url is a
// `data:image/...;base64,` URL, a `file://` path or a plain path, relative paths taken from the
// directory of the jsonl file (`base_dir`). Each image's media placeholder is expanded to its
// token count (vision/prompt.h) and those positions take the projected rows of `checkpoint`'s
// vision tower.
struct WindowImages {
  const Checkpoint* checkpoint = nullptr;  // in: the model whose tower embeds the images
  ThreadPool* pool = nullptr;              // in: for the tower (may be null)
  // out, per window: empty (no image position), or per token its input row (null = text).
  std::vector<std::vector<const float*>> rows;
  std::shared_ptr<std::vector<std::vector<float>>> storage;  // out: owns the rows
  int64_t n_images = 0, n_image_tokens = 0;                  // out: over all records read
};

// The bytes an image part's url names (see WindowImages); http(s) and other schemes are refused
// (never the network). Errors name `field` (messages[i].content[j]).
std::string image_part_bytes(const std::string& url, const std::string& field,
                             const std::filesystem::path& base_dir);

// Loads `files` as token sequences per `opt`. For formats other than `tokens` the tokenizer of
// `model_dir` is loaded (an error if there is none); plain text never injects control tokens,
// chat-jsonl is rendered with the chat format without a generation prompt (special-token
// strings in message values stay text unless opt.specials_in_content); opt.bos_id is set
// from the tokenizer unless the caller set it. Logs what was used. Image parts: with `images`,
// embedded as WindowImages says (a checkpoint without vision_config: an Error naming FILE:LINE
// and the part); without, an Error naming FILE:LINE and the part (`what` cannot take them).
std::vector<std::vector<int32_t>> load_token_windows(const std::filesystem::path& model_dir,
                                                     const std::vector<std::filesystem::path>& files,
                                                     CalibOptions& opt, CalibReport* report, const char* what,
                                                     WindowImages* images = nullptr);

// Caps opt.seq_len at `ctx` (the model's context) with a warning naming both: the default
// --seq-len 2048 on a model with fewer positions is not an error. `what` prefixes the warning.
void clamp_seq_len(CalibOptions& opt, int64_t ctx, const char* what);

// [vocab]: 1 where the token's text (as the tokenizer of `model_dir` decodes it, specials
// excluded) contains '\n' — the line ends of EvalOptions::line_end. Empty when the model
// directory has no tokenizer (e.g. `--format tokens` data for a tokenizer-less checkpoint).
std::vector<uint8_t> line_end_tokens(const std::filesystem::path& model_dir, int64_t vocab);

// Keeps leading windows (cutting the last one) so that at most `max_tokens` positions are
// scored (a text window of n tokens scores n-1; with image rows, see scored_position). `rows`
// (WindowImages::rows, or null) is cut the same way. 0 = no limit.
void limit_scored_tokens(std::vector<std::vector<int32_t>>& windows, int64_t max_tokens,
                         std::vector<std::vector<const float*>>* rows = nullptr);

}  // namespace sickle
