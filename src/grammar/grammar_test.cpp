// Tests of the grammar engine: regexes against libstdc++'s ECMAScript std::regex, JSON Schema
// grammars against ajv's verdicts (tests/grammar/verdicts.mjs, node at test time), token masks
// against a brute-force prefix check, and random constrained decoding over the demo model's
// vocabulary whose every document ajv validates.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <regex>

#include "base/error.h"
#include "grammar/json_schema.h"
#include "grammar/regex_grammar.h"
#include "grammar/token_constraint.h"
#include "tokenizer/tokenizer.h"

namespace sickle::grammar {
namespace {

using json = nlohmann::json;

const std::string kSrc = SICKLE_SOURCE_DIR;

// ajv's verdicts for cases = [{schema, docs: [text]}].
std::vector<std::vector<bool>> ajv_verdicts(const json& cases, const std::string& tag) {
  std::filesystem::path file = std::filesystem::temp_directory_path() /
                               ("sickle_grammar_" + tag + "_" + std::to_string(::getpid()) + ".json");
  std::ofstream(file) << cases.dump();
  std::string cmd = "node " + kSrc + "/tests/grammar/verdicts.mjs " + file.string();
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = p ? pclose(p) : -1;
  std::filesystem::remove(file);
  EXPECT_EQ(rc, 0) << cmd << " failed (needs node >= 18 and npm to install ajv): " << out;
  json v = json::parse(out, nullptr, false);
  EXPECT_TRUE(v.is_array() && v.size() == cases.size()) << out;
  if (!v.is_array()) return {};
  return v.get<std::vector<std::vector<bool>>>();
}

// ---- regex ----

TEST(Regex, AgreesWithStdRegexEcmascript) {
  const std::vector<std::string> patterns = {"abc",          "a|bc|",       "(ab)*c?",          "a+b{2,3}",
                                             "[a-c]x[^a-c]", "\\d{2}-\\w+", "(?:x|yz){1,}",     "a.c",
                                             "[\\d.]+",      "(a*)*b",      "\\.\\*\\\\",       "[-a]b[a-]",
                                             "colou?r",      "x{0}y",       "(a|ab)(c|bcd)(d*)"};
  const std::vector<std::string> texts = {"",       "abc",  "a",       "bc",    "c",    "ababc", "aabbb",
                                          "abbbb",  "bxd",  "12-ab_9", "12-",   "xyzx", "a\nc",  "abc",
                                          "1.2.3",  "aaab", "b",       ".*\\",  "-b",   "ab",    "color",
                                          "colour", "y",    "abcd",    "abcdd", "abd",  "bxa"};
  int n_checked = 0;
  for (const auto& p : patterns) {
    auto g = compile_regex(p);
    std::regex re(p, std::regex::ECMAScript);
    for (const auto& t : texts) {
      EXPECT_EQ(g->accepts(t), std::regex_match(t, re)) << "/" << p << "/ on \"" << t << "\"";
      ++n_checked;
    }
  }
  EXPECT_EQ(n_checked, int(patterns.size() * texts.size()));
}

TEST(Regex, Utf8ClassesAndDot) {
  auto g = compile_regex("[é-]\\D.");
  EXPECT_TRUE(g->accepts("éxy"));
  EXPECT_TRUE(g->accepts("-€🎉"));
  EXPECT_FALSE(g->accepts("e1y"));
  EXPECT_FALSE(g->accepts("é1y"));
  EXPECT_FALSE(g->accepts("éx\xC3"));          // truncated character
  EXPECT_FALSE(g->accepts("éx\xED\xA0\x80"));  // a surrogate in UTF-8
}

TEST(Regex, RefusesWhatItCannotMatchExactly) {
  for (const char* bad : {"(a)\\1", "(?=a)", "a\\b", "(?<n>a)", "a^b", "a$b", "[b-a]", "*a", "(a", "a)", "[]",
                          "[^é]", "^a|b$", "a{3,2}", "\\p{L}"}) {
    EXPECT_THROW(compile_regex(bad), Error) << bad;
  }
  try {
    compile_regex("(?=a)b");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lookaround"), std::string::npos) << e.what();
  }
}

TEST(Choice, ExactlyOneOfTheStrings) {
  auto g = compile_choice({"yes", "no", "n/a", "yes!"});
  for (const char* t : {"yes", "no", "n/a", "yes!"}) EXPECT_TRUE(g->accepts(t)) << t;
  for (const char* t : {"", "y", "nope", "yes!!", "No"}) EXPECT_FALSE(g->accepts(t)) << t;
  EXPECT_THROW(compile_choice({}), Error);
}

// ---- JSON Schema ----

TEST(JsonSchema, UnsupportedKeywordNamesKeywordAndPointer) {
  struct Case {
    const char* schema;
    const char* expect;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"type":"object","properties":{"a":{"type":"string","format":"email"}}})",
            "'format' at /properties/a/format"},
           {R"({"type":"integer","minimum":3})", "'minimum' at /minimum"},
           {R"({"oneOf":[{"type":"string"}]})", "'oneOf' at /oneOf"},
           {R"({"type":"array","items":{"not":{}}})", "'not' at /items/not"},
           {R"({"type":"objekt"})", "'type' must be one of"},
           {R"({"$ref":"#/$defs/missing"})", "points nowhere"},
           {R"({"$ref":"http://x/y"})", "not a local reference"},
           {R"({"type":"object","required":["a"]})", "required property 'a'"},
           {R"({"type":"string","maxLength":1000000})", "'maxLength' = 1000000"},
           {R"({"type":"array","minItems":3,"maxItems":2})", "maxItems 2 < minItems 3"},
           {R"(false)", "accepts no document"},
           {R"j({"type":"string","pattern":"(?=x)"})j", "at /pattern"},
           {R"({"properties":{"a/b":{"type":"string","x-y":1}}})", "at /properties/a~1b/x-y"},
       }) {
    try {
      compile_json_schema(json::parse(c.schema));
      ADD_FAILURE() << "no error for " << c.schema;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << c.schema << " -> " << e.what();
    }
  }
}

TEST(JsonSchema, CorpusAgreesWithAjv) {
  std::ifstream f(kSrc + "/tests/grammar/corpus.json");
  ASSERT_TRUE(f) << "tests/grammar/corpus.json (tools/grammar_corpus.py writes it)";
  json cases = json::parse(f);
  auto verdicts = ajv_verdicts(cases, "corpus");
  ASSERT_EQ(verdicts.size(), cases.size());
  int n_valid = 0, n_invalid = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    auto g = compile_json_schema(c["schema"]);
    for (size_t j = 0; j < c["docs"].size(); ++j) {
      std::string doc = c["docs"][j];
      bool ajv = verdicts[i][j], shaped = c["shaped"][j], ours = g->accepts(doc);
      // Sound: never accept what ajv rejects. Complete on the grammar's own shape.
      if (ours) {
        EXPECT_TRUE(ajv) << c["name"] << ": grammar accepts a document ajv rejects: " << doc;
      }
      if (ajv && shaped) {
        EXPECT_TRUE(ours) << c["name"] << ": grammar rejects a valid document: " << doc;
      }
      (ajv ? n_valid : n_invalid)++;
    }
  }
  EXPECT_GT(n_valid, 30);
  EXPECT_GT(n_invalid, 30);
}

TEST(JsonSchema, WhitespaceIsBounded) {
  auto g = json_object_grammar();
  EXPECT_TRUE(g->accepts(R"({"a": [1, 2], "b":{}})"));
  EXPECT_FALSE(g->accepts(R"({"a":  1})"));  // two spaces
  EXPECT_FALSE(g->accepts(R"({"a":1}\n)"));
  EXPECT_FALSE(g->accepts(R"( {"a":1})"));
  EXPECT_FALSE(g->accepts("[1]"));
}

// ---- token masks ----

const Tokenizer& demo_tokenizer() {
  static std::unique_ptr<Tokenizer> tok = Tokenizer::load(kSrc + "/models/brown-kimi");
  return *tok;
}

// Brute force: token t is allowed iff prefix + bytes(t) is a prefix of some sentence.
bool viable(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  Matcher m(g);
  Matcher::State s = m.initial(), next;
  for (char c : text) {
    m.step(s, uint8_t(c), next);
    if (next.empty()) return false;
    s.swap(next);
  }
  return true;
}

TEST(TokenConstraint, MaskEqualsBruteForceOnDemoVocabulary) {
  const Tokenizer& tok = demo_tokenizer();
  auto vocab = Vocabulary::from_tokenizer(tok);
  auto g = compile_json_schema(json::parse(
      R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},"n":{"type":"integer"},
          "ok":{"type":"boolean"}},"required":["name","n"],"additionalProperties":false})"));
  TokenConstraint tc(g, vocab);
  std::mt19937 rng(7);
  std::string text;
  int n_steps = 0, n_multi_symbol = 0;
  while (!tc.finished() && n_steps < 12) {
    const auto& bits = tc.allowed();
    std::vector<int32_t> allowed;
    for (int32_t id = 0; id < vocab->size(); ++id) {
      bool ours = (bits[size_t(id) >> 6] >> (id & 63)) & 1;
      auto stops = tok.stop_ids();
      bool is_stop = std::find(stops.begin(), stops.end(), id) != stops.end();
      bool expect = is_stop ? g->accepts(text) : !tok.is_special(id) && viable(g, text + tok.token_text(id));
      ASSERT_EQ(ours, expect) << "token " << id << " \"" << tok.token_text(id) << "\" after \"" << text
                              << "\"";
      if (ours) allowed.push_back(id);
    }
    ASSERT_FALSE(allowed.empty()) << text;
    int32_t pick = allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(rng)];
    if (tok.token_text(pick).size() > 1) ++n_multi_symbol;
    ASSERT_TRUE(tc.accept(pick));
    if (!tc.finished()) text += tok.token_text(pick);
    ++n_steps;
  }
  EXPECT_GT(n_multi_symbol, 0);
}

// The tokens allowed now, as a string of 0/1 by id.
std::string allowed_bits(TokenConstraint& tc) {
  std::string s;
  for (int32_t id = 0; id < int32_t(tc.vocab().size()); ++id) s += tc.is_allowed(id) ? '1' : '0';
  return s;
}

TEST(TokenConstraint, StopOnlyWhenCompleteAndSpecialsNever) {
  // A synthetic vocabulary: tokens that span several grammar symbols and one special.
  std::vector<std::string> bytes = {"{\"", "a", "\":", "1", "}", "1}", "\"", "<|x|>", "", "{"};
  std::vector<bool> special = {false, false, false, false, false, false, false, true, true, false};
  auto vocab = std::make_shared<Vocabulary>(bytes, special, std::vector<int32_t>{8});
  auto g = compile_json_schema(
      json::parse(R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]})"));
  TokenConstraint tc(g, vocab);
  auto allowed = [&] { return allowed_bits(tc); };
  EXPECT_EQ(allowed(), "1000000001");
  EXPECT_FALSE(tc.accept(8));  // stop before the document is complete
  EXPECT_FALSE(tc.accept(7));
  ASSERT_TRUE(tc.accept(0));  // {"
  EXPECT_EQ(allowed(), "0100000000");
  ASSERT_TRUE(tc.accept(1));
  ASSERT_TRUE(tc.accept(2));
  EXPECT_EQ(allowed(), "0001010000");  // 1 or 1} (a token that ends the document)
  ASSERT_TRUE(tc.accept(5));
  EXPECT_TRUE(tc.complete());
  EXPECT_EQ(allowed(), "0000000010");
  std::vector<float> logits(12, 1.0f);
  tc.mask(logits);
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_EQ(std::isinf(logits[i]), i != 8) << i;
  ASSERT_TRUE(tc.accept(8));
  EXPECT_TRUE(tc.finished());
  EXPECT_EQ(allowed(), "0000000000");
}

TEST(TokenConstraint, SpecialTokensWhereTheGrammarNamesThem) {
  // Specials 3 and 4 have texts that are also byte sequences of ordinary tokens: the grammar
  // names special 3 by id, so only the id matches there, never the text.
  std::vector<std::string> bytes = {"a", "<|s|>", "b", "<|s|>", "<|t|>", ""};
  std::vector<bool> special = {false, false, false, true, true, true};
  auto vocab = std::make_shared<Vocabulary>(bytes, special, std::vector<int32_t>{5});
  auto g = std::make_shared<Grammar>();
  int32_t r = g->new_rule("root");
  g->add_alternative(r, {g->byte('a'), g->special_token(3), g->optional({g->byte('b')})});
  g->set_root(r);
  EXPECT_NE(g->dump().find("<token 3>"), std::string::npos) << g->dump();
  EXPECT_FALSE(g->accepts("a<|s|>b"));  // text never matches a special-token element
  TokenConstraint tc(g, vocab);
  auto allowed = [&] { return allowed_bits(tc); };
  EXPECT_EQ(allowed(), "100000");
  ASSERT_TRUE(tc.accept(0));
  EXPECT_EQ(allowed(), "000100");  // the special by id; not its text (1), not another special
  EXPECT_FALSE(tc.accept(1));
  EXPECT_FALSE(tc.accept(4));
  std::vector<float> logits(6, 0.0f);
  tc.mask(logits);
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_EQ(std::isinf(logits[i]), i != 3) << i;
  ASSERT_TRUE(tc.accept(3));
  EXPECT_TRUE(tc.complete());
  EXPECT_EQ(allowed(), "001001");  // b, or the stop token
  EXPECT_FALSE(tc.accept(3));      // once only
  ASSERT_TRUE(tc.accept(2));
  ASSERT_TRUE(tc.accept(5));
  EXPECT_TRUE(tc.finished());
}

TEST(TokenConstraint, TokensLongerThanTheScratchDepth) {
  // 100- and 300-byte tokens: the trie walk grows its per-level scratch states.
  std::vector<std::string> bytes = {std::string(100, ' '), std::string(300, ' '), " ", "x",
                                    std::string(99, ' ') + "y"};
  auto vocab =
      std::make_shared<Vocabulary>(bytes, std::vector<bool>(bytes.size(), false), std::vector<int32_t>{});
  TokenConstraint tc(compile_regex(" {0,250}x"), vocab);
  EXPECT_TRUE(tc.is_allowed(0));
  EXPECT_FALSE(tc.is_allowed(1));  // 300 spaces > 250
  EXPECT_FALSE(tc.is_allowed(4));
  ASSERT_TRUE(tc.accept(0));
  ASSERT_TRUE(tc.accept(2));
  EXPECT_TRUE(tc.is_allowed(0));  // 101 + 100 <= 250
  ASSERT_TRUE(tc.accept(0));
  EXPECT_FALSE(tc.is_allowed(0));  // 201 + 100 > 250
  EXPECT_TRUE(tc.is_allowed(3));
}

// Sample with the mask from random logits (temperature 1) until a stop token.
std::string random_decode(TokenConstraint& tc, const Tokenizer& tok, std::mt19937& rng, int max_steps) {
  std::normal_distribution<float> noise(0.0f, 2.0f);
  std::vector<float> logits(size_t(tok.vocab_size()));
  std::string text;
  for (int step = 0; step < max_steps && !tc.finished(); ++step) {
    for (float& l : logits) l = noise(rng);
    tc.mask(logits);
    float mx = *std::max_element(logits.begin(), logits.end());
    std::vector<double> w(logits.size());
    for (size_t i = 0; i < w.size(); ++i)
      w[i] = std::isinf(logits[i]) ? 0.0 : std::exp(double(logits[i] - mx));
    int32_t id = int32_t(std::discrete_distribution<size_t>(w.begin(), w.end())(rng));
    EXPECT_TRUE(tc.accept(id));
    if (!tc.finished()) text += tok.token_text(id);
  }
  return text;
}

TEST(TokenConstraint, RandomDecodingOnDemoVocabularyValidatesWithAjv) {
  const Tokenizer& tok = demo_tokenizer();
  auto vocab = Vocabulary::from_tokenizer(tok);
  const std::vector<std::string> schemas = {
      R"({"type":"object","properties":{"name":{"type":"string","maxLength":5},"age":{"type":"integer"},
          "tags":{"type":"array","items":{"enum":["x","yy",3]},"maxItems":3}},"required":["name","age"]})",
      R"({"$defs":{"p":{"type":"object","properties":{"x":{"type":"number"},"ok":{"type":["boolean","null"]}},
          "required":["x"]}},"anyOf":[{"$ref":"#/$defs/p"},{"type":"array","items":{"$ref":"#/$defs/p"},"minItems":1,"maxItems":2}]})",
      R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{2}\\d$"},"s":{"type":"string","minLength":2,"maxLength":3}},
          "required":["code","s"],"additionalProperties":false})",
  };
  std::mt19937 rng(2026);
  json cases = json::array();
  int n_docs = 0;
  for (const auto& s : schemas) {
    json schema = json::parse(s);
    auto g = compile_json_schema(schema);
    json docs = json::array();
    for (int i = 0; i < 8; ++i) {
      TokenConstraint tc(g, vocab);
      std::string doc = random_decode(tc, tok, rng, 400);
      ASSERT_TRUE(tc.finished()) << "no stop within 400 tokens: " << doc;
      ASSERT_TRUE(json::accept(doc)) << doc;
      docs.push_back(doc);
      ++n_docs;
    }
    cases.push_back({{"schema", schema}, {"docs", docs}});
  }
  auto verdicts = ajv_verdicts(cases, "decode");
  ASSERT_EQ(verdicts.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i)
    for (size_t j = 0; j < verdicts[i].size(); ++j)
      EXPECT_TRUE(verdicts[i][j]) << "ajv rejects " << cases[i]["docs"][j] << " for " << schemas[i];
  EXPECT_EQ(n_docs, 24);
}

}  // namespace
}  // namespace sickle::grammar
