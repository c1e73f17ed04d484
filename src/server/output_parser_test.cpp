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
Collected run_ids(const std::vector<int32_t>& ids, bool in_reasoning,
                  std::vector<OutputDelta>* deltas = nullptr) {
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
  auto c = run_ids(
      codec.encode(
          "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{\"a\":"),
      false);
  ASSERT_EQ(c.calls.size(), 1u);
  EXPECT_EQ(c.calls[0].name, "f");
  EXPECT_EQ(c.calls[0].arguments, "{\"a\":");
  EXPECT_EQ(c.content, "");
}

TEST(OutputParser, NamelessCallIsDropped) {
  FakeCodec codec;
  auto c =
      run_ids(codec.encode("a<|tool_call_begin|><|tool_call_argument_begin|>{}<|tool_call_end|>"
                           "<|tool_call_begin|>functions.:3<|tool_call_end|>b<|tool_calls_section_end|>c"),
              false);
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

TEST(OutputParser, BrokenTagBeforeAMarkerNeverJoinsIntoMarkerText) {
  // "<think" then "</think>": the fragment is dropped, so content is not "<think> hi".
  const std::string text = "<think</think>> hi";
  for (bool in_reasoning : {false, true})
    for (size_t chunk = 1; chunk <= text.size(); ++chunk) {
      std::vector<std::string> pieces;
      for (size_t i = 0; i < text.size(); i += chunk) pieces.push_back(text.substr(i, chunk));
      auto c = run_text(pieces, in_reasoning);
      EXPECT_EQ(c.content, "> hi") << chunk;
      EXPECT_EQ(c.reasoning, "") << chunk;
    }
  // The same with the marker as a token id, and a fragment cut at another byte.
  FakeCodec codec;
  std::vector<int32_t> ids = codec.encode("x<thi");
  ids.push_back(codec.special_id("</think>"));
  for (int32_t id : codec.encode("nk> hi")) ids.push_back(id);
  auto c = run_ids(ids, false);
  EXPECT_EQ(c.content, "xnk> hi");
  for (const char* marker : {"<think>", "</think>"}) EXPECT_EQ(c.content.find(marker), std::string::npos);
  // Text that merely ends in '<' far from any marker is kept.
  EXPECT_EQ(run_text({"a < b"}, false).content, "a < b");
}

TEST(OutputParser, ChunkingNeverChangesTheResult) {
  // Random texts of marker pieces, broken tags and plain text: any chunking gives the same
  // content, reasoning and calls as the whole text, and no marker text reaches content.
  const std::vector<std::string> pieces = {"<",
                                           "<think>",
                                           "</think>",
                                           "<thi",
                                           "nk>",
                                           ">",
                                           " hi",
                                           "</",
                                           "<|",
                                           "<|tool_call_begin|>",
                                           "<|tool_c",
                                           "all_end|>",
                                           "x",
                                           "functions.f:0",
                                           "<|tool_call_argument_begin|>",
                                           "{}",
                                           "<|tool_call_end|>",
                                           "<|tool_calls_section_begin|>",
                                           "<|tool_calls_section_end|>"};
  std::mt19937 rng(11);
  for (int trial = 0; trial < 400; ++trial) {
    std::string text;
    const int n = 1 + int(rng() % 12);
    for (int i = 0; i < n; ++i) text += pieces[rng() % pieces.size()];
    const bool in_reasoning = rng() % 2;
    const Collected whole = run_text({text}, in_reasoning);
    for (const char* m : {"<think>", "</think>", "<|tool_call_begin|>", "<|tool_call_end|>"})
      EXPECT_EQ(whole.content.find(m), std::string::npos) << text;
    for (size_t chunk = 1; chunk <= 7; ++chunk) {
      std::vector<std::string> parts;
      for (size_t i = 0; i < text.size(); i += chunk) parts.push_back(text.substr(i, chunk));
      const Collected c = run_text(parts, in_reasoning);
      EXPECT_EQ(c.content, whole.content) << text << " / " << chunk;
      EXPECT_EQ(c.reasoning, whole.reasoning) << text << " / " << chunk;
      ASSERT_EQ(c.calls.size(), whole.calls.size()) << text << " / " << chunk;
      for (size_t k = 0; k < c.calls.size(); ++k)
        EXPECT_EQ(c.calls[k].arguments, whole.calls[k].arguments) << text;
    }
  }
}

TEST(OutputParser, PromptTailOpensReasoning) {
  FakeCodec codec;
  const MarkerIds m = MarkerIds::from(codec);
  auto opens = [&](const std::string& prompt) {
    return prompt_opens_reasoning(codec, m, codec.encode(prompt));
  };
  EXPECT_TRUE(opens("user: hi\nassistant:<think>"));    // the built-in Kimi format
  EXPECT_TRUE(opens("user: hi\nassistant:<think>\n"));  // Qwen3 / Kimi-Thinking templates
  EXPECT_TRUE(opens("assistant:<think> \n\t\r\n"));
  EXPECT_FALSE(opens("assistant:<think></think>"));
  EXPECT_FALSE(opens("assistant:<think></think>\n\n"));
  EXPECT_FALSE(opens("<think>x"));
  EXPECT_FALSE(opens("<think><|im_end|>\n"));  // another special token after it
  EXPECT_FALSE(opens("\n"));
  EXPECT_FALSE(opens(""));
  EXPECT_FALSE(prompt_opens_reasoning(codec, MarkerIds::none(), codec.encode("<think>\n")));
  // The parser then splits the reply: reasoning up to </think>, content after it.
  ChatOutput out(codec, m, OutputOptions{}, opens("assistant:<think>\n"));
  Collected c;
  feed(out, codec.encode("Let me see.</think>Paris."), c, nullptr);
  EXPECT_EQ(c.reasoning, "Let me see.");
  EXPECT_EQ(c.content, "Paris.");
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
  EXPECT_EQ(
      c.content,
      "Let me check.functions.get_weather:0{\"city\": \"Paris\", \"unit\": \"c\"} functions.web.search:1 {}");
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
