// sickle/server/output_parser.h — turning generated tokens into OpenAI message parts while
// they stream: reasoning (<think>...</think>), content, and Kimi tool calls
// (docs/formats.md §6):
//
//   <|tool_calls_section_begin|> <|tool_call_begin|>functions.NAME:IDX
//   <|tool_call_argument_begin|>JSON<|tool_call_end|> ... <|tool_calls_section_end|>
//
// Markers are recognised by token id (looked up by name from the tokenizer), which is exact.
// As a fallback for a model that spells a marker as ordinary text, the marker strings are
// also matched in the text stream; text that could be the start of a marker is held back
// until it is decided, so no marker text ever reaches `content`, even when split across
// tokens or stream chunks. The start of a marker directly followed by a marker is a broken tag
// and is dropped: `<think</think>> hi` is "> hi", never "<think> hi".
//
// Deltas follow OpenAI's streaming shape: a tool call's first delta carries index, id and
// name (arguments ""), later ones carry index and an arguments piece.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/codec.h"
#include "server/openai.h"

namespace sickle::server {

enum class Marker {
  kThinkBegin,
  kThinkEnd,
  kSectionBegin,
  kSectionEnd,
  kCallBegin,
  kArgBegin,
  kCallEnd,
  kCount
};

// The marker strings, in Marker order.
const char* marker_text(Marker m);

struct MarkerIds {
  int32_t ids[int(Marker::kCount)];  // -1 where the tokenizer has no such token
  static MarkerIds from(const TextCodec& codec);
  static MarkerIds none();
};

struct ToolCallDelta {
  int64_t index = 0;
  bool is_first = false;  // carries id and name
  std::string id, name, arguments;
};

struct OutputDelta {
  std::string content, reasoning;
  std::vector<ToolCallDelta> tool_calls;
  bool empty() const { return content.empty() && reasoning.empty() && tool_calls.empty(); }
  void append(OutputDelta&& d);
};

class OutputParser {
 public:
  // start_in_reasoning: the prompt ended with <think>, so the output begins inside it.
  // tool_calls false (tool_choice "none", or no tools): tool-call markers are not parsed (their
  // tokens carry no text, the rest stays content). max_tool_calls > 0 (parallel_tool_calls
  // false: 1): done() once that many calls were read; later output is dropped.
  OutputParser(const MarkerIds& ids, bool start_in_reasoning, bool tool_calls = true,
               int64_t max_tool_calls = 0);

  // One token: a marker id switches state; any other id contributes `text` (its decoded text,
  // possibly empty while a UTF-8 character is incomplete). id -1 = text only.
  void push(int32_t id, std::string_view text, OutputDelta& out);
  // End of generation: releases held-back text.
  void finish(OutputDelta& out);

  // The whole output so far.
  const std::string& content() const { return content_; }
  const std::string& reasoning() const { return reasoning_; }
  const std::vector<ToolCall>& tool_calls() const { return calls_; }
  // max_tool_calls calls were read to their end: the caller stops generating.
  bool done() const { return done_; }

 private:
  enum class State { kContent, kReasoning, kSection, kCallName, kCallArgs };
  void on_marker(Marker m, OutputDelta& out);
  void emit_text(std::string_view text, OutputDelta& out);
  void scan(OutputDelta& out, bool final);
  static void drop_broken_tag(std::string& text);

  MarkerIds ids_;
  State state_;
  std::string pending_;     // text not yet emitted: may be the start of a marker
  std::string call_id_;     // the id text of the call being read
  bool skip_args_ = false;  // the current call has no usable name
  bool tool_calls_ = true, done_ = false;
  int64_t max_tool_calls_ = 0;
  std::string content_, reasoning_;
  std::vector<ToolCall> calls_;
};

// Stop sequences on a text stream: returns the text that is safe to emit; text that could be
// the start of a stop string is held back. After a match, stopped() is true and everything
// after the stop string is dropped; the stop string itself too (OpenAI) unless `include_stop`
// (vLLM's include_stop_str_in_output; the earliest match, the longest at that position).
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops, bool include_stop = false)
      : stops_(std::move(stops)), include_stop_(include_stop) {}
  std::string push(std::string_view text);
  std::string flush();
  bool stopped() const { return stopped_; }
  // The stop string that matched (empty before a match): vLLM's stop_reason.
  const std::string& matched() const { return matched_; }
  // Inactive (vLLM's min_tokens not reached yet): text passes unmatched.
  void set_active(bool active) { active_ = active; }

 private:
  std::vector<std::string> stops_;
  bool include_stop_ = false, active_ = true;
  std::string pending_, matched_;
  bool stopped_ = false;
};

// How a response turns tokens into text and message parts (vLLM's per-request detokenization options).
struct OutputOptions {
  std::vector<std::string> stops;
  bool include_stop_str = false;    // keep the matched stop string
  bool skip_special_tokens = true;  // false: special tokens (not markers) contribute their text
  bool tool_calls = true;           // chat: parse tool calls (OutputParser)
  int64_t max_tool_calls = 0;       // chat: 0 = any number
};

// The prompt ends inside an open reasoning block, so the reply starts as reasoning: its last
// token that is not whitespace is <think> (the built-in Kimi format ends with <think>; Qwen3
// and Kimi-Thinking templates with "<think>\n").
bool prompt_opens_reasoning(const TextCodec& codec, const MarkerIds& ids, const std::vector<int32_t>& prompt);

// The text pipeline of one chat response: detokenize -> stop strings -> parser.
class ChatOutput {
 public:
  ChatOutput(const TextCodec& codec, const MarkerIds& ids, OutputOptions text, bool start_in_reasoning);
  // Feeds one generated token. Returns false once a stop string matched or the parser is done
  // (stop generating).
  bool push(int32_t id, OutputDelta& out);
  void finish(OutputDelta& out);
  bool stopped() const { return stop_.stopped(); }
  const std::string& stop_string() const { return stop_.matched(); }
  void set_stops_active(bool active) { stop_.set_active(active); }
  const OutputParser& parser() const { return parser_; }

 private:
  const TextCodec& codec_;
  const MarkerIds& ids_;
  std::unique_ptr<TokenTextStream> stream_;
  StopMatcher stop_;
  bool skip_special_;
  OutputParser parser_;
};

// The text pipeline of one /v1/completions response: detokenize (special tokens dropped) ->
// stop strings.
class TextOutput {
 public:
  TextOutput(const TextCodec& codec, OutputOptions text);
  bool push(int32_t id, std::string& out);
  void finish(std::string& out);
  bool stopped() const { return stop_.stopped(); }
  const std::string& stop_string() const { return stop_.matched(); }
  void set_stops_active(bool active) { stop_.set_active(active); }

 private:
  const TextCodec& codec_;
  std::unique_ptr<TokenTextStream> stream_;
  StopMatcher stop_;
  bool skip_special_;
};

}  // namespace sickle::server
