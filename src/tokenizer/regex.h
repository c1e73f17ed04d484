// sickle/tokenizer/regex.h — a small PCRE2 wrapper for pre-tokenizer patterns.
//
// Compiled once with PCRE2_UTF | PCRE2_UCP (\s, \w, \d and POSIX classes follow Unicode
// properties, as in the Rust `regex` / Oniguruma engines the reference tokenizers use), JIT
// when available. Immutable after construction: find_all may be called from many threads.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sickle {

class Regex {
 public:
  // `what` names the pattern's origin for error messages (file and field).
  Regex(std::string pattern, std::string what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping leftmost matches in `text` (which must be valid UTF-8), as
  // [begin, end) byte offsets. An empty match advances by one character.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_, what_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool has_jit_ = false;
};

}  // namespace sickle
