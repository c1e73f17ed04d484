// libFuzzer target: encode/decode/stream-decode properties on arbitrary bytes.
//   decode(encode(s)) == utf8_sanitize(s); concatenated StreamDecoder output == decode(ids);
//   every streamed piece is valid UTF-8.
// Uses a small tiktoken tokenizer (bytes + a few merges + Kimi specials) written at start-up.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tokenizer/testing.h"
#include "tokenizer/tokenizer.h"

namespace {
const sickle::Tokenizer* g_tok = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto dir = sickle::testing::write_tiny_tiktoken(
      "fuzz", {"ab", "bc", "abc", " t", "he", "the", " the", "in", "ing"});
  g_tok = sickle::Tokenizer::load(dir).release();
  std::filesystem::remove_all(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool allow_special : {true, false}) {
    auto ids = g_tok->encode(text, allow_special);
    std::string back = g_tok->decode(ids);
    if (back != sickle::utf8_sanitize(text)) __builtin_trap();
    sickle::StreamDecoder sd(*g_tok);
    std::string streamed;
    for (int32_t id : ids) {
      std::string piece = sd.push(id);
      if (sickle::utf8_sanitize(piece) != piece) __builtin_trap();
      streamed += piece;
    }
    streamed += sd.flush();
    if (streamed != back) __builtin_trap();
  }
  return 0;
}
