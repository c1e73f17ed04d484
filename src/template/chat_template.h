// sickle/template/chat_template.h — a checkpoint's own chat template: where transformers
// finds it, and the context apply_chat_template renders it with.
//
// Lookup (transformers' tokenizer loading + get_chat_template): `chat_template.jinja` in the
// model directory, else tokenizer_config.json `chat_template`: a string, or a list of
// {name, template}: `tool_use` when tools are passed (even an empty list) and there is one,
// else `default`; a list with neither is an Error, as in transformers.
// Context: messages, tools (null when absent), documents (null), add_generation_prompt, the
// tokenizer config's special tokens (`*_token` as a string or {"content": ...}, and
// additional_special_tokens) as template text, and every chat_template_kwargs key as data.
// Kimi K2.5 (a template that uses `tools_ts_str`): tools deep-sorted and `tools_ts_str` from
// kimi_tools_typescript, null when the schema cannot be converted, as Moonshot's
// tokenization_kimi.py apply_chat_template does.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>

#include "template/template.h"
#include "tokenizer/prompt.h"

namespace sickle {

struct ChatTemplateSource {
  std::string source;  // the Jinja text
  std::string origin;  // "DIR/chat_template.jinja" or "DIR/tokenizer_config.json chat_template[tool_use]"
};

// The checkpoint's template, nullopt when it has none. Errors for unreadable files and
// malformed `chat_template` fields.
std::optional<ChatTemplateSource> find_chat_template(const std::filesystem::path& model_dir,
                                                     const nlohmann::ordered_json& tokenizer_config,
                                                     bool has_tools);

struct ChatRequest {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: none
  bool add_generation_prompt = true;
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();  // chat_template_kwargs
};

// Renders `req` with the template as transformers' apply_chat_template(tokenize=False) does.
RenderedPrompt render_chat_template(const tmpl::Template& tmpl,
                                    const nlohmann::ordered_json& tokenizer_config, const ChatRequest& req);

// tokenizer_config.json read with its key order (an empty object when the file is absent).
nlohmann::ordered_json read_tokenizer_config(const std::filesystem::path& model_dir);

}  // namespace sickle
