// sickle/tokenizer/tokenizer.h — byte-level BPE tokenizers of the DeepSeek-V3 family.
//
// Two on-disk formats, one engine (raw bytes in, ids out):
//  - tiktoken (Kimi-K2/K2.5): `tiktoken.model` = lines `base64(token bytes) rank`, special
//    tokens from tokenizer_config.json `added_tokens_decoder` at ids [n_ranks, n_ranks+256)
//    (unnamed ones are `<|reserved_token_ID|>`), Kimi's pre-tokenizer regex (Moonshot's
//    tokenization_kimi.py), tiktoken's merge: repeatedly merge the adjacent pair whose
//    concatenation has the lowest rank (leftmost on ties); a piece that is itself a token
//    is emitted directly. See docs/formats.md §6.
//  - HF tokenizer.json byte-level BPE (DeepSeek-V3): added tokens (leftmost-longest match),
//    pre_tokenizer Sequence of Split(regex) + ByteLevel, BPE merges by merge-list rank,
//    ByteLevel decoder. The byte<->unicode table of GPT-2 is undone at load time, so the
//    engine works on raw bytes for both formats.
//
// encode() never adds BOS/EOS (Kimi adds none; DeepSeek-V3's chat template writes the BOS
// itself): callers that want one prepend bos_id(). Thread-safe: all methods are const and
// the merge cache is internally locked.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/prompt.h"

namespace sickle {

enum class TokenizerKind { kTiktoken, kHfByteLevel };

class TokenizerImpl;

class Tokenizer {
 public:
  // model_dir holds `tiktoken.model` + `tokenizer_config.json` (Kimi) or `tokenizer.json`
  // (+ optional `tokenizer_config.json`, HF). Errors name the file and the field at fault.
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& model_dir);
  // Explicit-file variants (tests, odd layouts). config may be empty for HF.
  static std::unique_ptr<Tokenizer> load_tiktoken(const std::filesystem::path& model_file,
                                                  const std::filesystem::path& config_file);
  static std::unique_ptr<Tokenizer> load_hf(const std::filesystem::path& tokenizer_json,
                                            const std::filesystem::path& config_file = {});
  ~Tokenizer();

  // allow_special: special/added-token strings in `text` become their ids (leftmost, longest
  // match, as tiktoken with allowed_special="all" and HF's AddedVocabulary do); otherwise
  // ALL of them (HF's non-special added tokens like <｜User｜> too) are encoded as ordinary
  // text, so untrusted text cannot inject control tokens.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;
  // A rendered chat prompt: special-token strings become ids only inside template spans;
  // message values are ordinary text, as with encode(value, false). Ordinary text is
  // pre-tokenized and merged across span boundaries as in the flat string, so a prompt whose
  // values hold no special-token strings gets exactly the ids of encode(prompt.text(), true).
  // specials_in_values: HF's default instead (the flat string with specials parsed; a user
  // can then forge turns) — for `--allow-special-tokens-in-content`.
  std::vector<int32_t> encode(const RenderedPrompt& prompt, bool specials_in_values = false) const;
  // Valid UTF-8 always: invalid byte sequences become U+FFFD (Python's errors="replace",
  // one per maximal invalid subpart). Special tokens are written as their text unless
  // skip_special. Ids out of range are an Error.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // Raw bytes of the tokens (no UTF-8 repair).
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;

  // Id of a special/added token given its text ("<|im_end|>"), -1 if none.
  int32_t token_id(std::string_view special) const;
  // Raw bytes a token decodes to (a special token's text for special ids); Error if out of range.
  std::string token_text(int32_t id) const;
  bool is_special(int32_t id) const;
  // Number of ids (ranks + specials for tiktoken; max id + 1 for HF).
  int64_t vocab_size() const;
  // Ids that end generation: Kimi <|im_end|> and [EOS]; DeepSeek-V3 its eos_token.
  std::vector<int32_t> stop_ids() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none

  TokenizerKind kind() const;
  // tokenizer_config.json as read (chat_template, bos_token, ...); empty object if absent.
  const nlohmann::json& config() const;
  // The directory the tokenizer files were read from (for chat_template.jinja).
  const std::filesystem::path& model_dir() const;
  // The pre-tokenizer's pieces of ordinary text (no special-token handling): for tests and
  // debugging the regex.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

 private:
  Tokenizer();
  std::unique_ptr<TokenizerImpl> impl_;
};

// Streaming detokenizer: push ids as they are generated, get text that is always complete
// UTF-8. Bytes of a character split across tokens are held back until the character is
// complete; bytes that can never become valid are emitted as U+FFFD.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  // Whatever is held back (an incomplete character becomes U+FFFD); resets the decoder.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: the start of an incomplete UTF-8 character
};

// UTF-8 helpers (also used by the server): replace invalid sequences with U+FFFD.
std::string utf8_sanitize(std::string_view bytes);
// Length of the longest prefix of `bytes` that ends on a character boundary, treating a
// trailing incomplete-but-valid-so-far sequence as not yet complete.
size_t utf8_complete_prefix(std::string_view bytes);

// Standard-alphabet base64 ('=' padding optional); nullopt on any other character.
std::optional<std::string> base64_decode(std::string_view in);

}  // namespace sickle
