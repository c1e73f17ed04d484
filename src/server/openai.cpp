// sickle/server/openai.cpp — see openai.h.
#include "server/openai.h"

#include <fmt/format.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <set>

#include "server/structured.h"

namespace sickle::server {

using nlohmann::json;

ApiError::ApiError(int status_, std::string message_, std::string param_, std::string type_,
                   std::string code_)
    : status(status_),
      message(std::move(message_)),
      param(std::move(param_)),
      type(std::move(type_)),
      code(std::move(code_)) {
  if (type.empty()) {
    // The error types api.openai.com uses for these statuses.
    type = status == 401   ? "authentication_error"
           : status == 404 ? "not_found_error"
           : status == 429 ? "rate_limit_error"
           : status >= 500 ? "server_error"
                           : "invalid_request_error";
  }
}

json ApiError::to_json() const {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}};
}

namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::string: return "string";
    case json::value_t::array: return "array";
    case json::value_t::object: return "object";
    case json::value_t::number_float: return "number";
    default: return "integer";
  }
}

[[noreturn]] void bad_type(const std::string& field, const char* expected, const json& v) {
  throw ApiError(
      400, fmt::format("Invalid type for '{}': expected {}, but got {}.", field, expected, type_name(v)),
      field, "invalid_request_error", "invalid_type");
}

[[noreturn]] void bad_value(const std::string& field, const std::string& why) {
  throw ApiError(400, fmt::format("Invalid value for '{}': {}", field, why), field, "invalid_request_error",
                 "invalid_value");
}

// Reads optional fields; null counts as absent (the openai clients send null for unset fields).
bool get_bool(const json& o, const char* k, bool dflt) {
  auto it = o.find(k);
  if (it == o.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) bad_type(k, "a boolean", *it);
  return it->get<bool>();
}

std::optional<double> get_number(const json& o, const char* k, double lo, double hi) {
  auto it = o.find(k);
  if (it == o.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) bad_type(k, "a number", *it);
  double v = it->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi) bad_value(k, fmt::format("{} is not in [{}, {}].", v, lo, hi));
  return v;
}

std::optional<int64_t> get_int(const json& o, const char* k, int64_t lo, int64_t hi) {
  auto it = o.find(k);
  if (it == o.end() || it->is_null()) return std::nullopt;
  // 5.0 is accepted as an integer, as the OpenAI API does; 5.5 is not.
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15) bad_type(k, "an integer", *it);
    int64_t v = static_cast<int64_t>(d);
    if (v < lo || v > hi) bad_value(k, fmt::format("{} is not in [{}, {}].", v, lo, hi));
    return v;
  }
  if (!it->is_number_integer()) bad_type(k, "an integer", *it);
  int64_t v =
      it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : it->get<int64_t>();
  if (v < lo || v > hi) bad_value(k, fmt::format("{} is not in [{}, {}].", v, lo, hi));
  return v;
}

void check_known(const json& body, const std::set<std::string>& known, const ParseOptions& opt,
                 std::vector<std::string>& ignored) {
  for (auto& [k, v] : body.items()) {
    if (known.count(k)) continue;
    if (!opt.strict) {
      ignored.push_back(k);
      continue;
    }
    throw ApiError(400, fmt::format("Unrecognized request argument supplied: {}", k), k,
                   "invalid_request_error", "unknown_parameter");
  }
}

// Fields accepted by both endpoints (OpenAI's, plus vLLM's sampling extensions).
const std::set<std::string> kCommonFields = {"model",
                                             "stream",
                                             "stream_options",
                                             "max_tokens",
                                             "temperature",
                                             "top_p",
                                             "top_k",
                                             "min_p",
                                             "seed",
                                             "stop",
                                             "n",
                                             "user",
                                             "presence_penalty",
                                             "frequency_penalty",
                                             "repetition_penalty",
                                             "logit_bias",
                                             "ignore_eos",
                                             "skip_special_tokens",
                                             "metadata",
                                             "store",
                                             "service_tier",
                                             "min_tokens",
                                             "stop_token_ids",
                                             "include_stop_str_in_output",
                                             "guided_json",
                                             "guided_regex",
                                             "guided_choice",
                                             "structured_outputs"};  // server/structured.h

// min_max_tokens: 1 for chat; 0 for completions (max_tokens 0 = score the prompt only).
void parse_common(const json& body, SamplingFields& r, int64_t min_max_tokens) {
  if (auto m = body.find("model"); m != body.end() && !m->is_null()) {
    if (!m->is_string()) bad_type("model", "a string", *m);
    r.model = m->get<std::string>();
  }

  r.stream = get_bool(body, "stream", false);
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) bad_type("stream_options", "an object", *it);
    if (!r.stream) bad_value("stream_options", "only allowed when 'stream' is true.");
    for (auto& [k, v] : it->items())
      if (k != "include_usage" && k != "continuous_usage_stats")
        throw ApiError(400, fmt::format("Unrecognized request argument supplied: stream_options.{}", k),
                       "stream_options." + k);
    r.include_usage = get_bool(*it, "include_usage", false);
    r.continuous_usage = get_bool(*it, "continuous_usage_stats", false);
  }
  if (auto n = get_int(body, "n", 1, 128)) r.n = *n;
  auto mt = get_int(body, "max_tokens", min_max_tokens, INT32_MAX);
  if (auto mct = get_int(body, "max_completion_tokens", 1, INT32_MAX)) mt = mct;
  r.max_tokens = mt;
  if (auto t = get_number(body, "temperature", 0, 2)) r.temperature = *t;
  if (auto t = get_number(body, "top_p", 0, 1)) {
    if (*t == 0) bad_value("top_p", "must be in (0, 1].");
    r.top_p = *t;
  }
  if (auto k = get_int(body, "top_k", -1, INT32_MAX)) r.top_k = *k < 0 ? 0 : *k;
  if (auto p = get_number(body, "min_p", 0, 1)) r.min_p = *p;
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer()) bad_type("seed", "an integer", *it);
    r.seed = it->is_number_unsigned() ? it->get<uint64_t>() : static_cast<uint64_t>(it->get<int64_t>());
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      r.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (auto& s : *it) {
        if (!s.is_string()) bad_type("stop", "a string or an array of strings", *it);
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      bad_type("stop", "a string or an array of strings", *it);
    }
    if (r.stop.size() > 4) bad_value("stop", "at most 4 stop sequences are allowed.");
    for (auto& s : r.stop)
      if (s.empty()) bad_value("stop", "stop sequences must not be empty.");
  }
  if (auto v = get_number(body, "presence_penalty", -2, 2)) r.presence_penalty = *v;
  if (auto v = get_number(body, "frequency_penalty", -2, 2)) r.frequency_penalty = *v;
  if (auto v = get_number(body, "repetition_penalty", 0, 100)) {
    if (*v == 0) bad_value("repetition_penalty", "must be > 0.");
    r.repetition_penalty = *v;
  }
  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) bad_type("logit_bias", "an object", *it);
    for (auto& [k, v] : it->items()) {
      const std::string f = "logit_bias." + k;
      char* end = nullptr;
      errno = 0;
      const long long id = std::strtoll(k.c_str(), &end, 10);
      if (k.empty() || *end != '\0' || errno != 0 || id < 0 || id > INT32_MAX)
        bad_value("logit_bias", fmt::format("key '{}' is not a token id.", k));
      if (!v.is_number()) bad_type(f, "a number", v);
      const double b = v.get<double>();
      if (!std::isfinite(b) || b < -100 || b > 100) bad_value(f, fmt::format("{} is not in [-100, 100].", b));
      r.logit_bias.emplace_back(int32_t(id), float(b));
    }
  }
  if (auto v = get_int(body, "min_tokens", 0, INT32_MAX)) r.min_tokens = *v;
  if (r.max_tokens && r.min_tokens > *r.max_tokens)
    bad_value("min_tokens",
              fmt::format("min_tokens ({}) must be <= max_tokens ({}).", r.min_tokens, *r.max_tokens));
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) bad_type("stop_token_ids", "an array of token ids", *it);
    for (auto& v : *it) {
      if (!v.is_number_integer()) bad_type("stop_token_ids", "an array of token ids", *it);
      const int64_t id = v.get<int64_t>();
      if (id < 0 || id > INT32_MAX)
        bad_value("stop_token_ids", fmt::format("token id {} is out of range.", id));
      r.stop_token_ids.push_back(int32_t(id));
    }
  }
  r.include_stop_str_in_output = get_bool(body, "include_stop_str_in_output", false);
  if (auto it = body.find("user"); it != body.end() && !it->is_null() && !it->is_string())
    bad_type("user", "a string", *it);
  r.ignore_eos = get_bool(body, "ignore_eos", false);
  r.skip_special_tokens = get_bool(body, "skip_special_tokens", true);
}

// Message content: a string, null, or an array of {"type": "text", "text": ...} and
// {"type": "image_url", "image_url": {"url": ...}} parts. Text only: the parts joined into one
// string. With an image: the parts, normalized and at their indexes (the chat renderer names
// them `messages[i].content[k]`; server/media.h reads the urls).
json normalize_content(const json& c, const std::string& field) {
  if (c.is_null() || c.is_string()) return c;
  if (!c.is_array()) bad_type(field, "a string or an array of content parts", c);
  std::string text;
  json parts = json::array();
  bool has_image = false;
  for (size_t i = 0; i < c.size(); ++i) {
    const json& part = c[i];
    std::string pf = fmt::format("{}[{}]", field, i);
    if (!part.is_object()) bad_type(pf, "an object", part);
    auto t = part.find("type");
    if (t == part.end() || !t->is_string())
      throw ApiError(400, fmt::format("Missing required parameter: '{}.type'.", pf), pf + ".type");
    if (*t == "image_url") {
      // {"url": ...} (OpenAI) or a bare string (as vLLM accepts).
      const json* u = part.contains("image_url") ? &part["image_url"] : nullptr;
      if (u && u->is_object()) u = u->contains("url") ? &(*u)["url"] : nullptr;
      if (!u || !u->is_string())
        bad_type(pf + ".image_url.url", "a string (data:image/png;base64,...)", u ? *u : json());
      parts.push_back({{"type", "image_url"}, {"image_url", {{"url", *u}}}});
      has_image = true;
      continue;
    }
    if (*t != "text")
      bad_value(pf + ".type", fmt::format("'{}' content parts are not supported (text and image_url only).",
                                          t->get<std::string>()));
    auto x = part.find("text");
    if (x == part.end() || !x->is_string()) bad_type(pf + ".text", "a string", x == part.end() ? json() : *x);
    text += x->get<std::string>();
    parts.push_back({{"type", "text"}, {"text", *x}});
  }
  return has_image ? parts : json(text);
}

json normalize_messages(const json& body) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null())
    throw ApiError(400, "Missing required parameter: 'messages'.", "messages");
  if (!it->is_array()) bad_type("messages", "an array", *it);
  if (it->empty()) bad_value("messages", "messages must not be empty.");
  json out = json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    std::string f = fmt::format("messages[{}]", i);
    if (!m.is_object()) bad_type(f, "an object", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      throw ApiError(400, fmt::format("Missing required parameter: '{}.role'.", f), f + ".role");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant" && r != "tool")
      bad_value(f + ".role", fmt::format("'{}' is not one of system, developer, user, assistant, tool.", r));
    json nm = {{"role", r}};
    auto c = m.find("content");
    json content = c == m.end() ? json() : normalize_content(*c, f + ".content");
    if (content.is_null() && r != "assistant")
      throw ApiError(400, fmt::format("Missing required parameter: '{}.content'.", f), f + ".content");
    nm["content"] = content;
    if (auto n = m.find("name"); n != m.end() && !n->is_null()) {
      if (!n->is_string()) bad_type(f + ".name", "a string", *n);
      nm["name"] = *n;
    }
    if (r == "assistant") {
      if (auto rc = m.find("reasoning_content"); rc != m.end() && !rc->is_null()) {
        if (!rc->is_string()) bad_type(f + ".reasoning_content", "a string", *rc);
        nm["reasoning_content"] = *rc;
      }
      if (auto tc = m.find("tool_calls"); tc != m.end() && !tc->is_null()) {
        if (!tc->is_array()) bad_type(f + ".tool_calls", "an array", *tc);
        json calls = json::array();
        for (size_t j = 0; j < tc->size(); ++j) {
          const json& call = (*tc)[j];
          std::string cf = fmt::format("{}.tool_calls[{}]", f, j);
          if (!call.is_object()) bad_type(cf, "an object", call);
          auto id = call.find("id");
          if (id == call.end() || !id->is_string())
            bad_type(cf + ".id", "a string", id == call.end() ? json() : *id);
          auto fn = call.find("function");
          if (fn == call.end() || !fn->is_object())
            bad_type(cf + ".function", "an object", fn == call.end() ? json() : *fn);
          auto name = fn->find("name");
          if (name == fn->end() || !name->is_string())
            bad_type(cf + ".function.name", "a string", name == fn->end() ? json() : *name);
          auto args = fn->find("arguments");
          if (args == fn->end() || !args->is_string())
            bad_type(cf + ".function.arguments", "a string", args == fn->end() ? json() : *args);
          calls.push_back(
              {{"id", *id}, {"type", "function"}, {"function", {{"name", *name}, {"arguments", *args}}}});
        }
        nm["tool_calls"] = calls;
      }
    }
    if (r == "tool") {
      auto id = m.find("tool_call_id");
      if (id == m.end() || !id->is_string())
        throw ApiError(400, fmt::format("Missing required parameter: '{}.tool_call_id'.", f),
                       f + ".tool_call_id");
      nm["tool_call_id"] = *id;
    }
    out.push_back(std::move(nm));
  }
  return out;
}

json normalize_tools(const json& body) {
  auto it = body.find("tools");
  if (it == body.end() || it->is_null()) return nullptr;
  if (!it->is_array()) bad_type("tools", "an array", *it);
  json out = json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    std::string f = fmt::format("tools[{}]", i);
    if (!t.is_object()) bad_type(f, "an object", t);
    auto ty = t.find("type");
    if (ty == t.end() || !ty->is_string() || *ty != "function")
      bad_value(f + ".type", "only 'function' tools are supported.");
    auto fn = t.find("function");
    if (fn == t.end() || !fn->is_object())
      bad_type(f + ".function", "an object", fn == t.end() ? json() : *fn);
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string() || name->get<std::string>().empty())
      throw ApiError(400, fmt::format("Missing required parameter: '{}.function.name'.", f),
                     f + ".function.name");
    if (auto p = fn->find("parameters"); p != fn->end() && !p->is_null() && !p->is_object())
      bad_type(f + ".function.parameters", "an object", *p);
    if (auto d = fn->find("description"); d != fn->end() && !d->is_null() && !d->is_string())
      bad_type(f + ".function.description", "a string", *d);
    out.push_back(t);
  }
  return out.empty() ? json() : out;
}

}  // namespace

json sampling_defaults_from_generation_config(const json& gc) {
  json d = json::object();
  if (!gc.is_object()) return d;
  for (const char* k : {"temperature", "top_p", "top_k", "min_p", "repetition_penalty"})
    if (auto it = gc.find(k); it != gc.end() && it->is_number()) d[k] = *it;
  return d;
}

void apply_sampling_defaults(json& body, const json& defaults) {
  if (!defaults.is_object()) return;
  for (auto& [k, v] : defaults.items())
    if (auto it = body.find(k); it == body.end() || it->is_null()) body[k] = v;
}

json parse_body(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw ApiError(
        400,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
        "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        "", "invalid_request_error", "invalid_json");
  if (!j.is_object()) bad_type("body", "an object", j);
  return j;
}

ChatRequest parse_chat_request(const json& body, const ParseOptions& opt) {
  std::set<std::string> known = kCommonFields;
  for (const char* k :
       {"messages", "tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs",
        "max_completion_tokens", "chat_template_kwargs", "response_format", "reasoning_effort",
        "function_call", "functions", "continue_final_message", "add_generation_prompt"})
    known.insert(k);
  ChatRequest r;
  check_known(body, known, opt, r.ignored_fields);
  parse_common(body, r, 1);
  r.messages = normalize_messages(body);
  if (auto it = body.find("functions"); it != body.end() && !it->is_null())
    bad_value("functions", "the deprecated 'functions' parameter is not supported; use 'tools'.");
  r.tools = normalize_tools(body);
  if (auto it = body.find("tool_choice"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      r.tool_choice = it->get<std::string>();
      if (r.tool_choice != "none" && r.tool_choice != "auto" && r.tool_choice != "required")
        bad_value("tool_choice", "must be 'none', 'auto', 'required' or a named function.");
    } else if (it->is_object()) {
      auto fn = it->find("function");
      if (fn == it->end() || !fn->is_object() || !fn->contains("name") || !(*fn)["name"].is_string())
        bad_type("tool_choice.function.name", "a string", fn == it->end() ? json() : *fn);
      r.tool_choice = "named";
      r.tool_choice_name = (*fn)["name"].get<std::string>();
    } else {
      bad_type("tool_choice", "a string or an object", *it);
    }
    if (r.tool_choice != "none" && r.tool_choice != "auto" && r.tools.is_null())
      bad_value("tool_choice", "'tool_choice' is only allowed when 'tools' are specified.");
    if (r.tool_choice == "named") {
      bool found = false;
      for (auto& t : r.tools) found |= t["function"]["name"] == r.tool_choice_name;
      if (!found) bad_value("tool_choice", fmt::format("no tool named '{}' in 'tools'.", r.tool_choice_name));
    }
  }
  r.parallel_tool_calls = get_bool(body, "parallel_tool_calls", true);
  // vLLM's chat-template switches (as transformers defines them; vLLM refuses both true).
  r.add_generation_prompt = get_bool(body, "add_generation_prompt", true);
  r.continue_final_message = get_bool(body, "continue_final_message", false);
  if (r.add_generation_prompt && r.continue_final_message)
    bad_value("continue_final_message",
              "cannot set both 'continue_final_message' and 'add_generation_prompt' to true.");
  if (r.continue_final_message && !r.messages.back()["content"].is_string())
    bad_value("continue_final_message",
              fmt::format("the final message (messages[{}]) has no text content to continue.",
                          r.messages.size() - 1));
  r.logprobs = get_bool(body, "logprobs", false);
  if (auto k = get_int(body, "top_logprobs", 0, 20)) {
    if (!r.logprobs && *k > 0)
      bad_value("top_logprobs", "'logprobs' must be true when 'top_logprobs' is set.");
    r.top_logprobs = *k;
  }
  if (auto it = body.find("chat_template_kwargs"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) bad_type("chat_template_kwargs", "an object", *it);
    r.template_kwargs = *it;  // every key reaches the template (vLLM); thinking is checked below
    for (const char* k : {"thinking", "enable_thinking"})
      if (auto t = it->find(k); t != it->end() && !t->is_null()) {
        if (!t->is_boolean()) bad_type(std::string("chat_template_kwargs.") + k, "a boolean", *t);
        r.thinking = t->get<bool>();
      }
  }
  r.grammar = parse_structured(body, /*with_response_format=*/true);
  if (auto it = body.find("reasoning_effort"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) bad_type("reasoning_effort", "a string", *it);
    // Kimi / DeepSeek thinking is on or off, with no effort levels: refused rather than ignored.
    throw ApiError(400,
                   "Invalid value for 'reasoning_effort': this model has no reasoning effort levels; use "
                   "chat_template_kwargs: {\"thinking\": false} (or true) to turn reasoning off or on.",
                   "reasoning_effort", "invalid_request_error", "unsupported_parameter");
  }
  return r;
}

nlohmann::ordered_json tools_in_order(const std::string& body_text) {
  const auto body = nlohmann::ordered_json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object()) return nullptr;
  auto it = body.find("tools");
  if (it == body.end() || !it->is_array() || it->empty()) return nullptr;
  return *it;
}

TokenizeRequest parse_tokenize_request(const json& body, const ParseOptions& opt) {
  TokenizeRequest r;
  const bool is_chat = body.contains("messages");
  if (auto it = body.find("add_special_tokens"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) bad_type("add_special_tokens", "a boolean", *it);
    if (it->get<bool>())
      bad_value("add_special_tokens",
                "this server adds no special tokens around a prompt or a rendered "
                "conversation (the tokens are exactly what it would feed the model); only false "
                "is supported.");
  }
  r.return_token_strs = get_bool(body, "return_token_strs", false);
  if (is_chat) {
    json chat = body;
    chat.erase("add_special_tokens");
    chat.erase("return_token_strs");
    r.chat = parse_chat_request(chat, opt);
    r.model = r.chat->model;
    r.ignored_fields = r.chat->ignored_fields;
    return r;
  }
  check_known(body, {"model", "prompt", "add_special_tokens", "return_token_strs"}, opt, r.ignored_fields);
  if (auto m = body.find("model"); m != body.end() && !m->is_null()) {
    if (!m->is_string()) bad_type("model", "a string", *m);
    r.model = m->get<std::string>();
  }
  auto p = body.find("prompt");
  if (p == body.end() || p->is_null())
    throw ApiError(400, "Missing required parameter: 'prompt' (or 'messages').", "prompt");
  if (!p->is_string()) bad_type("prompt", "a string", *p);
  r.prompt = p->get<std::string>();
  return r;
}

DetokenizeRequest parse_detokenize_request(const json& body, const ParseOptions& opt) {
  DetokenizeRequest r;
  check_known(body, {"model", "tokens"}, opt, r.ignored_fields);
  if (auto m = body.find("model"); m != body.end() && !m->is_null()) {
    if (!m->is_string()) bad_type("model", "a string", *m);
    r.model = m->get<std::string>();
  }
  auto t = body.find("tokens");
  if (t == body.end() || t->is_null()) throw ApiError(400, "Missing required parameter: 'tokens'.", "tokens");
  if (!t->is_array()) bad_type("tokens", "an array of token ids", *t);
  for (const json& v : *t) {
    if (!v.is_number_integer()) bad_type("tokens", "an array of token ids", *t);
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id > INT32_MAX) bad_value("tokens", fmt::format("token id {} is out of range.", id));
    r.tokens.push_back(static_cast<int32_t>(id));
  }
  return r;
}

CompletionRequest parse_completion_request(const json& body, const ParseOptions& opt) {
  std::set<std::string> known = kCommonFields;
  for (const char* k : {"prompt", "echo", "logprobs", "suffix", "best_of"}) known.insert(k);
  CompletionRequest r;
  check_known(body, known, opt, r.ignored_fields);
  parse_common(body, r, 0);
  r.grammar = parse_structured(body, /*with_response_format=*/false);
  auto p = body.find("prompt");
  if (p == body.end() || p->is_null()) throw ApiError(400, "Missing required parameter: 'prompt'.", "prompt");
  // A string, a list of token ids, or a batch: a list of strings or a list of token-id lists.
  auto token_ids = [](const json& a, const std::string& field) {
    std::vector<int32_t> ids;
    for (auto& v : a) {
      if (!v.is_number_integer()) bad_type(field, "a string or an array of token ids", a);
      int64_t id = v.get<int64_t>();
      if (id < 0 || id > INT32_MAX) bad_value(field, fmt::format("token id {} is out of range.", id));
      ids.push_back(static_cast<int32_t>(id));
    }
    if (ids.empty()) bad_value(field, "the prompt must not be empty.");
    return ids;
  };
  if (p->is_string()) {
    r.prompts.push_back(p->get<std::string>());
  } else if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array())) {
    for (size_t i = 0; i < p->size(); ++i) {
      const json& e = (*p)[i];
      const std::string f = fmt::format("prompt[{}]", i);
      if (e.is_string()) r.prompts.push_back(e.get<std::string>());
      else if (e.is_array()) r.prompts.push_back(token_ids(e, f));
      else bad_type(f, "a string or an array of token ids", e);
    }
  } else if (p->is_array()) {
    r.prompts.push_back(token_ids(*p, "prompt"));
  } else {
    bad_type("prompt", "a string or an array of token ids", *p);
  }
  r.prompt = r.prompts.front();
  r.echo = get_bool(body, "echo", false);
  r.logprobs = get_int(body, "logprobs", 0, 20);
  if (auto s = body.find("suffix"); s != body.end() && !s->is_null())
    bad_value("suffix", "suffix is not supported.");
  if (auto b = get_int(body, "best_of", INT64_MIN, INT64_MAX); b && *b != 1)
    bad_value("best_of", "only best_of=1 is supported.");
  if (!r.max_tokens) r.max_tokens = 16;  // the /v1/completions default
  return r;
}

// ---- responses ----

json Usage::to_json() const {
  json u = {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  if (cached_tokens > 0) u["prompt_tokens_details"] = {{"cached_tokens", cached_tokens}};
  return u;
}

namespace {
json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}
// nlohmann::json refuses to dump invalid UTF-8 with the default handler; a token's text can
// be a partial character, so dumps use the replace handler (U+FFFD), as OpenAI shows them.
}  // namespace

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json chat_logprobs_json(const std::vector<TokenLogprob>& tokens) {
  json content = json::array();
  for (auto& t : tokens) {
    json top = json::array();
    for (auto& a : t.top)
      top.push_back({{"token", a.token}, {"logprob", a.logprob}, {"bytes", bytes_of(a.token)}});
    content.push_back(
        {{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_of(t.token)}, {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

json chat_completion_json(const std::string& id, int64_t created, const std::string& model,
                          const ChatChoice& c, const Usage& usage) {
  return chat_completion_json(id, created, model, std::vector<ChatChoice>{c}, usage);
}

json chat_completion_json(const std::string& id, int64_t created, const std::string& model,
                          const std::vector<ChatChoice>& cs, const Usage& usage) {
  json choices = json::array();
  for (size_t i = 0; i < cs.size(); ++i) {
    const ChatChoice& c = cs[i];
    json msg = {{"role", "assistant"},
                {"content", c.content.empty() && !c.tool_calls.empty() ? json() : json(c.content)}};
    if (!c.reasoning.empty()) msg["reasoning_content"] = c.reasoning;
    if (!c.tool_calls.empty()) {
      json calls = json::array();
      for (auto& t : c.tool_calls)
        calls.push_back({{"id", t.id},
                         {"type", "function"},
                         {"function", {{"name", t.name}, {"arguments", t.arguments}}}});
      msg["tool_calls"] = calls;
    }
    choices.push_back({{"index", i},
                       {"message", msg},
                       {"finish_reason", c.finish_reason},
                       {"logprobs", c.logprobs ? chat_logprobs_json(*c.logprobs) : json()},
                       {"stop_reason", c.stop_reason}});
  }
  return json{
      {"id", id},           {"object", "chat.completion"}, {"created", created},           {"model", model},
      {"choices", choices}, {"usage", usage.to_json()},    {"system_fingerprint", nullptr}};
}

json chat_chunk_json(const std::string& id, int64_t created, const std::string& model, const json& delta,
                     const std::optional<std::string>& finish_reason, const json& logprobs, int64_t index) {
  json choice = {{"index", index},
                 {"delta", delta},
                 {"logprobs", logprobs},
                 {"finish_reason", finish_reason ? json(*finish_reason) : json()}};
  return json{{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
              {"model", model}, {"choices", json::array({choice})},  {"system_fingerprint", nullptr}};
}

json chat_usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                           const Usage& usage) {
  return json{{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
              {"model", model}, {"choices", json::array()},          {"usage", usage.to_json()}};
}

json completion_logprobs_json(const std::vector<CompletionToken>& tokens, int64_t offset0) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
  int64_t off = offset0;
  for (auto& t : tokens) {
    toks.push_back(t.token);
    lps.push_back(t.logprob ? json(*t.logprob) : json());
    if (t.logprob) {
      json top = json::object();
      for (auto& [tok, lp] : t.top)
        if (!top.contains(tok)) top[tok] = lp;  // a dict: the first (best) entry of a text wins
      tops.push_back(top);
    } else {
      tops.push_back(nullptr);
    }
    offs.push_back(off);
    off += int64_t(t.token.size());
  }
  return json{{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

json completion_json(const std::string& id, int64_t created, const std::string& model,
                     const std::string& text, const std::string& finish_reason, const Usage& usage,
                     const json& logprobs) {
  return completion_json(id, created, model,
                         std::vector<CompletionChoice>{{text, finish_reason, logprobs, nullptr}}, usage);
}

json completion_json(const std::string& id, int64_t created, const std::string& model,
                     const std::vector<CompletionChoice>& cs, const Usage& usage) {
  json choices = json::array();
  for (size_t i = 0; i < cs.size(); ++i)
    choices.push_back({{"index", i},
                       {"text", cs[i].text},
                       {"logprobs", cs[i].logprobs},
                       {"finish_reason", cs[i].finish_reason},
                       {"stop_reason", cs[i].stop_reason}});
  return json{{"id", id},       {"object", "text_completion"}, {"created", created},
              {"model", model}, {"choices", choices},          {"usage", usage.to_json()}};
}

json completion_chunk_json(const std::string& id, int64_t created, const std::string& model,
                           const std::string& text, const std::optional<std::string>& finish_reason,
                           int64_t index, const json& logprobs) {
  json choice = {{"index", index},
                 {"text", text},
                 {"logprobs", logprobs},
                 {"finish_reason", finish_reason ? json(*finish_reason) : json()}};
  return json{{"id", id},
              {"object", "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", json::array({choice})}};
}

json completion_usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                 const Usage& usage) {
  return json{{"id", id},       {"object", "text_completion"}, {"created", created},
              {"model", model}, {"choices", json::array()},    {"usage", usage.to_json()}};
}

json models_json(const std::vector<std::string>& ids, int64_t created, int64_t max_model_len) {
  json data = json::array();
  for (auto& id : ids)
    data.push_back({{"id", id},
                    {"object", "model"},
                    {"created", created},
                    {"owned_by", "sickle"},
                    {"root", ids.front()},
                    {"max_model_len", max_model_len}});
  return json{{"object", "list"}, {"data", data}};
}

std::string sse_event(const json& j) { return "data: " + dump_json(j) + "\n\n"; }

std::string new_request_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt =
      std::random_device{}() ^ uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  uint64_t x = salt + 0x9E3779B97F4A7C15ull * ++counter;  // splitmix64
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return fmt::format("{}{:016x}", prefix, x);
}

}  // namespace sickle::server
