// sickle/grammar/regex_grammar.cpp — regex subset and choice lists to grammars (see regex_grammar.h).
#include "grammar/regex_grammar.h"

#include <fmt/format.h>

#include "base/error.h"
#include "base/utf8.h"

namespace sickle::grammar {
namespace {

// A set of characters: ASCII bytes, every multi-byte character, or listed multi-byte ones.
struct CharSet {
  ByteSet ascii;
  bool any_multibyte = false;
  std::vector<std::string> multibyte;  // UTF-8 of single non-ASCII characters
};

std::string utf8_encode(uint32_t cp) {
  std::string out;
  append_utf8(out, cp);
  return out;
}

class RegexCompiler {
 public:
  RegexCompiler(Grammar& g, std::string_view re, bool json_escape, std::string where)
      : g_(g), re_(re), json_(json_escape), where_(std::move(where)) {}

  // The whole pattern; anchors are reported through anchored_start/end.
  Sequence parse() {
    if (!re_.empty() && re_[0] == '^') {
      anchored_start = true;
      ++pos_;
    }
    Sequence s = alternation(0);
    if (pos_ < re_.size()) bad("unmatched ')'");
    if (top_level_alt_ && (anchored_start || anchored_end))
      bad("'^'/'$' with a top-level '|' (wrap the alternatives in a group)");
    return s;
  }

  // Any character a JSON string may hold (for the unanchored search's .* around a pattern).
  Element any_char() {
    CharSet c;
    c.ascii.set();
    for (int b = 0x80; b < 256; ++b) c.ascii.reset(size_t(b));
    c.any_multibyte = true;
    return element(c);
  }

  bool anchored_start = false, anchored_end = false;

 private:
  [[noreturn]] void bad(const std::string& what) const {
    fail("regex: {} at offset {} of \"{}\"{}", what, pos_, std::string(re_),
         where_.empty() ? "" : " at " + where_);
  }
  bool eof() const { return pos_ >= re_.size(); }
  char peek() const { return re_[pos_]; }

  Sequence alternation(int depth) {
    if (depth > 64) bad("groups nested deeper than 64");
    std::vector<Sequence> branches{concat(depth)};
    while (!eof() && peek() == '|') {
      ++pos_;
      if (depth == 0) top_level_alt_ = true;
      branches.push_back(concat(depth));
    }
    if (branches.size() == 1) return branches[0];
    return {g_.alt("re_alt", std::move(branches))};
  }

  Sequence concat(int depth) {
    Sequence seq;
    while (!eof() && peek() != '|' && peek() != ')') {
      if (peek() == '$') {
        if (pos_ + 1 != re_.size()) bad("'$' is supported only at the end");
        anchored_end = true;
        ++pos_;
        continue;
      }
      Sequence atom_seq = atom(depth);
      Element a = atom_seq.size() == 1 ? atom_seq[0] : g_.alt("re_atom", {atom_seq});
      int64_t min = 1, max = 1;
      if (!eof() && quantifier(min, max)) {
        if (!eof() && peek() == '?') ++pos_;  // lazy: same language
        if (!eof() && (peek() == '*' || peek() == '+' || peek() == '?')) bad("nested quantifier");
        Sequence r = g_.repeat({a}, min, max);
        seq.insert(seq.end(), r.begin(), r.end());
      } else {
        seq.push_back(a);
      }
    }
    return seq;
  }

  bool quantifier(int64_t& min, int64_t& max) {
    char c = peek();
    if (c == '*') {
      ++pos_;
      min = 0;
      max = -1;
      return true;
    }
    if (c == '+') {
      ++pos_;
      min = 1;
      max = -1;
      return true;
    }
    if (c == '?') {
      ++pos_;
      min = 0;
      max = 1;
      return true;
    }
    if (c != '{' || pos_ + 1 >= re_.size() || !isdigit(uint8_t(re_[pos_ + 1]))) return false;
    ++pos_;
    auto number = [&]() -> int64_t {
      int64_t v = 0;
      if (eof() || !isdigit(uint8_t(peek()))) bad("expected a number in {m,n}");
      while (!eof() && isdigit(uint8_t(peek()))) {
        v = v * 10 + (peek() - '0');
        if (v > 100000) bad("repetition count too large");
        ++pos_;
      }
      return v;
    };
    min = number();
    max = min;
    if (!eof() && peek() == ',') {
      ++pos_;
      max = !eof() && peek() == '}' ? -1 : number();
    }
    if (eof() || peek() != '}') bad("expected '}' closing {m,n}");
    ++pos_;
    if (max >= 0 && max < min) bad("{m,n} with n < m");
    return true;
  }

  Sequence atom(int depth) {
    char c = peek();
    if (c == '(') {
      ++pos_;
      if (!eof() && peek() == '?') {
        if (pos_ + 1 < re_.size() && re_[pos_ + 1] == ':') pos_ += 2;
        else bad("lookaround and named groups are not supported");
      }
      Sequence inner = alternation(depth + 1);
      if (eof() || peek() != ')') bad("missing ')'");
      ++pos_;
      return {g_.alt("re_group", {inner})};
    }
    if (c == '*' || c == '+' || c == '?') bad("nothing to repeat");
    if (c == '^') bad("'^' is supported only at the start");
    if (c == '[') return {element(char_class())};
    if (c == '.') {
      ++pos_;
      CharSet any;
      any.ascii.set();
      for (int b = 0x80; b < 256; ++b) any.ascii.reset(size_t(b));
      any.ascii.reset('\n').reset('\r');
      any.any_multibyte = true;
      return {element(any)};
    }
    if (c == '\\') return {element(escape(false))};
    return {element(literal_char())};
  }

  // One (possibly multi-byte) literal character from the pattern.
  CharSet literal_char() {
    uint8_t b = uint8_t(peek());
    size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (len == 0 || pos_ + len > re_.size()) bad("invalid UTF-8");
    std::string ch(re_.substr(pos_, len));
    pos_ += len;
    CharSet s;
    if (len == 1) s.ascii.set(b);
    else s.multibyte.push_back(ch);
    return s;
  }

  CharSet escape(bool in_class) {
    ++pos_;
    if (eof()) bad("pattern ends with '\\'");
    char c = peek();
    ++pos_;
    CharSet s;
    auto range = [&](char lo, char hi) {
      for (int b = lo; b <= hi; ++b) s.ascii.set(size_t(b));
    };
    auto complement = [&]() {
      s.ascii.flip();
      for (int b = 0x80; b < 256; ++b) s.ascii.reset(size_t(b));
      s.any_multibyte = true;
    };
    auto hex = [&](int n) {
      uint32_t v = 0;
      for (int i = 0; i < n; ++i) {
        if (eof() || !isxdigit(uint8_t(peek()))) bad("expected hex digits");
        char h = peek();
        v = v * 16 + uint32_t(isdigit(uint8_t(h)) ? h - '0' : (tolower(h) - 'a' + 10));
        ++pos_;
      }
      return v;
    };
    switch (c) {
      case 'd': range('0', '9'); break;
      case 'D':
        range('0', '9');
        complement();
        break;
      case 'w':
        range('a', 'z');
        range('A', 'Z');
        range('0', '9');
        s.ascii.set('_');
        break;
      case 'W':
        range('a', 'z');
        range('A', 'Z');
        range('0', '9');
        s.ascii.set('_');
        complement();
        break;
      // ASCII whitespace only (ECMAScript's \s also has Unicode spaces: a subset, so sound).
      case 's':
        for (char w : std::string(" \t\n\r\f\v")) s.ascii.set(uint8_t(w));
        break;
      case 'S':
        for (char w : std::string(" \t\n\r\f\v")) s.ascii.set(uint8_t(w));
        complement();
        break;
      case 'n': s.ascii.set('\n'); break;
      case 'r': s.ascii.set('\r'); break;
      case 't': s.ascii.set('\t'); break;
      case 'f': s.ascii.set('\f'); break;
      case 'v': s.ascii.set('\v'); break;
      case '0': s.ascii.set(0); break;
      case 'x': s.ascii.set(hex(2)); break;  // \xHH is U+00HH
      case 'u': {
        uint32_t cp = hex(4);
        if (cp >= 0xD800 && cp <= 0xDFFF) bad("\\u surrogates are not supported");
        if (cp < 0x80) s.ascii.set(cp);
        else s.multibyte.push_back(utf8_encode(cp));
        break;
      }
      case 'b':
        if (!in_class) bad("'\\b' (word boundary) is not supported");
        s.ascii.set('\b');
        break;
      default:
        if (isalnum(uint8_t(c))) bad(fmt::format("'\\{}' is not supported", c));
        s.ascii.set(uint8_t(c));  // escaped punctuation
    }
    if (c == 'x' && s.ascii.count() == 1) {
      // \x80-\xFF name code points, not bytes
      for (int b = 0x80; b < 256; ++b)
        if (s.ascii[size_t(b)]) {
          s.ascii.reset(size_t(b));
          s.multibyte.push_back(utf8_encode(uint32_t(b)));
        }
    }
    return s;
  }

  CharSet char_class() {
    ++pos_;  // '['
    bool negate = !eof() && peek() == '^';
    if (negate) ++pos_;
    CharSet s;
    bool first = true;
    while (true) {
      if (eof()) bad("missing ']'");
      if (peek() == ']' && !first) break;
      if (peek() == ']') bad("empty class '[]'");
      first = false;
      CharSet lo = peek() == '\\' ? escape(true) : literal_char();
      bool is_single = lo.ascii.count() + lo.multibyte.size() == 1 && !lo.any_multibyte;
      if (is_single && !eof() && peek() == '-' && pos_ + 1 < re_.size() && re_[pos_ + 1] != ']') {
        ++pos_;
        CharSet hi = peek() == '\\' ? escape(true) : literal_char();
        if (!lo.multibyte.empty() || !hi.multibyte.empty() || hi.ascii.count() != 1 || hi.any_multibyte)
          bad("class ranges are supported between ASCII characters only");
        int a = -1, b = -1;
        for (int i = 0; i < 128; ++i) {
          if (lo.ascii[size_t(i)]) a = i;
          if (hi.ascii[size_t(i)]) b = i;
        }
        if (b < a) bad("class range out of order");
        for (int i = a; i <= b; ++i) s.ascii.set(size_t(i));
        continue;
      }
      s.ascii |= lo.ascii;
      s.any_multibyte = s.any_multibyte || lo.any_multibyte;
      s.multibyte.insert(s.multibyte.end(), lo.multibyte.begin(), lo.multibyte.end());
    }
    ++pos_;  // ']'
    if (negate) {
      if (!s.multibyte.empty()) bad("negated classes with non-ASCII characters are not supported");
      s.ascii.flip();
      for (int b = 0x80; b < 256; ++b) s.ascii.reset(size_t(b));
      s.any_multibyte = !s.any_multibyte;
    }
    return s;
  }

  // The element matching one character of `c`, as raw bytes or (json_) as JSON string text.
  Element element(CharSet c) {
    std::vector<Sequence> alts;
    if (json_) {
      static const std::pair<char, char> kEscapes[] = {{'"', '"'},  {'\\', '\\'}, {'\n', 'n'}, {'\r', 'r'},
                                                       {'\t', 't'}, {'\b', 'b'},  {'\f', 'f'}};
      for (auto [raw, esc] : kEscapes)
        if (c.ascii[uint8_t(raw)]) alts.push_back({g_.byte('\\'), g_.byte(uint8_t(esc))});
      c.ascii.reset('"').reset('\\');
      for (int b = 0; b < 0x20; ++b) c.ascii.reset(size_t(b));  // other controls: left out
    }
    if (c.ascii.any()) alts.push_back({g_.bytes(c.ascii)});
    if (c.any_multibyte) alts.push_back({g_.utf8_multibyte()});
    else
      for (const std::string& m : c.multibyte) alts.push_back(Grammar::literal_seq(m, g_));
    if (alts.empty()) bad("a character class that matches nothing");
    if (alts.size() == 1 && alts[0].size() == 1) return alts[0][0];
    return g_.alt("re_char", std::move(alts));
  }

  Grammar& g_;
  std::string_view re_;
  bool json_;
  std::string where_;
  size_t pos_ = 0;
  bool top_level_alt_ = false;
};

}  // namespace

std::shared_ptr<const Grammar> compile_regex(std::string_view pattern) {
  auto g = std::make_shared<Grammar>();
  RegexCompiler c(*g, pattern, /*json_escape=*/false, "");
  Sequence body = c.parse();
  int32_t root = g->new_rule("root");
  g->add_alternative(root, body);
  g->set_root(root);
  return g;
}

std::shared_ptr<const Grammar> compile_choice(const std::vector<std::string>& choices) {
  if (choices.empty()) fail("guided_choice: the list of choices is empty");
  auto g = std::make_shared<Grammar>();
  int32_t root = g->new_rule("root");
  for (const std::string& c : choices) g->add_alternative(root, Grammar::literal_seq(c, *g));
  g->set_root(root);
  return g;
}

Element regex_json_string_content(Grammar& g, std::string_view pattern, const std::string& where) {
  RegexCompiler c(g, pattern, /*json_escape=*/true, where);
  Sequence body = c.parse();
  Sequence seq;
  if (!c.anchored_start) seq.push_back(g.star({c.any_char()}));
  seq.push_back(body.size() == 1 ? body[0] : g.alt("pattern", {body}));
  if (!c.anchored_end) seq.push_back(g.star({c.any_char()}));
  return g.alt("pattern", {seq});
}

}  // namespace sickle::grammar
