// sickle/tokenizer/tokenizer.cpp — tiktoken and HF byte-level BPE (see tokenizer.h).
//
// Sources: tiktoken's CoreBPE (openai/tiktoken src/lib.rs: byte_pair_merge, special-token
// splitting), Moonshot's tokenization_kimi.py (pat_str, reserved special tokens, long-run
// chunking), HF tokenizers (AddedVocabulary leftmost-longest split, Split pre-tokenizer
// behaviours, ByteLevel byte<->unicode table, BPE merge priority).
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <queue>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "base/error.h"
#include "base/log.h"
#include "tokenizer/regex.h"

namespace sickle {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- UTF-8 helpers

namespace {

// Length of the valid UTF-8 sequence at s[i..n) (1..4), 0 if the bytes there are invalid,
// or -k if they are a valid-so-far prefix cut short by the end of input (k bytes present).
// Follows the Unicode "maximal subpart" rules (no overlongs, no surrogates, <= U+10FFFF).
int utf8_seq(const unsigned char* s, size_t i, size_t n, size_t* invalid_len) {
  unsigned char c = s[i];
  *invalid_len = 1;
  if (c < 0x80) return 1;
  int len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c == 0xE0) {
    len = 3;
    lo = 0xA0;
  } else if (c >= 0xE1 && c <= 0xEC) len = 3;
  else if (c == 0xED) {
    len = 3;
    hi = 0x9F;
  } else if (c >= 0xEE && c <= 0xEF) len = 3;
  else if (c == 0xF0) {
    len = 4;
    lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) len = 4;
  else if (c == 0xF4) {
    len = 4;
    hi = 0x8F;
  } else return 0;
  for (int k = 1; k < len; ++k) {
    if (i + k >= n) return -k;
    unsigned char b = s[i + k];
    unsigned char l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
    if (b < l || b > h) {
      *invalid_len = k;  // the maximal subpart is the k bytes before the bad one
      return 0;
    }
  }
  return len;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool is_valid_utf8(std::string_view text) {
  auto s = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0, inv = 0;
  while (i < text.size()) {
    int n = utf8_seq(s, i, text.size(), &inv);
    if (n <= 0) return false;
    i += n;
  }
  return true;
}

}  // namespace

std::string utf8_sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  auto s = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0, inv = 0;
  while (i < bytes.size()) {
    int n = utf8_seq(s, i, bytes.size(), &inv);
    if (n > 0) {
      out.append(bytes.substr(i, n));
      i += n;
    } else if (n < 0) {  // truncated at the end: one replacement for the whole prefix
      out.append(kReplacement);
      i = bytes.size();
    } else {
      out.append(kReplacement);
      i += inv;
    }
  }
  return out;
}

size_t utf8_complete_prefix(std::string_view bytes) {
  // Only the last 3 bytes can start an unfinished character.
  auto s = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size();
  size_t start = n > 3 ? n - 3 : 0;
  for (size_t i = start; i < n; ++i) {
    if ((s[i] & 0xC0) == 0x80) continue;  // continuation byte
    size_t inv = 0;
    if (utf8_seq(s, i, n, &inv) < 0) return i;
  }
  return n;
}

// ---------------------------------------------------------------- implementation

namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using BytesMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

}  // namespace

// base64 (standard alphabet, '=' padding) as used by tiktoken files and data: URLs.
std::optional<std::string> base64_decode(std::string_view in) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(abc[i])] = static_cast<int8_t>(i);
    return t;
  }();
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  size_t i = 0;
  for (; i < in.size() && in[i] != '='; ++i) {
    int v = table[static_cast<unsigned char>(in[i])];
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  for (; i < in.size(); ++i)
    if (in[i] != '=') return std::nullopt;
  return out;
}

namespace {

// GPT-2's bytes_to_unicode table (HF ByteLevel): printable bytes map to themselves, the rest
// to U+0100 + k in byte order.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> t{};
  int k = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    t[b] = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + k++);
  }
  return t;
}

// Decode a byte-level vocab string back to raw bytes; nullopt if a character is not in the
// table (HF's decoder then falls back to the raw UTF-8 of the token, as we do).
std::optional<std::string> byte_level_to_bytes(std::string_view s) {
  static const std::unordered_map<uint32_t, uint8_t> inverse = [] {
    std::unordered_map<uint32_t, uint8_t> m;
    auto t = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) m[t[b]] = static_cast<uint8_t>(b);
    return m;
  }();
  std::string out;
  auto p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0, inv = 0;
  while (i < s.size()) {
    int n = utf8_seq(p, i, s.size(), &inv);
    if (n <= 0) return std::nullopt;
    uint32_t cp = n == 1   ? p[i]
                  : n == 2 ? ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu)
                  : n == 3 ? ((p[i] & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu)
                           : ((p[i] & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) |
                                 (p[i + 3] & 0x3Fu);
    auto it = inverse.find(cp);
    if (it == inverse.end()) return std::nullopt;
    out.push_back(static_cast<char>(it->second));
    i += n;
  }
  return out;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", path.string(), e.what());
  }
}

// tokenizer_config.json token fields are a string or {"content": ...} (AddedToken).
std::string token_field(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return {};
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return {};
}

// Kimi's pat_str (tokenization_kimi.py, moonshotai/Kimi-K2-Instruct), translated from the
// Rust regex dialect tiktoken uses to PCRE2:
//  - class intersection `[X&&[^\p{Han}]]` -> `(?:(?!\p{sc=Han})[X])` (PCRE2 10.42 has no &&);
//  - `\p{Han}` -> `\p{sc=Han}`: Rust's bare script name is the Script property, PCRE2's
//    bare name would be Script_Extensions (which also takes e.g. U+3001/U+3002).
// Alternatives, in order: Han runs; [^\r\n\p{L}\p{N}]? upper* lower+ contraction?;
// [^\r\n\p{L}\p{N}]? upper+ lower* contraction?; 1-3 digits; ` ?` punctuation run + newlines;
// whitespace ending in newlines; whitespace not followed by non-space; whitespace.
const char* kKimiPattern =
    R"(\p{sc=Han}+)"
    R"(|[^\r\n\p{L}\p{N}]?(?:(?!\p{sc=Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])*(?:(?!\p{sc=Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?(?:(?!\p{sc=Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])+(?:(?!\p{sc=Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*)"
    R"(|\s*[\r\n]+)"
    R"(|\s+(?!\S))"
    R"(|\s+)";

// GPT-2's pattern (HF ByteLevel with use_regex = true).
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The built-in patterns, compiled once per process: JIT-compiling the Kimi pattern costs more
// than reading a small tokenizer (tests and the fuzzers load many). Regex is immutable and
// thread-safe, so loaded tokenizers share them.
const std::shared_ptr<Regex>& builtin_regex(const char* pattern) {
  static std::mutex mu;
  static std::map<const char*, std::shared_ptr<Regex>> compiled;
  std::lock_guard<std::mutex> lock(mu);
  auto& r = compiled[pattern];
  if (!r)
    r = std::make_shared<Regex>(pattern,
                                pattern == kKimiPattern ? "Kimi pre-tokenizer" : "GPT-2 pre-tokenizer");
  return r;
}

// Python's str.isspace() set (used by Kimi's long-run chunking).
bool py_isspace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreStep {
  enum Kind { kSplit, kByteLevel } kind = kSplit;
  std::shared_ptr<Regex> regex;  // kSplit; kByteLevel with use_regex
  std::string literal;           // kSplit with a String pattern
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // kByteLevel
};

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false, rstrip = false;
};

// Where special/added-token strings in the text being encoded become their ids: everywhere,
// nowhere, or only when the whole match lies inside one of `ranges` (the template spans of a
// RenderedPrompt: sorted, disjoint [begin, end) byte offsets).
struct SpecialScope {
  bool everywhere = false;
  std::vector<std::pair<size_t, size_t>> ranges;

  bool allows(size_t begin, size_t end) const {
    if (everywhere) return true;
    auto it = std::upper_bound(ranges.begin(), ranges.end(), begin,
                               [](size_t b, const std::pair<size_t, size_t>& r) { return b < r.first; });
    return it != ranges.begin() && end <= std::prev(it)->second;
  }
  bool none() const { return !everywhere && ranges.empty(); }
};

}  // namespace

class TokenizerImpl {
 public:
  TokenizerKind kind = TokenizerKind::kTiktoken;
  nlohmann::json config = nlohmann::json::object();
  std::string source;         // file name for errors
  std::filesystem::path dir;  // the directory the files came from (chat_template.jinja lookup)

  // id -> raw bytes (ordinary tokens) or content (added tokens); has_token marks gaps.
  std::vector<std::string> id_bytes;
  std::vector<uint8_t> has_token, special_flag;
  BytesMap bytes_to_id;                                                  // ordinary tokens only
  std::array<int32_t, 256> byte_id{};                                    // single-byte tokens
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> pair_merge;  // HF: (a,b) -> (rank, id)
  bool ignore_merges = false;  // HF flag; tiktoken always emits whole-piece tokens

  std::vector<AddedToken> added;
  BytesMap added_by_text;
  std::vector<size_t> added_lengths;       // distinct lengths, descending
  std::array<uint8_t, 256> added_first{};  // first bytes of added tokens

  std::shared_ptr<Regex> kimi_regex;  // tiktoken
  std::vector<PreStep> steps;         // HF
  int32_t bos = -1, eos = -1;
  std::vector<int32_t> stops;

  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;

  void index_added() {
    std::set<size_t, std::greater<>> lens;
    for (const auto& a : added) {
      if (a.content.empty()) continue;
      added_by_text[a.content] = a.id;
      lens.insert(a.content.size());
      added_first[static_cast<unsigned char>(a.content[0])] = 1;
    }
    added_lengths.assign(lens.begin(), lens.end());
  }

  // Longest added token (special or not) starting at text[i] that `scope` allows there, or nullptr.
  const AddedToken* match_added(std::string_view text, size_t i, const SpecialScope& scope) const {
    if (!added_first[static_cast<unsigned char>(text[i])]) return nullptr;
    for (size_t len : added_lengths) {
      if (i + len > text.size()) continue;
      auto it = added_by_text.find(text.substr(i, len));
      if (it != added_by_text.end() && scope.allows(i, i + len)) return &added[added_index.at(it->second)];
    }
    return nullptr;
  }
  std::unordered_map<int32_t, size_t> added_index;

  // ---- pre-tokenization

  void pre_tokenize(std::string_view text, std::vector<std::string_view>& pieces,
                    std::deque<std::string>& scratch) const {
    if (kind == TokenizerKind::kTiktoken) {
      for (auto [b, e] : kimi_regex->find_all(text)) pieces.push_back(text.substr(b, e - b));
      return;
    }
    std::vector<std::string_view> cur{text}, next;
    if (text.empty()) cur.clear();
    for (const auto& st : steps) {
      next.clear();
      if (st.kind == PreStep::kByteLevel) {
        if (st.add_prefix_space) {
          // HF ByteLevel prepends a space to every split that does not start with one; the
          // new strings live in `scratch` (a deque: views into it stay valid).
          for (auto& piece : cur) {
            if (piece.empty() || piece[0] == ' ') continue;
            scratch.push_back(" " + std::string(piece));
            piece = scratch.back();
          }
        }
        if (!st.regex) continue;
        for (auto piece : cur)
          for (auto [b, e] : st.regex->find_all(piece)) next.push_back(piece.substr(b, e - b));
        cur.swap(next);
        continue;
      }
      for (auto piece : cur) split_piece(st, piece, next);
      cur.swap(next);
    }
    for (auto p : cur)
      if (!p.empty()) pieces.push_back(p);
  }

  static void split_piece(const PreStep& st, std::string_view piece, std::vector<std::string_view>& out) {
    std::vector<std::pair<size_t, size_t>> m;
    if (st.regex) {
      m = st.regex->find_all(piece);
    } else if (!st.literal.empty()) {
      for (size_t p = piece.find(st.literal); p != std::string_view::npos;
           p = piece.find(st.literal, p + st.literal.size()))
        m.emplace_back(p, p + st.literal.size());
    }
    // (span, is_match) in order, covering the piece (HF SplitDelimiterBehavior).
    std::vector<std::pair<std::string_view, bool>> parts;
    size_t pos = 0;
    for (auto [b, e] : m) {
      if (b > pos) parts.emplace_back(piece.substr(pos, b - pos), st.invert);
      parts.emplace_back(piece.substr(b, e - b), !st.invert);
      pos = e;
    }
    if (pos < piece.size()) parts.emplace_back(piece.substr(pos), st.invert);
    auto join = [&](std::string_view a, std::string_view b) {  // adjacent spans
      return std::string_view(a.data(), a.size() + b.size());
    };
    switch (st.behavior) {
      case SplitBehavior::kIsolated:
        for (auto& [s, is_m] : parts) out.push_back(s);
        break;
      case SplitBehavior::kRemoved:
        for (auto& [s, is_m] : parts)
          if (!is_m) out.push_back(s);
        break;
      case SplitBehavior::kMergedWithPrevious: {
        std::vector<std::string_view> r;
        for (auto& [s, is_m] : parts) {
          if (is_m && !r.empty()) r.back() = join(r.back(), s);
          else r.push_back(s);
        }
        out.insert(out.end(), r.begin(), r.end());
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        std::vector<std::string_view> r;
        bool carry = false;
        for (auto& [s, is_m] : parts) {
          if (carry) r.back() = join(r.back(), s);
          else r.push_back(s);
          carry = is_m;
        }
        out.insert(out.end(), r.begin(), r.end());
        break;
      }
      case SplitBehavior::kContiguous: {
        std::vector<std::string_view> r;
        bool prev_m = false;
        for (size_t k = 0; k < parts.size(); ++k) {
          auto& [s, is_m] = parts[k];
          if (k > 0 && is_m && prev_m) r.back() = join(r.back(), s);
          else r.push_back(s);
          prev_m = is_m;
        }
        out.insert(out.end(), r.begin(), r.end());
        break;
      }
    }
  }

  // ---- byte-pair merge

  // Rank and merged id of adjacent parts [b0, b1) + [b1, b2) of `piece` whose ids are a, b.
  bool pair_rank(std::string_view piece, size_t b0, size_t b2, int32_t a, int32_t b, int32_t* rank,
                 int32_t* id) const {
    if (kind == TokenizerKind::kTiktoken) {
      // tiktoken: the pair's rank is the rank of the concatenated bytes.
      auto it = bytes_to_id.find(piece.substr(b0, b2 - b0));
      if (it == bytes_to_id.end()) return false;
      *rank = *id = it->second;
      return true;
    }
    auto it =
        pair_merge.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
    if (it == pair_merge.end()) return false;
    *rank = it->second.first;
    *id = it->second.second;
    return true;
  }

  // Merge the bytes of one piece: repeatedly merge the adjacent pair of lowest rank, leftmost
  // on ties (tiktoken byte_pair_merge; HF Word::merge_all). A min-heap of candidate pairs
  // with lazy invalidation over a linked list makes it O(n log n), not O(n^2), on long words.
  void bpe(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.empty()) return;
    if (kind == TokenizerKind::kTiktoken || ignore_merges) {
      auto it = bytes_to_id.find(piece);
      if (it != bytes_to_id.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (piece.size() == 1) {
      const int32_t id = byte_id[static_cast<unsigned char>(piece[0])];
      if (id < 0)
        fail("{}: no token for byte {:#04x} (the vocabulary lacks a single-byte token)", source,
             uint8_t(piece[0]));
      out.push_back(id);
      return;
    }
    const bool cacheable = piece.size() <= 256;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mu);
      auto it = cache.find(piece);
      if (it != cache.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    struct Node {
      uint32_t start, end;
      int32_t id, prev, next;
    };
    const int32_t n = static_cast<int32_t>(piece.size());
    std::vector<Node> nodes(n);
    for (int32_t i = 0; i < n; ++i) {
      int32_t bid = byte_id[static_cast<unsigned char>(piece[i])];
      nodes[i] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1), bid, i - 1, i + 1 < n ? i + 1 : -1};
    }
    struct Cand {
      int32_t rank;
      uint32_t start, left_end, right_end;
      int32_t left, id;
    };
    auto worse = [](const Cand& x, const Cand& y) {
      return x.rank != y.rank ? x.rank > y.rank : x.start > y.start;
    };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    auto push = [&](int32_t l) {
      if (l < 0) return;
      int32_t r = nodes[l].next;
      if (r < 0) return;
      int32_t rank, id;
      if (pair_rank(piece, nodes[l].start, nodes[r].end, nodes[l].id, nodes[r].id, &rank, &id))
        heap.push({rank, nodes[l].start, nodes[l].end, nodes[r].end, l, id});
    };
    for (int32_t i = 0; i + 1 < n; ++i) push(i);
    std::vector<uint8_t> alive(n, 1);
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      Node& L = nodes[c.left];
      if (!alive[c.left] || L.end != c.left_end || L.next < 0 || nodes[L.next].end != c.right_end) continue;
      int32_t r = L.next;
      alive[r] = 0;
      L.end = nodes[r].end;
      L.id = c.id;
      L.next = nodes[r].next;
      if (L.next >= 0) nodes[L.next].prev = c.left;
      push(L.prev);
      push(c.left);
    }
    size_t first = out.size();
    for (int32_t i = 0; i >= 0; i = nodes[i].next) {
      int32_t id = nodes[i].id;
      if (id < 0) {
        fail("{}: no token for bytes of piece (the vocabulary lacks a single-byte token)", source);
      }
      out.push_back(id);
    }
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mu);
      if (cache.size() > 200000) cache.clear();
      cache.emplace(std::string(piece), std::vector<int32_t>(out.begin() + first, out.end()));
    }
  }

  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
    std::vector<std::string_view> pieces;
    std::deque<std::string> scratch;
    pre_tokenize(text, pieces, scratch);
    for (auto p : pieces) bpe(p, out);
  }

  // text[begin, end): split on the added/special tokens `scope` allows (leftmost, longest),
  // encode the text between. Offsets are into the whole text, which `scope` refers to.
  void encode_segment(std::string_view text, size_t begin, size_t end, const SpecialScope& scope,
                      std::vector<int32_t>& out) const {
    text = text.substr(0, end);
    size_t seg = begin, i = begin;
    while (i < text.size() && !scope.none()) {
      const AddedToken* a = match_added(text, i, scope);
      if (!a) {
        ++i;
        continue;
      }
      size_t seg_end = i, after = i + a->content.size();
      if (a->lstrip)
        while (seg_end > seg && std::isspace(static_cast<unsigned char>(text[seg_end - 1]))) --seg_end;
      if (a->rstrip)
        while (after < text.size() && std::isspace(static_cast<unsigned char>(text[after]))) ++after;
      encode_ordinary(text.substr(seg, seg_end - seg), out);
      out.push_back(a->id);
      seg = i = after;
    }
    encode_ordinary(text.substr(seg), out);
  }

  // `text` must be valid UTF-8 (the callers repair it).
  std::vector<int32_t> encode(std::string_view text, const SpecialScope& scope) const;
};

// ---------------------------------------------------------------- loading

Tokenizer::Tokenizer() : impl_(std::make_unique<TokenizerImpl>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const fs::path& model_dir) {
  if (fs::exists(model_dir / "tiktoken.model")) {
    auto cfg = model_dir / "tokenizer_config.json";
    if (!fs::exists(cfg))
      fail("{}: tiktoken.model needs tokenizer_config.json beside it (special tokens)", cfg.string());
    return load_tiktoken(model_dir / "tiktoken.model", cfg);
  }
  if (fs::exists(model_dir / "tokenizer.json")) {
    auto cfg = model_dir / "tokenizer_config.json";
    return load_hf(model_dir / "tokenizer.json", fs::exists(cfg) ? cfg : fs::path());
  }
  fail("{}: no tokenizer (expected tiktoken.model + tokenizer_config.json, or tokenizer.json)",
       model_dir.string());
}

// Both loaders turn a JSON value of the wrong type anywhere in their files (nlohmann's
// type_error / out_of_range) into an Error naming the file (function-try-blocks).
std::unique_ptr<Tokenizer> Tokenizer::load_tiktoken(const fs::path& model_file,
                                                    const fs::path& config_file) try {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  TokenizerImpl& t = *tok->impl_;
  t.kind = TokenizerKind::kTiktoken;
  t.source = model_file.string();
  t.dir = model_file.parent_path();
  if (!config_file.empty()) t.config = read_json(config_file);

  std::ifstream in(model_file, std::ios::binary);
  if (!in) fail("{}: cannot open", model_file.string());
  std::string line;
  int64_t line_no = 0, max_rank = -1;
  std::vector<std::pair<std::string, int64_t>> entries;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    auto sp = line.find(' ');
    if (sp == std::string::npos)
      fail("{}:{}: expected `base64 rank`, got '{}'", t.source, line_no, line.substr(0, 80));
    auto bytes = base64_decode(std::string_view(line).substr(0, sp));
    if (!bytes || bytes->empty())
      fail("{}:{}: invalid base64 token '{}'", t.source, line_no, line.substr(0, sp));
    int64_t rank = -1;
    try {
      size_t used = 0;
      rank = std::stoll(line.substr(sp + 1), &used);
      if (used != line.size() - sp - 1) rank = -1;
    } catch (...) {
    }
    if (rank < 0 || rank >= (int64_t(1) << 30))
      fail("{}:{}: invalid rank '{}'", t.source, line_no, line.substr(sp + 1));
    max_rank = std::max(max_rank, rank);
    entries.emplace_back(std::move(*bytes), rank);
  }
  if (entries.empty()) fail("{}: no tokens", t.source);
  // Ranks are 0..N-1, N = the number of tokens (tokenization_kimi.py numbers the specials from
  // len(mergeable_ranks), which only agrees with max rank + 1 then). Checked before the id
  // tables are sized by it: one line `YQ== 1073741823` must not allocate 2^30 entries.
  if (max_rank >= int64_t(entries.size()))
    fail("{}: rank {} but only {} tokens: ranks must be 0..{} (each once)", t.source, max_rank,
         entries.size(), entries.size() - 1);
  const int64_t n_ranks = max_rank + 1;

  // Special tokens: ids [n_ranks, n_ranks + 256) (tokenization_kimi.py
  // num_reserved_special_tokens), named in added_tokens_decoder, else <|reserved_token_ID|>.
  // Ids outside that range are an Error (the reference ignores them), never a size: they come
  // from the file, and one id of 300000000 once sized the tables at 24 GB.
  constexpr int64_t kNumReservedSpecial = 256;  // tokenization_kimi.py num_reserved_special_tokens
  const std::string cfg_name = config_file.string();
  std::map<int64_t, std::pair<std::string, bool>> named;
  if (t.config.contains("added_tokens_decoder")) {
    const auto& atd = t.config["added_tokens_decoder"];
    if (!atd.is_object()) fail("{}: added_tokens_decoder must be an object", cfg_name);
    for (auto it = atd.begin(); it != atd.end(); ++it) {
      const std::string& key = it.key();
      int64_t id = -1;
      auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (ec != std::errc() || end != key.data() + key.size() || id < n_ranks ||
          id >= n_ranks + kNumReservedSpecial)
        fail(
            "{}: added_tokens_decoder id '{}' is not in [{}, {}): the {} special ids after the {} ranks of "
            "{}",
            cfg_name, key, n_ranks, n_ranks + kNumReservedSpecial, kNumReservedSpecial, n_ranks, t.source);
      const auto& v = it.value();
      if (!v.is_object() || !v.contains("content") || !v["content"].is_string())
        fail("{}: added_tokens_decoder['{}'] lacks a string 'content'", cfg_name, key);
      if (v.contains("special") && !v["special"].is_boolean())
        fail("{}: added_tokens_decoder['{}'].special must be a boolean", cfg_name, key);
      named[id] = {v["content"].get<std::string>(), v.value("special", true)};
    }
  }
  const int64_t vocab = n_ranks + kNumReservedSpecial;
  t.id_bytes.assign(vocab, {});
  t.has_token.assign(vocab, 0);
  t.special_flag.assign(vocab, 0);
  t.bytes_to_id.reserve(entries.size() * 2);
  for (auto& [bytes, rank] : entries) {
    if (t.has_token[rank]) fail("{}: rank {} appears twice", t.source, rank);
    if (!t.bytes_to_id.emplace(bytes, static_cast<int32_t>(rank)).second)
      fail("{}: token bytes of rank {} appear twice", t.source, rank);
    t.has_token[rank] = 1;
    t.id_bytes[rank] = std::move(bytes);
  }
  for (int64_t id = n_ranks; id < vocab; ++id) {
    auto it = named.find(id);
    AddedToken a;
    a.id = static_cast<int32_t>(id);
    a.content = it != named.end() ? it->second.first : fmt::format("<|reserved_token_{}|>", id);
    a.special = true;
    t.id_bytes[id] = a.content;
    t.has_token[id] = 1;
    t.special_flag[id] = 1;
    t.added_index[a.id] = t.added.size();
    t.added.push_back(std::move(a));
  }
  t.index_added();
  for (int b = 0; b < 256; ++b) {
    auto it = t.bytes_to_id.find(std::string(1, static_cast<char>(b)));
    t.byte_id[b] = it == t.bytes_to_id.end() ? -1 : it->second;
  }
  t.kimi_regex = builtin_regex(kKimiPattern);

  std::string bos = token_field(t.config, "bos_token"), eos = token_field(t.config, "eos_token");
  t.bos = bos.empty() ? tok->token_id("[BOS]") : tok->token_id(bos);
  t.eos = eos.empty() ? tok->token_id("[EOS]") : tok->token_id(eos);
  // Kimi stops on <|im_end|> and [EOS] (docs/formats.md §6), plus the configured eos.
  for (int32_t id : {tok->token_id("<|im_end|>"), tok->token_id("[EOS]"), t.eos})
    if (id >= 0 && std::find(t.stops.begin(), t.stops.end(), id) == t.stops.end()) t.stops.push_back(id);
  return tok;
} catch (const nlohmann::json::exception& e) {
  fail("{}: {}", config_file.string(), e.what());
}

std::unique_ptr<Tokenizer> Tokenizer::load_hf(const fs::path& tokenizer_json,
                                              const fs::path& config_file) try {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  TokenizerImpl& t = *tok->impl_;
  t.kind = TokenizerKind::kHfByteLevel;
  t.source = tokenizer_json.string();
  t.dir = tokenizer_json.parent_path();
  if (!config_file.empty()) t.config = read_json(config_file);
  const nlohmann::json j = read_json(tokenizer_json);
  const std::string& src = t.source;
  if (!j.contains("model") || !j["model"].is_object()) fail("{}: missing 'model'", src);
  const auto& model = j["model"];
  if (model.value("type", std::string("BPE")) != "BPE")
    fail("{}: model.type is '{}', only BPE is supported", src, model.value("type", std::string()));
  if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() &&
      model["byte_fallback"].get<bool>())
    fail("{}: model.byte_fallback = true (SentencePiece-style BPE) is not supported", src);
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty())
      fail("{}: model.{} is not supported", src, k);
  t.ignore_merges = model.value("ignore_merges", false);
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail("{}: missing model.vocab", src);

  // Normalizer: only the identity (null or an empty Sequence) — NFC etc. would need ICU.
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const auto& nz = j["normalizer"];
    bool identity = nz.value("type", std::string()) == "Sequence" && nz.contains("normalizers") &&
                    nz["normalizers"].is_array() && nz["normalizers"].empty();
    if (!identity) fail("{}: normalizer {} is not supported", src, nz.dump().substr(0, 120));
  }

  // Ids size the id tables (a string and two flags per id), so they are checked against what
  // the file defines before anything is sized by them: gaps are allowed (real files have none),
  // but at most kMaxUnusedIds ids without a token, and ids fit int32_t.
  constexpr int64_t kMaxUnusedIds = 1 << 16;
  const bool has_added = j.contains("added_tokens") && j["added_tokens"].is_array();
  const int64_t n_defined = int64_t(model["vocab"].size() + (has_added ? j["added_tokens"].size() : 0));
  const int64_t id_limit = std::min<int64_t>(INT32_MAX, n_defined + kMaxUnusedIds);
  auto checked_id = [&](const nlohmann::json& v, const std::string& what) -> int32_t {
    if (!v.is_number_integer()) fail("{}: {} is not an integer", src, what);
    const bool fits = !v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX);
    const int64_t id = fits ? v.get<int64_t>() : -1;
    if (id < 0 || id >= id_limit)
      fail("{}: {} = {} is not an id in [0, {}) ({} tokens defined, at most {} ids unused)", src, what,
           v.dump(), id_limit, n_defined, kMaxUnusedIds);
    return int32_t(id);
  };
  int64_t max_id = -1;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it)
    max_id = std::max<int64_t>(max_id, checked_id(it.value(), fmt::format("model.vocab['{}']", it.key())));
  std::vector<AddedToken> added;
  if (has_added) {
    for (const auto& a : j["added_tokens"]) {
      if (!a.contains("id") || !a.contains("content") || !a["id"].is_number_integer() ||
          !a["content"].is_string())
        fail("{}: added_tokens entry lacks integer 'id' / string 'content': {}", src,
             a.dump().substr(0, 120));
      AddedToken at;
      at.content = a["content"].get<std::string>();
      at.id = checked_id(a["id"], fmt::format("added token '{}' id", at.content));
      at.special = a.value("special", false);
      at.lstrip = a.value("lstrip", false);
      at.rstrip = a.value("rstrip", false);
      if (a.value("single_word", false))
        log_warn("{}: added token '{}' has single_word = true (ignored)", src, at.content);
      max_id = std::max<int64_t>(max_id, at.id);
      added.push_back(std::move(at));
    }
  }
  if (max_id < 0) fail("{}: empty vocabulary", src);
  const int64_t vocab = max_id + 1;
  t.id_bytes.assign(vocab, {});
  t.has_token.assign(vocab, 0);
  t.special_flag.assign(vocab, 0);
  t.bytes_to_id.reserve(model["vocab"].size() * 2);
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    const int64_t id = it.value().get<int64_t>();  // checked above
    auto bytes = byte_level_to_bytes(it.key());
    std::string b = bytes ? std::move(*bytes) : it.key();
    if (t.has_token[id]) fail("{}: id {} appears twice in model.vocab", src, id);
    t.has_token[id] = 1;
    t.bytes_to_id.emplace(b, static_cast<int32_t>(id));
    t.id_bytes[id] = std::move(b);
  }
  for (auto& a : added) {
    t.id_bytes[a.id] = a.content;
    t.has_token[a.id] = 1;
    t.special_flag[a.id] = a.special ? 1 : 0;
    t.added_index[a.id] = t.added.size();
    t.added.push_back(a);
  }
  t.index_added();
  for (int b = 0; b < 256; ++b) {
    auto it = t.bytes_to_id.find(std::string(1, static_cast<char>(b)));
    t.byte_id[b] = it == t.bytes_to_id.end() ? -1 : it->second;
  }

  // Merges: "a b" strings (older files) or [a, b] pairs; rank = position in the list.
  if (!model.contains("merges") || !model["merges"].is_array()) fail("{}: missing model.merges", src);
  const auto& merges = model["merges"];
  t.pair_merge.reserve(merges.size() * 2);
  // Merges name tokens by their vocab spelling: look them up as spelled (no byte decoding).
  BytesMap by_spelling;
  by_spelling.reserve(model["vocab"].size() * 2);
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it)
    by_spelling.emplace(it.key(), it.value().get<int32_t>());
  auto token_of = [&](std::string_view s, size_t rank) -> int32_t {
    auto it = by_spelling.find(s);
    if (it == by_spelling.end()) fail("{}: merge {} names '{}', which is not in the vocab", src, rank, s);
    return it->second;
  };
  for (size_t r = 0; r < merges.size(); ++r) {
    std::string_view a, b;
    const auto& m = merges[r];
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      auto sp = s.find(' ');
      if (sp == std::string::npos) fail("{}: merge {} '{}' has no space", src, r, s);
      a = std::string_view(s).substr(0, sp);
      b = std::string_view(s).substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get_ref<const std::string&>();
      b = m[1].get_ref<const std::string&>();
    } else {
      fail("{}: merge {} is neither 'a b' nor [a, b]", src, r);
    }
    std::string joined;
    joined.reserve(a.size() + b.size());
    joined.append(a).append(b);
    int32_t ia = token_of(a, r), ib = token_of(b, r), im = token_of(joined, r);
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia)) << 32) | static_cast<uint32_t>(ib);
    t.pair_merge.emplace(key, std::make_pair(static_cast<int32_t>(r), im));  // first (lowest) rank wins
  }

  // Pre-tokenizer: Sequence of Split / ByteLevel (the shapes byte-level BPE files use).
  std::vector<nlohmann::json> pts;
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
    const auto& p = j["pre_tokenizer"];
    if (p.value("type", std::string()) == "Sequence") {
      for (const auto& q : p.at("pretokenizers")) pts.push_back(q);
    } else {
      pts.push_back(p);
    }
  }
  for (size_t k = 0; k < pts.size(); ++k) {
    const auto& p = pts[k];
    std::string type = p.value("type", std::string());
    std::string what = fmt::format("{} pre_tokenizer[{}]", src, k);
    PreStep st;
    if (type == "Split") {
      st.kind = PreStep::kSplit;
      const auto& pat = p.at("pattern");
      if (pat.contains("Regex")) st.regex = std::make_shared<Regex>(pat["Regex"].get<std::string>(), what);
      else if (pat.contains("String")) st.literal = pat["String"].get<std::string>();
      else fail("{}: Split pattern must be Regex or String", what);
      std::string beh = p.value("behavior", std::string("Isolated"));
      if (beh == "Isolated") st.behavior = SplitBehavior::kIsolated;
      else if (beh == "Removed") st.behavior = SplitBehavior::kRemoved;
      else if (beh == "MergedWithPrevious") st.behavior = SplitBehavior::kMergedWithPrevious;
      else if (beh == "MergedWithNext") st.behavior = SplitBehavior::kMergedWithNext;
      else if (beh == "Contiguous") st.behavior = SplitBehavior::kContiguous;
      else fail("{}: unknown Split behavior '{}'", what, beh);
      st.invert = p.value("invert", false);
    } else if (type == "ByteLevel") {
      st.kind = PreStep::kByteLevel;
      st.add_prefix_space = p.value("add_prefix_space", false);
      if (p.value("use_regex", true)) st.regex = builtin_regex(kGpt2Pattern);
    } else {
      fail("{}: pre-tokenizer type '{}' is not supported (Split, ByteLevel, Sequence are)", what, type);
    }
    t.steps.push_back(std::move(st));
  }

  std::string bos = token_field(t.config, "bos_token"), eos = token_field(t.config, "eos_token");
  t.bos = bos.empty() ? -1 : tok->token_id(bos);
  t.eos = eos.empty() ? -1 : tok->token_id(eos);
  if (t.eos >= 0) t.stops.push_back(t.eos);
  return tok;
} catch (const nlohmann::json::exception& e) {
  fail("{}: {}", tokenizer_json.string(), e.what());
}

// ---------------------------------------------------------------- encode / decode

std::vector<int32_t> TokenizerImpl::encode(std::string_view text, const SpecialScope& scope) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (kind != TokenizerKind::kTiktoken) {
    encode_segment(text, 0, text.size(), scope, out);
    return out;
  }
  // tokenization_kimi.py encode(): cut the text into runs of at most 25000 consecutive
  // whitespace or non-whitespace characters (and 400000-character blocks) and encode each
  // separately — it only changes results on pathological inputs, but it is the reference.
  constexpr size_t kMaxEncodeChars = 400000, kMaxRun = 25000;
  auto p = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0, slice_start = 0, run = 0, chars = 0, block_start = 0, inv = 0;
  bool run_space = false;
  while (i < text.size()) {
    int n = utf8_seq(p, i, text.size(), &inv);
    uint32_t cp = p[i];
    if (n == 2) cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
    else if (n == 3) cp = ((p[i] & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
    else if (n == 4)
      cp = ((p[i] & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) |
           (p[i + 3] & 0x3Fu);
    if (chars == kMaxEncodeChars) {  // new 400000-character block: restart the run state
      encode_segment(text, slice_start, i, scope, out);
      slice_start = block_start = i;
      chars = 0;
    }
    bool sp = py_isspace(cp);
    if (chars == 0 && i == block_start) {
      run_space = sp;
      run = 1;
    } else if (sp != run_space) {
      run_space = sp;
      run = 1;
    } else if (++run > kMaxRun) {
      encode_segment(text, slice_start, i, scope, out);
      slice_start = i;
      run = 1;
    }
    ++chars;
    i += n > 0 ? n : 1;
  }
  encode_segment(text, slice_start, text.size(), scope, out);
  return out;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {  // regexes need valid UTF-8; Python strings always are
    repaired = utf8_sanitize(text);
    text = repaired;
  }
  SpecialScope scope;
  scope.everywhere = allow_special;
  return impl_->encode(text, scope);
}

std::vector<int32_t> Tokenizer::encode(const RenderedPrompt& prompt, bool specials_in_values) const {
  // One text, so that ordinary text is pre-tokenized across span boundaries exactly as in the
  // flat string; special tokens are matched only inside template spans. Each span is
  // repaired on its own, so the offsets stay those of the spans.
  std::string text;
  SpecialScope scope;
  scope.everywhere = specials_in_values;
  for (const auto& span : prompt.spans) {
    const size_t begin = text.size();
    text += is_valid_utf8(span.text) ? span.text : utf8_sanitize(span.text);
    if (span.is_value || begin == text.size()) continue;
    if (!scope.ranges.empty() && scope.ranges.back().second == begin)
      scope.ranges.back().second = text.size();
    else scope.ranges.emplace_back(begin, text.size());
  }
  return impl_->encode(text, scope);
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  const TokenizerImpl& t = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(t.id_bytes.size()) || !t.has_token[id])
      fail("{}: token id {} is not in the vocabulary (size {})", t.source, id, t.id_bytes.size());
    if (skip_special && t.special_flag[id]) continue;
    out.append(t.id_bytes[id]);
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  return utf8_sanitize(decode_bytes(ids, skip_special));
}

int32_t Tokenizer::token_id(std::string_view special) const {
  auto it = impl_->added_by_text.find(special);
  return it == impl_->added_by_text.end() ? -1 : it->second;
}

std::string Tokenizer::token_text(int32_t id) const {
  int32_t one[1] = {id};
  return decode_bytes(one);
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < static_cast<int64_t>(impl_->special_flag.size()) && impl_->special_flag[id];
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_bytes.size()); }
std::vector<int32_t> Tokenizer::stop_ids() const { return impl_->stops; }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
TokenizerKind Tokenizer::kind() const { return impl_->kind; }
const nlohmann::json& Tokenizer::config() const { return impl_->config; }
const std::filesystem::path& Tokenizer::model_dir() const { return impl_->dir; }

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = utf8_sanitize(text);
    text = repaired;
  }
  std::vector<std::string_view> pieces;
  std::deque<std::string> scratch;
  impl_->pre_tokenize(text, pieces, scratch);
  return {pieces.begin(), pieces.end()};
}

// ---------------------------------------------------------------- streaming

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  int32_t one[1] = {id};
  pending_ += tokenizer_.decode_bytes(one, skip_special_);
  size_t done = utf8_complete_prefix(pending_);
  std::string out = utf8_sanitize(std::string_view(pending_).substr(0, done));
  pending_.erase(0, done);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace sickle
