// libFuzzer target for the streaming output parsers: generated text -> reasoning / content /
// tool calls (server::OutputParser, fed in chunks and whole; ChatOutput on the tokens of the
// text with stop strings; TextOutput) and the non-streaming sickle::parse_output. Invariants:
// no crash, hang, leak or UB; the result does not depend on how the text is chunked; the
// deltas add up to the totals; text after a stop string never comes out.
// Input: 1 byte of flags, stop strings separated by '\x01' up to a '\x00', then the text.
#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.h"
#include "server/codec.h"
#include "server/output_parser.h"
#include "tokenizer/chat.h"
#include "tokenizer/testing.h"
#include "tokenizer/tokenizer.h"

namespace {
using namespace sickle::server;
const sickle::Tokenizer* g_tok = nullptr;
const TextCodec* g_codec = nullptr;
MarkerIds g_markers;

struct Totals {
  std::string content, reasoning;
  std::vector<sickle::ToolCall> calls;
};

// Feeds `text` as text-only pushes of `chunk` bytes (0 = whole).
Totals parse_chunked(std::string_view text, size_t chunk, bool in_reasoning) {
  OutputParser p(g_markers, in_reasoning);
  OutputDelta all;
  for (size_t i = 0; i < text.size(); i += chunk ? chunk : text.size()) {
    OutputDelta d;
    p.push(-1, text.substr(i, chunk ? chunk : text.size()), d);
    all.append(std::move(d));
  }
  OutputDelta d;
  p.finish(d);
  all.append(std::move(d));
  if (all.content != p.content() || all.reasoning != p.reasoning()) __builtin_trap();
  std::vector<sickle::ToolCall> calls;
  for (const auto& c : p.tool_calls()) calls.push_back({c.id, c.name, c.arguments});
  return {p.content(), p.reasoning(), calls};
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto dir = sickle::testing::write_tiny_tiktoken("output_fuzz", {"ab", "th", "<|", "|>"});
  g_tok = sickle::Tokenizer::load(dir).release();
  std::filesystem::remove_all(dir);
  g_codec = make_codec(*g_tok).release();
  g_markers = MarkerIds::from(*g_codec);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool in_reasoning = data[0] & 1;
  const size_t chunk = 1 + ((data[0] >> 1) & 7);
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<std::string> stops;
  std::string_view text = rest;
  if (size_t z = rest.find('\0'); z != std::string_view::npos) {
    text = rest.substr(z + 1);
    std::string_view s = rest.substr(0, z);
    while (!s.empty() && stops.size() < 4) {
      size_t e = s.find('\x01');
      if (e != 0) stops.emplace_back(s.substr(0, e));
      if (e == std::string_view::npos) break;
      s.remove_prefix(e + 1);
    }
  }

  Totals whole = parse_chunked(text, 0, in_reasoning), pieces = parse_chunked(text, chunk, in_reasoning);
  if (whole.content != pieces.content || whole.reasoning != pieces.reasoning ||
      whole.calls.size() != pieces.calls.size())
    __builtin_trap();
  for (size_t i = 0; i < whole.calls.size(); ++i)
    if (whole.calls[i].id != pieces.calls[i].id || whole.calls[i].arguments != pieces.calls[i].arguments)
      __builtin_trap();

  try {
    (void)sickle::parse_output(sickle::ChatFormat::kKimi, text, in_reasoning);
    (void)sickle::parse_output(sickle::ChatFormat::kDeepSeekV3, text, in_reasoning);
    // The same text as generated tokens (special-token strings become their ids).
    std::vector<int32_t> ids = g_codec->encode(text);
    ChatOutput chat(*g_codec, g_markers, OutputOptions{stops}, in_reasoning);
    OutputDelta out;
    for (int32_t id : ids)
      if (!chat.push(id, out)) break;
    chat.finish(out);
    TextOutput plain(*g_codec, OutputOptions{stops});
    std::string s;
    for (int32_t id : ids)
      if (!plain.push(id, s)) break;
    plain.finish(s);
    for (const auto& stop : stops)
      if (s.find(stop) != std::string::npos)
        __builtin_trap();  // OpenAI drops the stop string and what follows
  } catch (const sickle::Error&) {
  }
  return 0;
}
