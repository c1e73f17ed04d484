// Tests of OpenAI request parsing (errors as api.openai.com shapes them) and response builders.
#include "server/openai.h"

#include <gtest/gtest.h>

namespace sickle::server {
namespace {

using nlohmann::json;

json chat_body() { return json::parse(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}]})"); }

// The ApiError a body produces (fails the test if it parses).
ApiError chat_error(const json& body) {
  try {
    parse_chat_request(body);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body.dump();
  return ApiError(0, "");
}

TEST(OpenAI, ParsesChatRequest) {
  json b = json::parse(R"({
    "model": "m", "stream": true, "stream_options": {"include_usage": true},
    "messages": [{"role": "developer", "content": "sys"},
                 {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                 {"role": "assistant", "content": null, "tool_calls": [{"id": "functions.f:0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": "functions.f:0", "content": "42"}],
    "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 3, "stop": "x",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "logprobs": true, "top_logprobs": 2, "chat_template_kwargs": {"thinking": false}, "n": 1})");
  ChatRequest r = parse_chat_request(b);
  EXPECT_EQ(r.model, "m");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.temperature, 0);
  EXPECT_EQ(r.top_p, 0.5);
  EXPECT_EQ(r.seed, 3u);
  ASSERT_EQ(r.stop.size(), 1u);
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[1]["content"], "ab");
  EXPECT_TRUE(r.messages[2]["content"].is_null());
  EXPECT_EQ(r.messages[3]["tool_call_id"], "functions.f:0");
  EXPECT_EQ(r.tool_choice, "named");
  EXPECT_EQ(r.tool_choice_name, "f");
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 2);
  ASSERT_TRUE(r.thinking.has_value());
  EXPECT_FALSE(*r.thinking);
}

TEST(OpenAI, RejectsWrongTypesNamingTheField) {
  struct Case {
    const char* patch;
    const char* param;
  } cases[] = {
      {R"({"temperature": "hot"})", "temperature"},
      {R"({"temperature": 3})", "temperature"},
      {R"({"max_tokens": 1.5})", "max_tokens"},
      {R"({"max_tokens": 0})", "max_tokens"},
      {R"({"stream": "yes"})", "stream"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", "messages[0].tool_call_id"},
      {R"({"stop": [1, 2]})", "stop"},
      {R"({"stop": ["a", "b", "c", "d", "e"]})", "stop"},
      {R"({"model": 7})", "model"},
      {R"({"tools": [{"type": "function", "function": {}}]})", "tools[0].function.name"},
      {R"({"tool_choice": "required"})", "tool_choice"},
      {R"({"top_logprobs": 3})", "top_logprobs"},
      {R"({"top_logprobs": 30, "logprobs": true})", "top_logprobs"},
      {R"({"stream_options": {"include_usage": true}})", "stream_options"},
      {R"({"bogus_field": 1})", "bogus_field"},
      {R"({"n": 0})", "n"},
      {R"({"chat_template_kwargs": {"thinking": "on"}})", "chat_template_kwargs.thinking"},
  };
  for (auto& c : cases) {
    json b = chat_body();
    b.merge_patch(json::parse(c.patch));
    ApiError e = chat_error(b);
    EXPECT_EQ(e.status, 400) << c.patch;
    EXPECT_EQ(e.param, c.param) << c.patch << ": " << e.message;
    json j = e.to_json();
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_EQ(j["error"]["message"], e.message);
  }
  // `model` is optional (vLLM): empty = the served model.
  json no_model = chat_body();
  no_model.erase("model");
  EXPECT_EQ(parse_chat_request(no_model).model, "");
  EXPECT_EQ(
      parse_chat_request(json::parse(R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":3})")).n,
      3);
}

// Unknown fields: 400 when strict (the default, --strict-api), else listed and ignored.
TEST(OpenAI, UnknownFieldsStrictOrIgnored) {
  json b = chat_body();
  b["bogus"] = 1;
  b["guided_whatever"] = {1};
  EXPECT_EQ(chat_error(b).param, "bogus");
  ParseOptions lenient;
  lenient.strict = false;
  ChatRequest r = parse_chat_request(b, lenient);
  EXPECT_EQ(r.ignored_fields, (std::vector<std::string>{"bogus", "guided_whatever"}));
  // Known fields are still checked.
  b["temperature"] = "hot";
  EXPECT_THROW(parse_chat_request(b, lenient), ApiError);
}

TEST(OpenAI, VllmSamplingFields) {
  json b = chat_body();
  b.merge_patch(json::parse(R"({"presence_penalty": 1.5, "frequency_penalty": -0.5, "repetition_penalty": 1.2,
    "logit_bias": {"12": 5, "7": -100}, "min_tokens": 3, "max_tokens": 9, "stop_token_ids": [4, 5],
    "include_stop_str_in_output": true, "skip_special_tokens": false, "parallel_tool_calls": false})"));
  ChatRequest r = parse_chat_request(b);
  EXPECT_DOUBLE_EQ(r.presence_penalty, 1.5);
  EXPECT_DOUBLE_EQ(r.frequency_penalty, -0.5);
  EXPECT_DOUBLE_EQ(r.repetition_penalty, 1.2);
  EXPECT_EQ(r.logit_bias, (std::vector<std::pair<int32_t, float>>{{12, 5.0f}, {7, -100.0f}}));  // key order
  EXPECT_EQ(r.min_tokens, 3);
  EXPECT_EQ(r.stop_token_ids, (std::vector<int32_t>{4, 5}));
  EXPECT_TRUE(r.include_stop_str_in_output);
  EXPECT_FALSE(r.skip_special_tokens);
  EXPECT_FALSE(r.parallel_tool_calls);
  for (const char* bad : {R"({"logit_bias": {"x1": 1}})", R"({"logit_bias": {"1": 200}})",
                          R"({"min_tokens": 10, "max_tokens": 2})", R"({"repetition_penalty": 0})",
                          R"({"stop_token_ids": [-1]})", R"({"reasoning_effort": "low"})",
                          R"({"add_generation_prompt": true, "continue_final_message": true})"}) {
    json c = chat_body();
    c.merge_patch(json::parse(bad));
    EXPECT_EQ(chat_error(c).status, 400) << bad;
  }
  json g = chat_body();
  g["add_generation_prompt"] = false;
  EXPECT_FALSE(parse_chat_request(g).add_generation_prompt);
  g["continue_final_message"] = true;
  EXPECT_TRUE(parse_chat_request(g).continue_final_message);
  // Nothing to continue: the final message has no text.
  g["messages"].push_back(
      {{"role", "assistant"},
       {"content", nullptr},
       {"tool_calls",
        {{{"id", "a"}, {"type", "function"}, {"function", {{"name", "f"}, {"arguments", "{}"}}}}}}});
  EXPECT_EQ(chat_error(g).param, "continue_final_message");
}

// generation_config.json sampling defaults fill only what the request leaves out (vLLM).
TEST(OpenAI, GenerationConfigDefaults) {
  json gc = json::parse(R"({"temperature": 0.6, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1,
                            "eos_token_id": 5, "min_p": "x", "max_length": 512})");
  json d = sampling_defaults_from_generation_config(gc);
  EXPECT_EQ(d, json::parse(R"({"temperature": 0.6, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1})"));
  json b = chat_body();
  b["temperature"] = 0;
  b["top_p"] = nullptr;
  apply_sampling_defaults(b, d);
  ChatRequest r = parse_chat_request(b);
  EXPECT_EQ(r.temperature, 0);     // the request's own value wins
  EXPECT_DOUBLE_EQ(r.top_p, 0.9);  // null = left out
  EXPECT_EQ(r.top_k, 40);
  EXPECT_DOUBLE_EQ(r.repetition_penalty, 1.1);
}

TEST(OpenAI, NullMeansUnsetAsClientsSendIt) {
  json b = chat_body();
  b.merge_patch(json::parse(R"({"temperature": 0.2})"));
  b["max_tokens"] = nullptr;
  b["tools"] = nullptr;
  b["stop"] = nullptr;
  ChatRequest r = parse_chat_request(b);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_TRUE(r.tools.is_null());
  EXPECT_TRUE(r.stop.empty());
}

TEST(OpenAI, MalformedBody) {
  try {
    parse_body("{\"model\": ");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.code, "invalid_json");
  }
  EXPECT_THROW(parse_body("[1,2]"), ApiError);
  EXPECT_NO_THROW(parse_body("{}"));
}

TEST(OpenAI, CompletionRequest) {
  auto r = parse_completion_request(json::parse(R"({"model": "m", "prompt": "Once"})"));
  EXPECT_EQ(std::get<std::string>(r.prompt), "Once");
  EXPECT_EQ(r.max_tokens, 16);  // the endpoint's documented default
  auto t = parse_completion_request(json::parse(R"({"model": "m", "prompt": [1, 2, 3], "max_tokens": 4})"));
  EXPECT_EQ(std::get<std::vector<int32_t>>(t.prompt), (std::vector<int32_t>{1, 2, 3}));
  // Batches: a list of strings, or of token-id lists.
  auto b = parse_completion_request(json::parse(R"({"model": "m", "prompt": ["a", "b"]})"));
  ASSERT_EQ(b.prompts.size(), 2u);
  EXPECT_EQ(std::get<std::string>(b.prompts[1]), "b");
  auto bt = parse_completion_request(json::parse(R"({"model": "m", "prompt": [[1, 2], [3]]})"));
  ASSERT_EQ(bt.prompts.size(), 2u);
  EXPECT_EQ(std::get<std::vector<int32_t>>(bt.prompts[1]), std::vector<int32_t>{3});
  EXPECT_THROW(parse_completion_request(json::parse(R"({"model": "m", "prompt": [[1], []]})")), ApiError);
  EXPECT_THROW(parse_completion_request(json::parse(R"({"model": "m", "prompt": ["a", 5]})")), ApiError);
  EXPECT_THROW(parse_completion_request(json::parse(R"({"model": "m", "prompt": [1, -2]})")), ApiError);
  EXPECT_THROW(parse_completion_request(json::parse(R"({"model": "m", "prompt": {}})")), ApiError);
  EXPECT_THROW(parse_completion_request(json::parse(R"({"model": "m"})")), ApiError);
}

TEST(OpenAI, ErrorTypesByStatus) {
  EXPECT_EQ(ApiError(401, "x").to_json()["error"]["type"], "authentication_error");
  EXPECT_EQ(ApiError(404, "x").to_json()["error"]["type"], "not_found_error");
  EXPECT_EQ(ApiError(413, "x").to_json()["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(ApiError(400, "x").to_json()["error"]["param"].is_null());
}

TEST(OpenAI, ChatResponseShapes) {
  ChatChoice c;
  c.content = "";
  c.reasoning = "because";
  c.tool_calls.push_back({"functions.f:0", "f", "{\"a\":1}"});
  c.finish_reason = "tool_calls";
  Usage u{10, 5, 0};
  json j = chat_completion_json("chatcmpl-1", 100, "m", c, u);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_null());
  EXPECT_EQ(j["choices"][0]["message"]["reasoning_content"], "because");
  EXPECT_EQ(j["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(j["usage"]["total_tokens"], 15);

  json chunk = chat_chunk_json("chatcmpl-1", 100, "m", json{{"content", "x"}}, std::nullopt);
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  std::string ev = sse_event(chunk);
  EXPECT_EQ(ev.rfind("data: {", 0), 0u);
  EXPECT_EQ(ev.substr(ev.size() - 2), "\n\n");
  json uc = chat_usage_chunk_json("chatcmpl-1", 100, "m", u);
  EXPECT_TRUE(uc["choices"].empty());
  EXPECT_EQ(uc["usage"]["completion_tokens"], 5);
}

TEST(OpenAI, LogprobsAndInvalidUtf8) {
  std::vector<TokenLogprob> lp = {{"\xE2\x82", -0.5, {{"\xE2\x82", -0.5, {}}, {"b", -1.5, {}}}}};
  json j = chat_logprobs_json(lp);
  EXPECT_EQ(j["content"][0]["bytes"], json::array({0xE2, 0x82}));
  EXPECT_EQ(j["content"][0]["top_logprobs"].size(), 2u);
  // A partial UTF-8 token must not make dumping throw.
  EXPECT_NO_THROW(sse_event(j));
}

TEST(OpenAI, RequestIdsAreUnique) {
  EXPECT_NE(new_request_id("chatcmpl-"), new_request_id("chatcmpl-"));
  EXPECT_EQ(new_request_id("cmpl-").rfind("cmpl-", 0), 0u);
}

}  // namespace
}  // namespace sickle::server
