// sickle/prune/calib_data.h — calibration / evaluation text -> token sequences (reap.md,
// "Calibration"). Reusable by observe and eval.
//
// Formats: text (each file is one document), jsonl (one object per line, a string field,
// default "text"), chat-jsonl (OpenAI-style {"messages": [...]}, rendered with the model's chat
// format without a generation prompt), tokens ({"tokens": [ids...]} per line; no tokenizer).
// `max_samples` takes the first N documents. Documents are then packed (concatenated and cut
// into seq_len windows; the last shorter window is kept) or kept whole (a longer document is
// split into seq_len windows or dropped, by `long_policy`). Sharding takes every n-th
// SEQUENCE of that list, so the shards of a run partition exactly the sequences of the
// unsharded run and their statistics merge to the same sums.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "prune/stats.h"

namespace sickle {

enum class DataFormat { kText, kJsonl, kChatJsonl, kTokens };
DataFormat parse_data_format(std::string_view name);  // throws listing the valid names
std::string_view data_format_name(DataFormat f);

enum class LongPolicy { kSplit, kDrop };

struct CalibOptions {
  DataFormat format = DataFormat::kText;
  int64_t max_samples = 0;  // 0 = every document
  int64_t seq_len = 2048;
  bool pack = true;
  LongPolicy long_policy = LongPolicy::kSplit;
  int64_t shard_index = 0, n_shards = 1;
  std::string text_field = "text";  // jsonl
  int32_t bos_id = -1;  // prepended to each text/jsonl document when >= 0 (chat: the template decides)
  // chat-jsonl: special-token strings in message values are control tokens (HF's default;
  // --allow-special-tokens-in-content) instead of text. Read by the encoder's maker (eval/data).
  bool specials_in_content = false;
  // Canonical text of the settings that define the sequence list (recorded in statistics so
  // only shards of the same run merge).
  std::string key() const;
};

// How text becomes tokens; `encode_chat` (a conversation and its tool declarations, null when
// the record has none, in the record's key order -> the ids of its rendered prompt) is needed
// only for chat-jsonl.
struct CalibEncoder {
  std::function<std::vector<int32_t>(const std::string& text)> encode;
  std::function<std::vector<int32_t>(const nlohmann::json& messages, const nlohmann::ordered_json& tools)>
      encode_chat;
  // chat-jsonl with images (takes precedence over encode_chat when set): also given the data
  // file (image paths are relative to its directory); returns the ids and, per id, an input row
  // owned by the encoder (an image embedding) or null, or no rows for a text-only record.
  struct Rows {
    std::vector<int32_t> ids;
    std::vector<const float*> rows;
  };
  std::function<Rows(const nlohmann::json& messages, const nlohmann::ordered_json& tools,
                     const std::filesystem::path& file)>
      encode_chat_rows;
};

struct CalibReport {
  int64_t n_documents = 0;             // documents read
  int64_t n_sequences_total = 0;       // sequences before sharding
  int64_t n_sequences = 0;             // sequences in this shard
  int64_t tokens_total = 0;            // tokens of all documents
  int64_t tokens_used = 0;             // tokens in this shard's sequences
  int64_t tokens_dropped = 0;          // tokens of documents dropped as too long (whole run)
  int64_t n_dropped = 0, n_split = 0;  // documents dropped / split as too long
  std::vector<DataFileInfo> files;     // with content hashes
};

// `enc` may be null for DataFormat::kTokens. Throws Error naming the file and line at fault.
// `rows` (with CalibEncoder::encode_chat_rows): per returned sequence, its tokens' input rows as
// packing, splitting and sharding cut them — empty for a sequence without any.
std::vector<std::vector<int32_t>> load_samples(const std::vector<std::filesystem::path>& files,
                                               const CalibOptions& opt, const CalibEncoder* enc,
                                               CalibReport* report = nullptr,
                                               std::vector<std::vector<const float*>>* rows = nullptr);

// Every data file must be a regular file or a pipe the user named (`--data <(zcat x.gz)`): a
// directory is an error saying so, a device (/dev/zero) or socket is refused (read whole, it
// would never end or never be the same twice). load_samples checks this too; commands call it
// first to fail before loading a model.
void check_data_files(const std::vector<std::filesystem::path>& files);

// Parses "i/n" (0 <= i < n).
void parse_shard(std::string_view text, int64_t& index, int64_t& n);

}  // namespace sickle
