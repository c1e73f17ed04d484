// libFuzzer target for HTTP request bodies: JSON body -> /v1/chat/completions and
// /v1/completions request parsing, then the chat rendering and tool forcing a valid chat
// request goes through (Kimi, through the server's codec on a tiny tokenizer, and
// DeepSeek-V3). Any body must give either requests that respect their limits or an ApiError /
// sickle::Error, never a crash, hang, leak or UB.
#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"
#include "server/codec.h"
#include "server/openai.h"
#include "server/output_parser.h"
#include "server/structured.h"
#include "tokenizer/chat.h"
#include "tokenizer/testing.h"
#include "tokenizer/tokenizer.h"

namespace {
const sickle::Tokenizer* g_tok = nullptr;
const sickle::server::TextCodec* g_codec = nullptr;
sickle::server::MarkerIds g_markers;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto dir = sickle::testing::write_tiny_tiktoken("openai_fuzz", {"ab", "the", " the", "in"});
  g_tok = sickle::Tokenizer::load(dir).release();
  std::filesystem::remove_all(dir);
  g_codec = sickle::server::make_codec(*g_tok).release();
  g_markers = sickle::server::MarkerIds::from(*g_codec);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sickle::server;
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json body;
  try {
    body = parse_body(text);
  } catch (const ApiError& e) {
    if (e.status != 400) __builtin_trap();
    return 0;
  }
  try {
    ChatRequest r = parse_chat_request(body);
    if (r.stop.size() > 4 || r.top_logprobs < 0 || r.top_logprobs > 20 || !r.messages.is_array())
      __builtin_trap();
    if (r.max_tokens && (*r.max_tokens < 1 || *r.max_tokens > INT32_MAX)) __builtin_trap();
    const bool thinking = r.thinking.value_or(false);
    sickle::RenderedPrompt prompt = g_codec->render_chat(r.messages, r.tools, thinking);
    (void)tool_call_grammar(g_markers, r);
    for (int32_t id : g_codec->encode(prompt))
      if (id < 0 || id >= g_codec->vocab_size()) __builtin_trap();
    (void)sickle::render_chat(sickle::ChatFormat::kDeepSeekV3, r.messages, r.tools, true, thinking);
  } catch (const ApiError& e) {
    if (e.status != 400) __builtin_trap();
  } catch (const sickle::Error&) {
  }
  try {
    CompletionRequest c = parse_completion_request(body);
    if (auto* ids = std::get_if<std::vector<int32_t>>(&c.prompt))
      for (int32_t id : *ids)
        if (id < 0) __builtin_trap();
    if (c.logprobs && (*c.logprobs < 0 || *c.logprobs > 5)) __builtin_trap();
  } catch (const ApiError& e) {
    if (e.status != 400) __builtin_trap();
  }
  return 0;
}
