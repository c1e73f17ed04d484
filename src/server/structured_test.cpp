// Structured outputs in the server: request fields -> grammar (400s naming the field and the
// schema keyword), and the scheduler's hook (a constraint masks the logits before sampling).
#include <gtest/gtest.h>

#include <random>

#include "grammar/json_schema.h"
#include "server/openai.h"
#include "server/output_parser.h"
#include "server/structured.h"
#include "server/test_fakes.h"

namespace sickle::server {
namespace {

using json = nlohmann::json;

ApiError error_of(const json& body) {
  try {
    parse_structured(body, true);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << body.dump();
  return ApiError(0, "");
}

TEST(Structured, FieldsToGrammars) {
  EXPECT_EQ(parse_structured(json::object(), true), nullptr);
  EXPECT_EQ(parse_structured({{"response_format", {{"type", "text"}}}}, true), nullptr);
  auto obj = parse_structured({{"response_format", {{"type", "json_object"}}}}, true);
  ASSERT_NE(obj, nullptr);
  EXPECT_TRUE(obj->accepts(R"({"a":[1]})"));
  EXPECT_FALSE(obj->accepts("[1]"));
  json schema = {{"type", "object"}, {"properties", {{"n", {{"type", "integer"}}}}}, {"required", {"n"}}};
  auto js = parse_structured(
      {{"response_format",
        {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", schema}, {"strict", true}}}}}},
      true);
  ASSERT_NE(js, nullptr);
  EXPECT_TRUE(js->accepts(R"({"n":12})"));
  EXPECT_FALSE(js->accepts(R"({"n":12,"m":1})"));
  EXPECT_TRUE(parse_structured({{"guided_json", schema.dump()}}, false)->accepts(R"({"n": 1})"));
  EXPECT_TRUE(parse_structured({{"guided_regex", "[a-c]+x"}}, false)->accepts("abcx"));
  EXPECT_TRUE(parse_structured({{"guided_choice", {"yes", "no"}}}, false)->accepts("no"));
  EXPECT_FALSE(
      parse_structured({{"structured_outputs", {{"choice", {"yes", "no"}}}}}, false)->accepts("maybe"));
  // response_format is a chat field: completions leave it to the known-fields check.
  EXPECT_EQ(parse_structured({{"response_format", {{"type", "json_object"}}}}, false), nullptr);
}

TEST(Structured, BadRequestsName400Field) {
  ApiError e =
      error_of({{"response_format",
                 {{"type", "json_schema"},
                  {"json_schema", {{"name", "x"}, {"schema", {{"type", "string"}, {"format", "email"}}}}}}}});
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "response_format.json_schema.schema");
  EXPECT_NE(e.message.find("unsupported keyword 'format' at /format"), std::string::npos) << e.message;
  EXPECT_EQ(error_of({{"guided_regex", "(?=a)"}}).param, "guided_regex");
  EXPECT_EQ(error_of({{"guided_choice", json::array()}}).param, "guided_choice");
  EXPECT_EQ(error_of({{"guided_json", {{"type", "object"}}}, {"guided_regex", "a"}}).param, "guided_regex");
  EXPECT_EQ(error_of({{"response_format", {{"type", "yaml"}}}}).param, "response_format.type");
  EXPECT_EQ(error_of({{"structured_outputs", {{"grammar", "root ::= x"}}}}).param, "structured_outputs");
}

TEST(Structured, ChatRequestCarriesTheGrammar) {
  json body = {{"model", "m"},
               {"messages", {{{"role", "user"}, {"content", "hi"}}}},
               {"response_format", {{"type", "json_object"}}}};
  EXPECT_NE(parse_chat_request(body).grammar, nullptr);
  body["response_format"] = {{"type", "json_schema"},
                             {"json_schema", {{"name", "x"}, {"schema", {{"minimum", 1}}}}}};
  EXPECT_THROW(parse_chat_request(body), ApiError);
  json cbody = {{"model", "m"}, {"prompt", "x"}, {"guided_choice", {"a", "b"}}};
  EXPECT_NE(parse_completion_request(cbody).grammar, nullptr);
}

TEST(Structured, SchedulerMasksBeforeSampling) {
  // Ids 0..255 are bytes, 256 the stop token; the fake model's greedy choice is a hash of
  // the history, which the constraint must override.
  constexpr int64_t kVocab = 300;
  std::vector<std::string> bytes(kVocab);
  std::vector<bool> special(kVocab, true);
  for (int b = 0; b < 256; ++b) bytes[size_t(b)] = std::string(1, char(b)), special[size_t(b)] = false;
  auto vocab = std::make_shared<grammar::Vocabulary>(bytes, special, std::vector<int32_t>{256});
  auto g = parse_structured({{"guided_regex", "[p-r]{2,4}-(ok|fine)"}}, false);
  testing::FakeEngine eng(kVocab);
  Scheduler s(eng, {});
  for (int salt = 0; salt < 3; ++salt) {
    GenRequest r;
    r.prompt = {int32_t(1 + salt), 2, 3};
    r.max_tokens = 40;
    r.sampling.temperature = salt == 0 ? 0.0 : 1.0;
    r.sampling.seed = uint64_t(salt);
    r.stop_ids = {256};
    r.make_constraint = [&] { return std::make_unique<grammar::TokenConstraint>(g, vocab); };
    auto h = s.submit(std::move(r));
    std::vector<GenToken> toks;
    while (h->next(toks, std::chrono::milliseconds(100))) {
    }
    std::string text;
    for (const auto& t : toks)
      if (t.id < 256) text += char(t.id);
    EXPECT_TRUE(g->accepts(text)) << text;
    EXPECT_EQ(h->finish(), Finish::kStop) << text;
  }
}

// ---- forced tool calls (tool_choice required / named) ----

// FakeCodec's vocabulary as the grammar engine sees it: bytes 0..255, specials from 1000.
std::shared_ptr<const grammar::Vocabulary> fake_vocabulary(const testing::FakeCodec& codec) {
  std::vector<std::string> bytes(size_t(codec.vocab_size()));
  std::vector<bool> special(bytes.size(), false);
  for (int32_t id = 0; id < codec.vocab_size(); ++id) {
    special[size_t(id)] = codec.is_special(id);
    if (id < 256 || special[size_t(id)]) bytes[size_t(id)] = codec.token_text(id);
  }
  return std::make_shared<grammar::Vocabulary>(bytes, special, codec.stop_ids());
}

const json kTools = json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["C", "F"]}},
    "required": ["city"], "additionalProperties": false}}},
  {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
    "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}])");

ChatRequest tool_request(const json& tool_choice, bool parallel = true, json messages = nullptr) {
  if (messages.is_null()) messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  return parse_chat_request({{"messages", messages},
                             {"tools", kTools},
                             {"tool_choice", tool_choice},
                             {"parallel_tool_calls", parallel}});
}

// The whole reply `text` (specials by their names), then the stop token, is what the grammar allows.
bool allows(const std::shared_ptr<const grammar::Grammar>& g, const std::string& text) {
  testing::FakeCodec codec;
  grammar::TokenConstraint tc(g, fake_vocabulary(codec));
  for (int32_t id : codec.encode(text))
    if (!tc.accept(id)) return false;
  return tc.accept(codec.stop_ids().front()) && tc.finished();
}

std::string call(const std::string& id, const std::string& args) {
  return "<|tool_call_begin|>functions." + id + "<|tool_call_argument_begin|>" + args + "<|tool_call_end|>";
}
std::string section(const std::string& calls) {
  return "<|tool_calls_section_begin|>" + calls + "<|tool_calls_section_end|>";
}

TEST(ToolCallGrammar, RequiredIsOneOrMoreCallsOfDeclaredTools) {
  testing::FakeCodec codec;
  auto g = tool_call_grammar(MarkerIds::from(codec), tool_request("required"));
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(allows(g, section(call("get_weather:0", R"({"city": "Paris"})"))));
  EXPECT_TRUE(allows(g, section(call("get_time:0", R"({"tz":"UTC"})") +
                                call("get_weather:1", R"({"city":"Oslo","unit":"C"})"))));
  EXPECT_FALSE(allows(g, section("")));                                                   // no call
  EXPECT_FALSE(allows(g, "Sure. " + section(call("get_time:0", R"({"tz":"UTC"})"))));     // text first
  EXPECT_FALSE(allows(g, section(call("get_date:0", R"({"tz":"UTC"})"))));                // undeclared
  EXPECT_FALSE(allows(g, section(call("get_time:1", R"({"tz":"UTC"})"))));                // wrong index
  EXPECT_FALSE(allows(g, section(call("get_weather:0", R"({})"))));                       // city required
  EXPECT_FALSE(allows(g, section(call("get_weather:0", R"({"city":"Amsterdam"})"))));     // maxLength 8
  EXPECT_FALSE(allows(g, section(call("get_weather:0", R"({"city":"X","unit":"K"})"))));  // enum
  EXPECT_FALSE(allows(g, section(call("get_time:0", R"({"tz":"UTC"})")) + "more"));       // after the section
  EXPECT_FALSE(
      allows(g, "<|tool_calls_section_begin|>" + call("get_time:0", R"({"tz":"UTC"})")));  // unclosed
  // The markers spelled as text are not the markers.
  EXPECT_FALSE(allows(g,
                      "<|tool_calls_section_begi"
                      "n|>"));
}

TEST(ToolCallGrammar, NamedAndNonParallelAreExactlyOneCall) {
  testing::FakeCodec codec;
  const MarkerIds m = MarkerIds::from(codec);
  const std::string two =
      section(call("get_time:0", R"({"tz":"UTC"})") + call("get_time:1", R"({"tz":"UTC"})"));
  auto named =
      tool_call_grammar(m, tool_request({{"type", "function"}, {"function", {{"name", "get_time"}}}}));
  EXPECT_TRUE(allows(named, section(call("get_time:0", R"({"tz":"UTC"})"))));
  EXPECT_FALSE(allows(named, section(call("get_weather:0", R"({"city":"Oslo"})"))));
  EXPECT_FALSE(allows(named, two));
  auto single = tool_call_grammar(m, tool_request("required", /*parallel=*/false));
  EXPECT_TRUE(allows(single, section(call("get_weather:0", R"({"city":"Oslo"})"))));
  EXPECT_FALSE(allows(single, two));
  EXPECT_TRUE(allows(tool_call_grammar(m, tool_request("required")), two));
  // Kimi numbers calls over the conversation: two earlier calls, so this one is :2.
  json msgs = json::parse(R"([{"role": "user", "content": "hi"},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "functions.get_time:0", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
      {"id": "functions.get_time:1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "functions.get_time:0", "content": "x"}])");
  auto later = tool_call_grammar(m, tool_request("required", true, msgs));
  EXPECT_TRUE(allows(later, section(call("get_time:2", R"({"tz":"UTC"})"))));
  EXPECT_FALSE(allows(later, section(call("get_time:0", R"({"tz":"UTC"})"))));
  EXPECT_EQ(tool_call_grammar(m, tool_request("auto")), nullptr);
}

TEST(ToolCallGrammar, RefusalsNameTheField) {
  testing::FakeCodec codec;
  const MarkerIds m = MarkerIds::from(codec);
  auto param_of = [&](const MarkerIds& ids, const ChatRequest& r) {
    try {
      tool_call_grammar(ids, r);
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 400);
      return e.param + ": " + e.message;
    }
    return std::string("no error");
  };
  EXPECT_EQ(param_of(MarkerIds::none(), tool_request("required")).rfind("tool_choice: ", 0), 0u);
  ChatRequest with_format = tool_request("required");
  with_format.grammar = grammar::json_object_grammar();
  EXPECT_EQ(param_of(m, with_format).rfind("tool_choice: ", 0), 0u);
  json tools = kTools;
  tools[1]["function"]["parameters"]["properties"]["tz"]["format"] = "date-time";
  ChatRequest bad_schema = parse_chat_request(
      {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"tools", tools}, {"tool_choice", "required"}});
  const std::string e = param_of(m, bad_schema);
  EXPECT_EQ(e.rfind("tools[1].function.parameters: ", 0), 0u) << e;
  EXPECT_NE(e.find("'format'"), std::string::npos) << e;
}

TEST(ToolCallGrammar, RandomMaskedDecodesParseAsSchemaValidCalls) {
  // Uniform sampling over the allowed tokens: whatever the model does, the output parser
  // reads tool calls of declared functions whose arguments parse and hold the required keys.
  testing::FakeCodec codec;
  const MarkerIds m = MarkerIds::from(codec);
  auto vocab = fake_vocabulary(codec);
  std::mt19937 rng(7);
  for (bool parallel : {true, false})
    for (int trial = 0; trial < 12; ++trial) {
      grammar::TokenConstraint tc(tool_call_grammar(m, tool_request("required", parallel)), vocab);
      ChatOutput out(codec, m, OutputOptions{}, false);
      OutputDelta d;
      int steps = 0;
      while (!tc.finished() && steps++ < 20000) {
        std::vector<int32_t> ok;
        for (int32_t id = 0; id < codec.vocab_size(); ++id)
          if (tc.is_allowed(id)) ok.push_back(id);
        ASSERT_FALSE(ok.empty());
        const int32_t id = ok[std::uniform_int_distribution<size_t>(0, ok.size() - 1)(rng)];
        ASSERT_TRUE(tc.accept(id));
        if (!tc.finished()) out.push(id, d);
      }
      ASSERT_TRUE(tc.finished());
      out.finish(d);
      const auto& calls = out.parser().tool_calls();
      ASSERT_FALSE(calls.empty());
      if (!parallel) {
        EXPECT_EQ(calls.size(), 1u);
      }
      EXPECT_EQ(out.parser().content(), "");
      for (size_t i = 0; i < calls.size(); ++i) {
        EXPECT_EQ(calls[i].id, fmt::format("functions.{}:{}", calls[i].name, i));
        json args = json::parse(calls[i].arguments);  // throws if not JSON
        if (calls[i].name == "get_weather") {
          ASSERT_TRUE(args.contains("city"));
          EXPECT_TRUE(args["city"].is_string());
          for (auto& [k, v] : args.items()) EXPECT_TRUE(k == "city" || k == "unit") << k;
        } else {
          ASSERT_EQ(calls[i].name, "get_time");
          ASSERT_TRUE(args.contains("tz"));
        }
      }
    }
}

}  // namespace
}  // namespace sickle::server
