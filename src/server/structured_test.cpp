// Structured outputs in the server: request fields -> grammar (400s naming the field and the
// schema keyword), and the scheduler's hook (a constraint masks the logits before sampling).
#include <gtest/gtest.h>

#include "server/openai.h"
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
  auto js = parse_structured({{"response_format", {{"type", "json_schema"},
                                                   {"json_schema", {{"name", "x"}, {"schema", schema}, {"strict", true}}}}}},
                             true);
  ASSERT_NE(js, nullptr);
  EXPECT_TRUE(js->accepts(R"({"n":12})"));
  EXPECT_FALSE(js->accepts(R"({"n":12,"m":1})"));
  EXPECT_TRUE(parse_structured({{"guided_json", schema.dump()}}, false)->accepts(R"({"n": 1})"));
  EXPECT_TRUE(parse_structured({{"guided_regex", "[a-c]+x"}}, false)->accepts("abcx"));
  EXPECT_TRUE(parse_structured({{"guided_choice", {"yes", "no"}}}, false)->accepts("no"));
  EXPECT_FALSE(parse_structured({{"structured_outputs", {{"choice", {"yes", "no"}}}}}, false)->accepts("maybe"));
  // response_format is a chat field: completions leave it to the known-fields check.
  EXPECT_EQ(parse_structured({{"response_format", {{"type", "json_object"}}}}, false), nullptr);
}

TEST(Structured, BadRequestsName400Field) {
  ApiError e = error_of({{"response_format", {{"type", "json_schema"},
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
  json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}},
               {"response_format", {{"type", "json_object"}}}};
  EXPECT_NE(parse_chat_request(body).grammar, nullptr);
  body["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", {{"minimum", 1}}}}}};
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

}  // namespace
}  // namespace sickle::server
