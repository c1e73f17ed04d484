// sickle/template/chat_template.cpp — template lookup and apply_chat_template's context.
#include "template/chat_template.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/file.h"
#include "tokenizer/chat.h"

namespace sickle {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

// Moonshot's deep_sort_dict: object keys sorted at every level.
ojson deep_sorted(const ojson& j) {
  if (j.is_object()) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : j.items()) keys.push_back(k);
    std::sort(keys.begin(), keys.end());
    ojson out = ojson::object();
    for (const auto& k : keys) out[k] = deep_sorted(j[k]);
    return out;
  }
  if (j.is_array()) {
    ojson out = ojson::array();
    for (const auto& e : j) out.push_back(deep_sorted(e));
    return out;
  }
  return j;
}

}  // namespace

ojson read_tokenizer_config(const fs::path& model_dir) {
  fs::path p = model_dir / "tokenizer_config.json";
  if (!fs::exists(p)) return ojson::object();
  try {
    ojson j = ojson::parse(read_file(p));
    if (!j.is_object()) fail("{}: expected a JSON object", p.string());
    return j;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", p.string(), e.what());
  }
}

std::optional<ChatTemplateSource> find_chat_template(const fs::path& model_dir, const ojson& cfg,
                                                     bool has_tools) {
  fs::path jinja = model_dir / "chat_template.jinja";
  if (fs::exists(jinja)) return ChatTemplateSource{read_file(jinja), jinja.string()};
  if (!cfg.is_object() || !cfg.contains("chat_template") || cfg["chat_template"].is_null())
    return std::nullopt;
  std::string where = (model_dir / "tokenizer_config.json").string() + " chat_template";
  const ojson& ct = cfg["chat_template"];
  if (ct.is_string()) return ChatTemplateSource{ct.get<std::string>(), where};
  if (!ct.is_array()) fail("{}: expected a string or a list of {{name, template}}", where);
  const ojson* def = nullptr;
  const ojson* tool_use = nullptr;
  for (size_t i = 0; i < ct.size(); ++i) {
    const ojson& e = ct[i];
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("template") ||
        !e["template"].is_string())
      fail("{}[{}]: expected {{\"name\": string, \"template\": string}}", where, i);
    if (e["name"] == "default") def = &e;
    if (e["name"] == "tool_use") tool_use = &e;
  }
  if (has_tools && tool_use)
    return ChatTemplateSource{(*tool_use)["template"].get<std::string>(), where + "[tool_use]"};
  if (def) return ChatTemplateSource{(*def)["template"].get<std::string>(), where + "[default]"};
  fail("{}: several named templates and none is 'default' (transformers refuses this too)", where);
}

RenderedPrompt render_chat_template(const tmpl::Template& t, const ojson& cfg, const ChatRequest& req) {
  ojson specials = ojson::object();
  if (cfg.is_object()) {
    for (const auto& [k, v] : cfg.items()) {
      bool is_token = k.size() > 6 && k.compare(k.size() - 6, 6, "_token") == 0;
      if (!is_token) continue;
      if (v.is_string()) specials[k] = v;
      else if (v.is_object() && v.contains("content") && v["content"].is_string()) specials[k] = v["content"];
    }
    if (cfg.contains("additional_special_tokens") && cfg["additional_special_tokens"].is_array()) {
      ojson extra = ojson::array();
      for (const auto& v : cfg["additional_special_tokens"]) {
        if (v.is_string()) extra.push_back(v);
        else if (v.is_object() && v.contains("content")) extra.push_back(v["content"]);
      }
      specials["additional_special_tokens"] = extra;
    }
  }
  if (!req.messages.is_array()) fail("messages: expected a list");
  if (!req.tools.is_null() && !req.tools.is_array()) fail("tools: expected a list or null");
  if (!req.kwargs.is_object()) fail("chat_template_kwargs: expected an object");
  ojson values = ojson::object();
  values["messages"] = req.messages;
  values["tools"] = req.tools;
  values["documents"] = nullptr;
  values["add_generation_prompt"] = req.add_generation_prompt;
  if (t.uses_tools_ts_str()) {
    // Moonshot's tokenization_kimi.py: deep-sorted tools, and their TypeScript declaration.
    values["tools_ts_str"] = nullptr;
    if (!req.tools.is_null()) {
      values["tools"] = deep_sorted(req.tools);
      if (!req.tools.empty()) {
        try {
          values["tools_ts_str"] = kimi_tools_typescript(nlohmann::json::parse(req.tools.dump()));
        } catch (const Error&) {
          values["tools_ts_str"] = nullptr;  // Moonshot: conversion failed -> the template's JSON path
        }
      }
    }
  }
  for (const auto& [k, v] : req.kwargs.items()) values[k] = v;
  return t.render(values, specials);
}

}  // namespace sickle
