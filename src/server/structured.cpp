// sickle/server/structured.cpp — request fields to grammars, and per-sequence constraints (see structured.h).
#include "server/structured.h"

#include "base/error.h"
#include "grammar/json_schema.h"
#include "grammar/regex_grammar.h"
#include "server/codec.h"
#include "server/openai.h"
#include "server/output_parser.h"

namespace sickle::server {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& field, const std::string& message) {
  throw ApiError(400, fmt::format("Invalid '{}': {}", field, message), field, "invalid_request_error",
                 "invalid_value");
}

// Compiles with the engine's errors turned into a 400 on `field`.
template <class F>
auto compile(const std::string& field, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    bad(field, e.what());
  }
}

std::shared_ptr<const grammar::Grammar> schema(const std::string& field, const json& s, bool strict) {
  if (!s.is_object() && !s.is_boolean()) bad(field, "a JSON Schema must be an object.");
  grammar::SchemaOptions opt;
  opt.strict = strict;
  return compile(field, [&] { return grammar::compile_json_schema(s, opt); });
}

std::shared_ptr<const grammar::Grammar> regex(const std::string& field, const json& p) {
  if (!p.is_string()) bad(field, "expected a string (a regular expression).");
  return compile(field, [&] { return grammar::compile_regex(p.get<std::string>()); });
}

std::shared_ptr<const grammar::Grammar> choice(const std::string& field, const json& c) {
  if (!c.is_array() || c.empty()) bad(field, "expected a non-empty array of strings.");
  std::vector<std::string> list;
  for (const json& v : c) {
    if (!v.is_string()) bad(field, "expected a non-empty array of strings.");
    list.push_back(v.get<std::string>());
  }
  return grammar::compile_choice(list);
}

std::shared_ptr<const grammar::Grammar> response_format(const json& rf) {
  if (!rf.is_object()) bad("response_format", "expected an object.");
  auto t = rf.find("type");
  if (t == rf.end() || !t->is_string())
    bad("response_format.type", "expected 'text', 'json_object' or 'json_schema'.");
  if (*t == "text") return nullptr;
  if (*t == "json_object") return grammar::json_object_grammar();
  if (*t != "json_schema") bad("response_format.type", "expected 'text', 'json_object' or 'json_schema'.");
  auto js = rf.find("json_schema");
  if (js == rf.end() || !js->is_object())
    bad("response_format.json_schema", "expected an object with 'name' and 'schema'.");
  auto name = js->find("name");
  if (name == js->end() || !name->is_string()) bad("response_format.json_schema.name", "expected a string.");
  bool strict = false;
  if (auto s = js->find("strict"); s != js->end() && !s->is_null()) {
    if (!s->is_boolean()) bad("response_format.json_schema.strict", "expected a boolean.");
    strict = s->get<bool>();
  }
  auto sc = js->find("schema");
  // OpenAI: a missing schema means any JSON object.
  if (sc == js->end() || sc->is_null()) return grammar::json_object_grammar();
  return schema("response_format.json_schema.schema", *sc, strict);
}

}  // namespace

std::shared_ptr<const grammar::Grammar> parse_structured(const json& body, bool with_response_format) {
  std::vector<std::string> given;
  for (const char* k : kStructuredFields)
    if (auto it = body.find(k); it != body.end() && !it->is_null()) given.push_back(k);
  if (with_response_format)
    if (auto it = body.find("response_format"); it != body.end() && !it->is_null())
      given.push_back("response_format");
  if (given.empty()) return nullptr;
  if (given.size() > 1)
    bad(given[1], fmt::format("only one of '{}' and '{}' may be given.", given[0], given[1]));
  const std::string& f = given[0];
  const json& v = body[f];
  if (f == "response_format") return response_format(v);
  if (f == "guided_json")
    return schema(f, v.is_string() ? json::parse(v.get<std::string>(), nullptr, false) : v, false);
  if (f == "guided_regex") return regex(f, v);
  if (f == "guided_choice") return choice(f, v);
  // structured_outputs: exactly one of json / regex / choice
  if (!v.is_object() || v.size() != 1) bad(f, "expected an object with one of 'json', 'regex', 'choice'.");
  const auto first = v.begin();  // (a binding to *v.items().begin() would outlive the proxy)
  const std::string k = first.key();
  const json& inner = first.value();
  if (k == "json")
    return schema(f + ".json",
                  inner.is_string() ? json::parse(inner.get<std::string>(), nullptr, false) : inner, false);
  if (k == "regex") return regex(f + ".regex", inner);
  if (k == "choice") return choice(f + ".choice", inner);
  bad(f, fmt::format("'{}' is not supported (expected 'json', 'regex' or 'choice').", k));
}

namespace {
// Tool calls already in the conversation: Kimi numbers a reply's calls after them.
int64_t tool_calls_before(const json& messages) {
  int64_t n = 0;
  for (const json& m : messages)
    if (auto tc = m.find("tool_calls"); m.value("role", "") == "assistant" && tc != m.end() && tc->is_array())
      n += int64_t(tc->size());
  return n;
}
}  // namespace

std::shared_ptr<const grammar::Grammar> tool_call_grammar(const MarkerIds& ids, const ChatRequest& r) {
  if (r.tool_choice != "required" && r.tool_choice != "named") return nullptr;
  if (r.grammar)
    bad("tool_choice", fmt::format("'{}' forces a tool call; it cannot be combined with response_format or a "
                                   "guided_* / structured_outputs field.",
                                   r.tool_choice == "named" ? r.tool_choice_name : r.tool_choice));
  const Marker needed[] = {Marker::kSectionBegin, Marker::kSectionEnd, Marker::kCallBegin, Marker::kArgBegin,
                           Marker::kCallEnd};
  for (Marker m : needed)
    if (ids.ids[int(m)] < 0)
      bad("tool_choice",
          fmt::format("forcing a tool call needs the model's tool-call tokens ({} and the others of "
                      "docs/formats.md §6); this tokenizer has none. Use tool_choice 'auto'.",
                      marker_text(m)));
  using grammar::Element;
  using grammar::Sequence;
  auto g = std::make_shared<grammar::Grammar>();
  auto token = [&](Marker m) { return g->special_token(ids.ids[int(m)]); };
  struct Function {
    std::string name;
    Element args;
  };
  std::vector<Function> fns;
  for (size_t i = 0; i < r.tools.size(); ++i) {
    const json& fn = r.tools[i]["function"];
    std::string name = fn["name"].get<std::string>();
    if (r.tool_choice == "named" && name != r.tool_choice_name) continue;
    const std::string field = fmt::format("tools[{}].function", i);
    grammar::SchemaOptions opt;
    if (auto s = fn.find("strict"); s != fn.end() && !s->is_null()) {
      if (!s->is_boolean()) bad(field + ".strict", "expected a boolean.");
      opt.strict = s->get<bool>();
    } else {
      opt.strict = false;
    }
    auto p = fn.find("parameters");
    Element args =
        p == fn.end() || p->is_null()
            ? grammar::add_json_object(*g)
            : compile(field + ".parameters", [&] { return grammar::add_json_schema(*g, *p, opt); });
    fns.push_back({std::move(name), args});
  }
  const int64_t first = tool_calls_before(r.messages);
  const int64_t n_max = r.tool_choice == "named" || !r.parallel_tool_calls ? 1 : kMaxForcedToolCalls;
  // CALL_k (CALL_k+1 (...)?)?, built from the last: call k carries index first + k.
  Sequence tail;
  for (int64_t k = n_max - 1; k >= 0; --k) {
    std::vector<Sequence> alts;
    for (const Function& f : fns) {
      Sequence call{token(Marker::kCallBegin)};
      Sequence id = grammar::Grammar::literal_seq(fmt::format("functions.{}:{}", f.name, first + k), *g);
      call.insert(call.end(), id.begin(), id.end());
      call.insert(call.end(), {token(Marker::kArgBegin), f.args, token(Marker::kCallEnd)});
      alts.push_back(std::move(call));
    }
    Sequence calls{g->alt("call", std::move(alts))};
    if (!tail.empty()) calls.push_back(g->optional(std::move(tail)));
    tail = std::move(calls);
  }
  Sequence root{token(Marker::kSectionBegin)};
  root.insert(root.end(), tail.begin(), tail.end());
  root.push_back(token(Marker::kSectionEnd));
  int32_t rule = g->new_rule("tool_calls");
  g->add_alternative(rule, std::move(root));
  g->set_root(rule);
  return g;
}

std::shared_ptr<const grammar::Vocabulary> StructuredOutputs::vocabulary() {
  std::call_once(once_, [&] {
    vocab_ = grammar::Vocabulary::from_lookup(
        codec_.vocab_size(), [&](int32_t id) { return codec_.is_special(id); },
        [&](int32_t id) { return codec_.token_text(id); }, codec_.stop_ids());
  });
  return vocab_;
}

std::function<std::unique_ptr<grammar::TokenConstraint>()> StructuredOutputs::factory(
    std::shared_ptr<const grammar::Grammar> grammar) {
  return [grammar = std::move(grammar), vocab = vocabulary()] {
    return std::make_unique<grammar::TokenConstraint>(grammar, vocab);
  };
}

}  // namespace sickle::server
