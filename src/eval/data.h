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

class Tokenizer;

// Loads `files` as token sequences per `opt`. For formats other than `tokens` the tokenizer of
// `model_dir` is loaded (an error if there is none); plain text never injects control tokens,
// chat-jsonl is rendered with the chat format without a generation prompt (special-token
// strings in message values stay text unless opt.specials_in_content); opt.bos_id is set
// from the tokenizer unless the caller set it. Logs what was used.
std::vector<std::vector<int32_t>> load_token_windows(const std::filesystem::path& model_dir,
                                                     const std::vector<std::filesystem::path>& files,
                                                     CalibOptions& opt, CalibReport* report,
                                                     const char* what);

// Caps opt.seq_len at `ctx` (the model's context) with a warning naming both: the default
// --seq-len 2048 on a model with fewer positions is not an error. `what` prefixes the warning.
void clamp_seq_len(CalibOptions& opt, int64_t ctx, const char* what);

// [vocab]: 1 where the token's text (as the tokenizer of `model_dir` decodes it, specials
// excluded) contains '\n' — the line ends of EvalOptions::line_end. Empty when the model
// directory has no tokenizer (e.g. `--format tokens` data for a tokenizer-less checkpoint).
std::vector<uint8_t> line_end_tokens(const std::filesystem::path& model_dir, int64_t vocab);

// Keeps leading windows (cutting the last one) so that at most `max_tokens` positions are
// scored (a window of n tokens scores n-1). 0 = no limit.
void limit_scored_tokens(std::vector<std::vector<int32_t>>& windows, int64_t max_tokens);

}  // namespace sickle
