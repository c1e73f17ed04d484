// sickle/tokenizer/chat.h — chat formats: render OpenAI-style messages to prompt text, and
// parse generated text back into reasoning / content / tool calls.
//
// Kimi (docs/formats.md §6, Moonshot's chat_template): turns
// `<|im_ROLE|>NAME<|im_middle|>CONTENT<|im_end|>`, a `tool_declare` system turn for tools,
// tool calls in `<|tool_calls_section_begin|>` ... sections, tool results as
// `## Return of ID\n...`, generation prompt `<|im_assistant|>assistant<|im_middle|>` then
// `<think>` (thinking) or `<think></think>`.
// DeepSeek-V3 (its tokenizer_config chat_template): `<｜begin▁of▁sentence｜>SYSTEM<｜User｜>...
// <｜Assistant｜>...<｜end▁of▁sentence｜>`.
// The format is chosen from the tokenizer: tiktoken -> Kimi, HF byte-level -> DeepSeek-V3.
// Kimi tool declarations are K2.5's TypeScript style (kimi_tools_typescript), unless the
// model's own chat_template does not use `tools_ts_str` (K2 / K2-Thinking), or a schema
// cannot be converted: then compact JSON with sorted keys.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/prompt.h"
#include "tokenizer/tokenizer.h"

namespace sickle {

enum class ChatFormat { kKimi, kDeepSeekV3 };

ChatFormat chat_format_of(const Tokenizer& tokenizer);

// messages: [{role: system|user|assistant|tool, content: string|[{type:text,text}]|null,
//             reasoning_content?, tool_calls?: [{id?, type: function, function: {name,
//             arguments: string|object}}], tool_call_id? (tool), name?}]
// tools: OpenAI-style [{type: function, function: {name, description, parameters}}] or null.
// Malformed messages (unknown role, missing fields) are an Error naming the message index.
// The render tags every message value (content, reasoning, names, tool-call ids, types and
// arguments, tool results, the tool declaration) as a value span, so Tokenizer::encode of
// the result keeps special-token strings typed in them as text (prompt.h).
RenderedPrompt render_chat(const Tokenizer& tokenizer, const nlohmann::json& messages,
                           const nlohmann::json& tools, bool add_generation_prompt, bool thinking);
// With the checkpoint's own chat template (chat_template.jinja or tokenizer_config.json
// chat_template beside the tokenizer, see template/chat_template.h) when it has one, rendered as
// transformers does with chat_template_kwargs {thinking, enable_thinking} = `thinking`, or
// `kwargs` (an object: every key is passed). Without one, the built-in format below. `tools`
// keep their key order into the template (its `tojson` writes them in that order, as
// transformers does); a nlohmann::json converts, sorted.
RenderedPrompt render_chat(const Tokenizer& tokenizer, const nlohmann::json& messages,
                           const nlohmann::ordered_json& tools, bool add_generation_prompt, bool thinking,
                           const nlohmann::json& kwargs);
// Image parts ({type: image_url, image_url: {url}}) render, in the Kimi format only, as
// Kimi-K2.5's `<|media_begin|>image<|media_content|><|media_pad|><|media_end|>\n` in template
// text (so its markers encode as tokens) and are listed in RenderedPrompt::images in prompt
// order; a checkpoint template sees each as a marker in the string content that is replaced
// afterwards. Another format: an Error naming the part.
// For callers that do not embed images: an Error naming the first image part, if any.
void refuse_images(const RenderedPrompt& prompt, std::string_view who);
// Renders every conversation of `tokenizer` (the overloads above) with `source` instead of the
// checkpoint's template: vLLM's --chat-template. `origin` names it in -v logs and in Jinja
// error messages (the file path). A parse error is an Error naming `origin`.
void override_chat_template(const Tokenizer& tokenizer, const std::string& source, const std::string& origin);
// The built-in format of the tokenizer's family, whatever template the checkpoint has.
RenderedPrompt render_builtin_chat(const Tokenizer& tokenizer, const nlohmann::json& messages,
                                   const nlohmann::json& tools, bool add_generation_prompt, bool thinking);
RenderedPrompt render_chat(ChatFormat format, const nlohmann::json& messages, const nlohmann::json& tools,
                           bool add_generation_prompt, bool thinking);

// Kimi-K2.5's TypeScript-style tool declaration (`tools_ts_str`: "# Tools\n\n## functions\n
// namespace functions {...}"), as Moonshot's tool_declaration_ts.py writes it for deep-sorted
// tools. Empty for no function tools; an Error for schemas the reference rejects (the
// renderer then falls back to JSON, as Moonshot's template does).
std::string kimi_tools_typescript(const nlohmann::json& tools);

struct ToolCall {
  std::string id;         // Kimi: "functions.NAME:IDX" verbatim
  std::string name;       // part after the last '.' and before ':'
  std::string arguments;  // JSON text as generated
};

struct ParsedOutput {
  std::string reasoning;  // text inside <think>...</think>
  std::string content;    // the rest, without tool-call sections
  std::vector<ToolCall> tool_calls;
};

// Split generated text (decoded with special tokens kept). If `prompt_opened_think`, the
// output starts inside the reasoning block (the prompt ended with `<think>`).
ParsedOutput parse_output(ChatFormat format, std::string_view text, bool prompt_opened_think);

}  // namespace sickle
