// sickle/tokenizer/testing.h — fixtures shared by the tokenizer tests (not part of the library).
//
// A tiny tiktoken-format tokenizer written to a temp dir: ranks 0..255 are the single bytes in
// byte order, then the given merges (rank = 256 + index), then 256 special ids whose names sit
// at the same offsets from n_ranks as Kimi's do from 163584 (docs/formats.md §6), so chat
// renders can be checked token by token against Kimi's ids minus 163584.
#pragma once

#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace sickle::testing {

inline std::string base64(const std::string& in) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out += abc[(v >> (6 * k)) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += abc[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// Kimi's named special tokens as offsets from the first special id (163584 in Kimi-K2).
inline const std::map<int, std::string>& kimi_special_offsets() {
  static const std::map<int, std::string> m = {
      {0, "[BOS]"},
      {1, "[EOS]"},
      {2, "<|im_end|>"},
      {3, "<|im_user|>"},
      {4, "<|im_assistant|>"},
      {10, "<|im_system|>"},
      {11, "<|tool_calls_section_begin|>"},
      {12, "<|tool_calls_section_end|>"},
      {13, "<|tool_call_begin|>"},
      {14, "<|tool_call_argument_begin|>"},
      {15, "<|tool_call_end|>"},
      {17, "<|im_middle|>"},
      {18, "<|media_begin|>"},
      {19, "<|media_content|>"},
      {20, "<|media_end|>"},
      {21, "<|media_pad|>"},
      {22, "<think>"},
      {23, "</think>"},
  };
  return m;
}

inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("sickle_tok_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

// Writes tiktoken.model + tokenizer_config.json and returns the directory.
inline std::filesystem::path write_tiny_tiktoken(const std::string& name,
                                                 const std::vector<std::string>& merges,
                                                 const std::map<int, std::string>& extra_specials = {},
                                                 const std::string& chat_template = "") {
  auto dir = temp_dir(name);
  std::ofstream model(dir / "tiktoken.model", std::ios::binary);
  int rank = 0;
  for (int b = 0; b < 256; ++b) model << base64(std::string(1, char(b))) << ' ' << rank++ << '\n';
  for (const auto& m : merges) model << base64(m) << ' ' << rank++ << '\n';
  model.close();
  const int n_ranks = rank;
  nlohmann::json atd = nlohmann::json::object();
  auto specials = kimi_special_offsets();
  for (auto& [k, v] : extra_specials) specials[k] = v;
  for (auto& [off, content] : specials)
    atd[std::to_string(n_ranks + off)] = {{"content", content},  {"special", true},
                                          {"lstrip", false},     {"rstrip", false},
                                          {"normalized", false}, {"single_word", false}};
  nlohmann::json cfg = {{"added_tokens_decoder", atd},
                        {"bos_token", "[BOS]"},
                        {"eos_token", "[EOS]"},
                        {"tokenizer_class", "TikTokenTokenizer"}};
  if (!chat_template.empty()) cfg["chat_template"] = chat_template;
  std::ofstream(dir / "tokenizer_config.json") << cfg.dump(1);
  return dir;
}

inline std::filesystem::path source_dir() {
  if (const char* s = std::getenv("SICKLE_SOURCE_DIR")) return s;
#ifdef SICKLE_SOURCE_DIR
  return SICKLE_SOURCE_DIR;
#else
  return std::filesystem::current_path();
#endif
}

}  // namespace sickle::testing
