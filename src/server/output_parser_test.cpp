// Tests of the streaming output parser on token sequences (ids via a fake tokenizer).
#include "server/output_parser.h"

#include <gtest/gtest.h>

#include <random>

#include "server/test_fakes.h"

namespace sickle::server {
namespace {

using testing::FakeCodec;

struct Collected {
  std::string content, reasoning;
  std::vector<ToolCall> calls;
  int n_first = 0;
};

// Applies OpenAI-style deltas as a client would (openai's stream accumulation).
void apply(Collected& c, const OutputDelta& d) {
  c.content += d.content;
  c.reasoning += d.reasoning;
  for (auto& t : d.tool_calls) {
    if (t.is_first) {
      ASSERT_EQ(size_t(t.index), c.calls.size()) << "first delta of a call must come in index order";
      c.calls.push_back(ToolCall{t.id, t.name, t.arguments});
      ++c.n_first;
    } else {
      ASSERT_LT(size_t(t.index), c.calls.size()) << "arguments before the call's first delta";
      c.calls[size_t(t.index)].arguments += t.arguments;
    }
  }
}

// Feeds token ids to `out` one at a time, then finishes it, collecting the deltas as a client
// would; the collected text and calls must equal what the parser holds.
void feed(ChatOutput& out, const std::vector<int32_t>& ids, Collected& c, std::vector<OutputDelta>* deltas) {
  for (int32_t id : ids) {
    OutputDelta d;
    out.push(id, d);
    apply(c, d);
    if (deltas) deltas->push_back(d);
  }
  OutputDelta d;
  out.finish(d);
  apply(c, d);
  EXPECT_EQ(c.content, out.parser().content());
  EXPECT_EQ(c.reasoning, out.parser().reasoning());
  EXPECT_EQ(out.parser().tool_calls().size(), c.calls.size());
}

// Feeds token ids (text from the fake codec) one at a time, collecting deltas.
Collected run_ids(const std::vector<int32_t>& ids, bool in_reasoning, std::vector<OutputDelta>* deltas = nullptr) {
  FakeCodec codec;
  MarkerIds m = MarkerIds::from(codec);
  ChatOutput out(codec, m, OutputOptions{}, in_reasoning);
  Collected c;
  feed(out, ids, c, deltas);
  return c;
}

// Feeds text pieces with no marker ids (the text fallback path).
Collected run_text(const std::vector<std::string>& pieces, bool in_reasoning) {
  OutputParser p(MarkerIds::none(), in_reasoning);
  Collected c;
  for (auto& s : pieces) {
    OutputDelta d;
    p.push(-1, s, d);
    apply(c, d);
  }
  OutputDelta d;
  p.finish(d);
  apply(c, d);
  return c;
}

const char* kToolOutput =
    "Let me check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
    "<|tool_call_argument_begin|>{\"city\": \"Paris\", \"unit\": \"c\"}<|tool_call_end|>"
    "<|tool_call_begin|> functions.web.search:1 <|tool_call_argument_begin|>{}<|tool_call_end|>"
    "<|tool_calls_section_end|>";

TEST(OutputParser, ReasoningOpenedInPrompt) {
  FakeCodec codec;
  auto c = run_ids(codec.encode("I think 2+2=4.</think>The answer is 4."), /*in_reasoning=*/true);
  EXPECT_EQ(c.reasoning, "I think 2+2=4.");
  EXPECT_EQ(c.content, "The answer is 4.");
}

TEST(OutputParser, ReasoningOpenedInOutputAndThinkingOff) {
  FakeCodec codec;
  auto c = run_ids(codec.encode("<think>hmm</think>\n\nHello"), false);
  EXPECT_EQ(c.reasoning, "hmm");
  EXPECT_EQ(c.content, "\n\nHello");
  // A stray </think> with thinking off never reaches content.
  auto c2 = run_ids(codec.encode("Hi</think> there"), false);
  EXPECT_EQ(c2.content, "Hi there");
  EXPECT_EQ(c2.reasoning, "");
}

TEST(OutputParser, KimiToolCallsFromIds) {
  FakeCodec codec;
  auto ids = codec.encode(kToolOutput);
  // The markers really are single special ids here.
  EXPECT_EQ(std::count_if(ids.begin(), ids.end(), [](int32_t t) { return t >= 1000; }), 8);
  std::vector<OutputDelta> deltas;
  auto c = run_ids(ids, false, &deltas);
  EXPECT_EQ(c.content, "Let me check.");
  ASSERT_EQ(c.calls.size(), 2u);
  EXPECT_EQ(c.n_first, 2);
  EXPECT_EQ(c.calls[0].id, "functions.get_weather:0");
  EXPECT_EQ(c.calls[0].name, "get_weather");
  EXPECT_EQ(c.calls[0].arguments, "{\"city\": \"Paris\", \"unit\": \"c\"}");
  EXPECT_EQ(c.calls[1].id, "functions.web.search:1");
  EXPECT_EQ(c.calls[1].name, "search");
  EXPECT_EQ(c.calls[1].arguments, "{}");
  // Arguments stream in pieces (one byte token each here), not in one block at the end.
  int arg_deltas = 0;
  for (auto& d : deltas)
    for (auto& t : d.tool_calls) arg_deltas += !t.is_first && !t.arguments.empty();
  EXPECT_GT(arg_deltas, 10);
  for (auto& d : deltas) EXPECT_EQ(d.content.find('<'), std::string::npos) << d.content;
}

TEST(OutputParser, ToolCallAfterReasoning) {
  FakeCodec codec;
  auto c = run_ids(codec.encode(std::string("need weather</think>") + kToolOutput), true);
  EXPECT_EQ(c.reasoning, "need weather");
  EXPECT_EQ(c.content, "Let me check.");
  ASSERT_EQ(c.calls.size(), 2u);
}

// Markers spelled as plain text, split at every possible point across two chunks and in
// random chunkings: the result is always the same as unsplit, and no marker text leaks.
TEST(OutputParser, MarkersSplitAcrossChunks) {
  const std::string text = std::string("<think>plan a b</think>") + kToolOutput + " done";
  Collected whole = run_text({text}, false);
  EXPECT_EQ(whole.reasoning, "plan a b");
  EXPECT_EQ(whole.content, "Let me check. done");
  ASSERT_EQ(whole.calls.size(), 2u);
  EXPECT_EQ(whole.calls[0].name, "get_weather");
  for (size_t cut = 1; cut < text.size(); ++cut) {
    Collected c = run_text({text.substr(0, cut), text.substr(cut)}, false);
    ASSERT_EQ(c.content, whole.content) << "cut at " << cut;
    ASSERT_EQ(c.reasoning, whole.reasoning) << "cut at " << cut;
    ASSERT_EQ(c.calls.size(), 2u);
    ASSERT_EQ(c.calls[0].arguments, whole.calls[0].arguments);
    ASSERT_EQ(c.calls[1].id, whole.calls[1].id);
  }
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      size_t n = 1 + rng() % 6;
      pieces.push_back(text.substr(i, n));
      i += n;
    }
    Collected c = run_text(pieces, false);
    ASSERT_EQ(c.content, whole.content);
    ASSERT_EQ(c.reasoning, whole.reasoning);
    ASSERT_EQ(c.calls.size(), 2u);
    ASSERT_EQ(c.calls[0].arguments, whole.calls[0].arguments);
  }
}

TEST(OutputParser, MarkerLookalikesAreContent) {
  auto c = run_text({"a <b", "> c <thin", "g> <|tool"}, false);
  EXPECT_EQ(c.content, "a <b> c <thing> <|tool");
  EXPECT_TRUE(c.calls.empty());
}

TEST(OutputParser, UnterminatedCallKeepsWhatArrived) {
  FakeCodec codec;
  auto c = run_ids(codec.encode("<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{\"a\":"), false);
  ASSERT_EQ(c.calls.size(), 1u);
  EXPECT_EQ(c.calls[0].name, "f");
  EXPECT_EQ(c.calls[0].arguments, "{\"a\":");
  EXPECT_EQ(c.content, "");
}

TEST(OutputParser, NamelessCallIsDropped) {
  FakeCodec codec;
  auto c = run_ids(codec.encode("a<|tool_call_begin|><|tool_call_argument_begin|>{}<|tool_call_end|>"
                                "<|tool_call_begin|>functions.:3<|tool_call_end|>b<|tool_calls_section_end|>c"), false);
  EXPECT_TRUE(c.calls.empty());
  EXPECT_EQ(c.content, "ac");
}

TEST(OutputParser, Utf8SplitAcrossTokens) {
  FakeCodec codec;
  std::vector<OutputDelta> deltas;
  auto c = run_ids(codec.encode("héllo → wörld"), false, &deltas);
  EXPECT_EQ(c.content, "héllo → wörld");
  // Every delta is whole characters: none ends inside a multi-byte sequence.
  for (auto& d : deltas) {
    if (!d.content.empty()) {
      EXPECT_NE(static_cast<unsigned char>(d.content.back()) & 0xC0, 0xC0);
    }
  }
}

// ---- tool_choice forcing ----

// Primes a ChatOutput with `forced`, then feeds `generated` token by token.
Collected run_forced(const std::string& forced, const std::string& generated, std::vector<OutputDelta>* deltas = nullptr,
                     const std::vector<std::string>& stops = {}) {
  FakeCodec codec;
  MarkerIds m = MarkerIds::from(codec);
  ChatOutput out(codec, m, OutputOptions{stops}, false);
  Collected c;
  OutputDelta first;
  out.prime(forced, first);
  apply(c, first);
  if (deltas) deltas->push_back(first);
  feed(out, codec.encode(generated), c, deltas);
  return c;
}

void expect_same(const Collected& a, const Collected& b) {
  EXPECT_EQ(a.content, b.content);
  EXPECT_EQ(a.reasoning, b.reasoning);
  EXPECT_EQ(a.n_first, b.n_first);
  ASSERT_EQ(a.calls.size(), b.calls.size());
  for (size_t i = 0; i < a.calls.size(); ++i) {
    EXPECT_EQ(a.calls[i].id, b.calls[i].id);
    EXPECT_EQ(a.calls[i].name, b.calls[i].name);
    EXPECT_EQ(a.calls[i].arguments, b.calls[i].arguments);
  }
}

TEST(ToolForcing, PrefixPerToolChoice) {
  FakeCodec codec;
  MarkerIds m = MarkerIds::from(codec);
  nlohmann::json msgs = nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_EQ(tool_forcing(m, "auto", "", msgs).prefix, "");
  EXPECT_EQ(tool_forcing(m, "none", "", msgs).prefix, "");
  auto req = tool_forcing(m, "required", "", msgs);
  EXPECT_EQ(req.prefix, "<|tool_calls_section_begin|><|tool_call_begin|>");
  EXPECT_FALSE(req.named);
  auto named = tool_forcing(m, "named", "get_weather", msgs);
  EXPECT_EQ(named.prefix, "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>");
  EXPECT_TRUE(named.named);
  // Kimi numbers calls over the conversation: two earlier calls -> index 2.
  msgs.push_back({{"role", "assistant"}, {"content", nullptr},
                  {"tool_calls", {{{"id", "functions.a:0"}, {"type", "function"}, {"function", {{"name", "a"}, {"arguments", "{}"}}}},
                                  {{"id", "functions.b:1"}, {"type", "function"}, {"function", {{"name", "b"}, {"arguments", "{}"}}}}}}});
  msgs.push_back({{"role", "tool"}, {"tool_call_id", "functions.a:0"}, {"content", "x"}});
  EXPECT_NE(tool_forcing(m, "named", "f", msgs).prefix.find("functions.f:2<|tool_call_argument_begin|>"), std::string::npos);
  // No Kimi markers (DeepSeek-V3's tokenizer): nothing can be forced.
  EXPECT_EQ(tool_forcing(MarkerIds::none(), "required", "", msgs).prefix, "");
  EXPECT_EQ(tool_forcing(MarkerIds::none(), "named", "f", msgs).prefix, "");
}

TEST(ToolForcing, RequiredParsesAsIfGenerated) {
  FakeCodec codec;
  MarkerIds m = MarkerIds::from(codec);
  const std::string forced = tool_forcing(m, "required", "", nullptr).prefix;
  const std::string gen = "functions.get_time:0<|tool_call_argument_begin|>{\"tz\": \"UTC\"}<|tool_call_end|>"
                          "<|tool_calls_section_end|>";
  Collected primed = run_forced(forced, gen);
  Collected whole = run_ids(codec.encode(forced + gen), false);
  expect_same(primed, whole);
  ASSERT_EQ(primed.calls.size(), 1u);
  EXPECT_EQ(primed.calls[0].id, "functions.get_time:0");
  EXPECT_EQ(primed.calls[0].name, "get_time");
  EXPECT_EQ(primed.calls[0].arguments, "{\"tz\": \"UTC\"}");
  EXPECT_EQ(primed.content, "");
  // Without the forced opening the same output is plain text, no call.
  Collected unforced = run_ids(codec.encode(gen), false);
  EXPECT_TRUE(unforced.calls.empty());
  EXPECT_NE(unforced.content, "");
}

TEST(ToolForcing, NamedCallOpensBeforeAnyToken) {
  FakeCodec codec;
  MarkerIds m = MarkerIds::from(codec);
  const std::string forced = tool_forcing(m, "named", "get_weather", nullptr).prefix;
  const std::string gen = "{\"city\": \"Paris\"}<|tool_call_end|>";
  std::vector<OutputDelta> deltas;
  // A stop string that occurs in the forced opening does not apply to it.
  Collected primed = run_forced(forced, gen, &deltas, {"functions"});
  expect_same(primed, run_ids(codec.encode(forced + gen), false));
  // The priming delta alone is the call's first delta (as OpenAI's first tool-call chunk:
  // index, id, name, empty arguments) and nothing else.
  ASSERT_EQ(deltas[0].tool_calls.size(), 1u);
  EXPECT_TRUE(deltas[0].tool_calls[0].is_first);
  EXPECT_EQ(deltas[0].tool_calls[0].index, 0);
  EXPECT_EQ(deltas[0].tool_calls[0].id, "functions.get_weather:0");
  EXPECT_EQ(deltas[0].tool_calls[0].name, "get_weather");
  EXPECT_EQ(deltas[0].tool_calls[0].arguments, "");
  EXPECT_TRUE(deltas[0].content.empty() && deltas[0].reasoning.empty());
  ASSERT_EQ(primed.calls.size(), 1u);
  EXPECT_EQ(primed.calls[0].arguments, "{\"city\": \"Paris\"}");
}

TEST(StopMatcher, StopsAndHoldsBackPrefixes) {
  StopMatcher m({"STOP", "\n\n"});
  std::string out = m.push("Hello wor");
  out += m.push("ld ST");
  EXPECT_EQ(out, "Hello world ");  // "ST" held back
  out += m.push("OP and more");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "Hello world ");
  EXPECT_EQ(m.push("x"), "");

  StopMatcher n({"STOP"});
  std::string o2 = n.push("a ST");
  o2 += n.push("AR");
  o2 += n.flush();
  EXPECT_FALSE(n.stopped());
  EXPECT_EQ(o2, "a STAR");
}

TEST(ChatOutput, StopStringEndsGeneration) {
  FakeCodec codec;
  MarkerIds m = MarkerIds::from(codec);
  ChatOutput out(codec, m, OutputOptions{{"Paris"}}, false);
  OutputDelta all;
  bool go = true;
  for (int32_t id : codec.encode("The capital is Paris, France.")) {
    OutputDelta d;
    go = out.push(id, d);
    all.append(std::move(d));
    if (!go) break;
  }
  EXPECT_FALSE(go);
  EXPECT_EQ(all.content, "The capital is ");
}

TEST(TextOutput, DropsSpecialsAndStops) {
  FakeCodec codec;
  TextOutput out(codec, OutputOptions{{"!"}});
  std::string s;
  for (int32_t id : codec.encode("ab<think>cd!ef")) {
    if (!out.push(id, s)) break;
  }
  out.finish(s);
  EXPECT_EQ(s, "abcd");
  EXPECT_TRUE(out.stopped());
}

TEST(StopMatcher, IncludeStopKeepsTheLongestEarliestMatch) {
  StopMatcher m({"ab", "abc", "c"}, /*include_stop=*/true);
  std::string out = m.push("xx a");
  out += m.push("bcd");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "xx abc");
  StopMatcher n({"ab", "abc"});
  EXPECT_EQ(n.push("xx abcd"), "xx ");
}

// min_tokens (vLLM): stop strings do not match while inactive, text passes unheld.
TEST(StopMatcher, InactiveUntilMinTokens) {
  StopMatcher m({"ab"});
  m.set_active(false);
  EXPECT_EQ(m.push("xab a"), "xab a");
  EXPECT_FALSE(m.stopped());
  m.set_active(true);  // matches from here on (no look-back into released text)
  EXPECT_EQ(m.push("b c ab d"), "b c ");
  EXPECT_TRUE(m.stopped());
}

TEST(TextOutput, KeepsSpecialsAndTheStopStringWhenAsked) {
  FakeCodec codec;
  OutputOptions o{{"!"}};
  o.include_stop_str = true;
  o.skip_special_tokens = false;
  TextOutput out(codec, o);
  std::string s;
  for (int32_t id : codec.encode("ab<think>cd!ef")) {
    if (!out.push(id, s)) break;
  }
  out.finish(s);
  EXPECT_EQ(s, "ab<think>cd!");
}

// tool_choice "none" / no tools: the markers are not parsed (their ids carry no text, nor does
// their text spelled out), the rest is content. parallel_tool_calls false: the first call only,
// and push() says stop right after it.
TEST(ChatOutput, ToolParsingOffAndFirstCallOnly) {
  FakeCodec codec;
  MarkerIds m = MarkerIds::from(codec);
  OutputOptions off;
  off.tool_calls = false;
  ChatOutput plain(codec, m, off, false);
  Collected c;
  feed(plain, codec.encode(kToolOutput), c, nullptr);
  EXPECT_TRUE(plain.parser().tool_calls().empty());
  EXPECT_EQ(c.content, "Let me check.functions.get_weather:0{\"city\": \"Paris\", \"unit\": \"c\"} functions.web.search:1 {}");
  OutputParser text_only(MarkerIds::none(), false, /*tool_calls=*/false);
  OutputDelta d;
  text_only.push(-1, "a<|tool_call_begin|>b<think>c</think>", d);
  text_only.finish(d);
  EXPECT_EQ(text_only.content(), "a<|tool_call_begin|>b");
  EXPECT_EQ(text_only.reasoning(), "c");

  OutputOptions one;
  one.max_tool_calls = 1;
  ChatOutput first(codec, m, one, false);
  size_t fed = 0;
  auto ids = codec.encode(kToolOutput);
  for (int32_t id : ids) {
    OutputDelta dd;
    ++fed;
    if (!first.push(id, dd)) break;
  }
  EXPECT_LT(fed, ids.size());
  ASSERT_EQ(first.parser().tool_calls().size(), 1u);
  EXPECT_EQ(first.parser().tool_calls()[0].name, "get_weather");
  EXPECT_TRUE(first.parser().done());
}

}  // namespace
}  // namespace sickle::server
