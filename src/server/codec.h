// sickle/server/codec.h — the narrow view of a tokenizer the server needs.
//
// The server talks to this interface, not to tokenizer/tokenizer.h directly, so its parsing
// and streaming can be unit-tested on token sequences with a tiny fake vocabulary; the real
// tokenizer is adapted by a thin class (make_codec).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/prompt.h"

namespace sickle {
class Tokenizer;
}

namespace sickle::server {

// Incremental detokenizer of one response: text out is always whole UTF-8 characters.
// Special tokens produce no text (they are recognised by id by the caller).
class TokenTextStream {
 public:
  virtual ~TokenTextStream() = default;
  virtual std::string push(int32_t id) = 0;
  virtual std::string flush() = 0;
};

class TextCodec {
 public:
  virtual ~TextCodec() = default;
  // Special-token strings in `text` become their ids (raw /v1/completions prompts, as vLLM).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // A rendered chat prompt: special-token strings become ids in template spans only; in
  // message values they are text unless the codec allows specials in content.
  virtual std::vector<int32_t> encode(const RenderedPrompt& prompt) const = 0;
  // Id of a special token by its text, -1 if none.
  virtual int32_t special_id(std::string_view text) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  // Raw bytes of one token (for logprobs).
  virtual std::string token_text(int32_t id) const = 0;
  virtual int64_t vocab_size() const = 0;
  // Ids that end generation (<|im_end|>, [EOS]).
  virtual std::vector<int32_t> stop_ids() const = 0;
  virtual std::unique_ptr<TokenTextStream> new_stream() const = 0;
  // Chat messages (normalized OpenAI form) + tools (array or null) -> the prompt with the
  // generation prompt, by the checkpoint's chat template when it has one (with the request's
  // chat_template_kwargs, `thinking` / `enable_thinking` set to `thinking`), else the built-in
  // format, where `thinking` selects `<think>` or `<think></think>` for Kimi. `tools` keep the
  // caller's key order (the template's tojson writes it); add_generation_prompt false renders
  // the conversation alone (vLLM's field).
  virtual RenderedPrompt render_chat(const nlohmann::json& messages, const nlohmann::ordered_json& tools,
                                     bool thinking, const nlohmann::json& template_kwargs,
                                     bool add_generation_prompt) const = 0;
  RenderedPrompt render_chat(const nlohmann::json& messages, const nlohmann::ordered_json& tools,
                             bool thinking) const {
    return render_chat(messages, tools, thinking, nlohmann::json::object(), true);
  }
};

// The real tokenizer + chat format behind the interface. Keeps a reference: `tok` must outlive it.
// specials_in_content: special-token strings in message values are control tokens too (HF's
// default; `serve --allow-special-tokens-in-content`).
std::unique_ptr<TextCodec> make_codec(const Tokenizer& tok, bool specials_in_content = false);

}  // namespace sickle::server
