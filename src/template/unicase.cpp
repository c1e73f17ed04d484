// sickle/template/unicase.cpp — Python str case mapping over UTF-8 (see unicase.h).
#include "template/unicase.h"

#include <locale.h>
#include <wctype.h>

#include <cstdint>
#include <vector>

#include "base/log.h"
#include "template/value.h"

namespace sickle::tmpl {
namespace {

// A decoded code point, or (negative) a byte that is not part of valid UTF-8: -1 - byte.
using Cp = int32_t;

std::vector<Cp> decode(std::string_view s) {
  std::vector<Cp> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : (c >> 4) == 0xE ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
    bool ok = n > 0 && i + size_t(n) <= s.size();
    for (int k = 1; ok && k < n; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + size_t(k)]);
      ok = (d & 0xC0) == 0x80;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    // no overlong forms, surrogates or code points past U+10FFFF
    if (ok && ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
               (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
      ok = false;
    if (!ok) {
      out.push_back(-1 - Cp(c));
      ++i;
      continue;
    }
    out.push_back(Cp(cp));
    i += size_t(n);
  }
  return out;
}

void encode(Cp c, std::string& out) {
  if (c < 0) out += char(-1 - c);  // a byte that was not valid UTF-8, as it came
  else append_utf8(out, uint32_t(c));
}

locale_t utf8_locale() {
  static locale_t loc = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", locale_t(0));
    if (!l) log_warn("no C.UTF-8 locale (newlocale failed); template upper/lower/title map ASCII only");
    return l;
  }();
  return loc;
}

Cp simple_upper(Cp c) {
  if (c < 0) return c;
  if (locale_t l = utf8_locale()) return Cp(towupper_l(wint_t(c), l));
  return c >= 'a' && c <= 'z' ? c - 32 : c;
}

Cp simple_lower(Cp c) {
  if (c < 0) return c;
  if (locale_t l = utf8_locale()) return Cp(towlower_l(wint_t(c), l));
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

bool is_titlecase(Cp c) {
  return c == 0x1C5 || c == 0x1C8 || c == 0x1CB || c == 0x1F2 || (c >= 0x1F88 && c <= 0x1F8F) ||
         (c >= 0x1F98 && c <= 0x1F9F) || (c >= 0x1FA8 && c <= 0x1FAF) || c == 0x1FBC || c == 0x1FCC ||
         c == 0x1FFC;
}

// Unicode Other_Lowercase / Other_Uppercase letters without a case mapping (Python counts them).
bool other_lower(Cp c) {
  return c == 0xAA || c == 0xBA || (c >= 0x2B0 && c <= 0x2B8) || c == 0x2C0 || c == 0x2C1 ||
         (c >= 0x2E0 && c <= 0x2E4) || c == 0x37A || (c >= 0x1D2C && c <= 0x1D6A) || c == 0x1D78 ||
         (c >= 0x1D9B && c <= 0x1DBF) || c == 0x2071 || c == 0x207F || (c >= 0x2090 && c <= 0x209C) ||
         (c >= 0xA69C && c <= 0xA69D) || c == 0xA770 || (c >= 0xA7F8 && c <= 0xA7F9) ||
         (c >= 0xAB5C && c <= 0xAB5F);
}

bool other_upper(Cp c) {
  return (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

bool is_lower(Cp c) {
  if (c < 0) return false;
  if (locale_t l = utf8_locale()) return (iswlower_l(wint_t(c), l) && !is_titlecase(c)) || other_lower(c);
  return c >= 'a' && c <= 'z';
}

bool is_upper(Cp c) {
  if (c < 0) return false;
  if (locale_t l = utf8_locale()) return (iswupper_l(wint_t(c), l) && !is_titlecase(c)) || other_upper(c);
  return c >= 'A' && c <= 'Z';
}

// Python's _PyUnicode_IsCased: Lowercase, Uppercase or Lt.
bool is_cased(Cp c) {
  if (c < 0) return false;
  if (utf8_locale() == locale_t(0)) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return is_lower(c) || is_upper(c) || is_titlecase(c) || simple_upper(c) != c || simple_lower(c) != c;
}

// Case_Ignorable: Mn, Me, Cf, Lm, Sk and Word_Break MidLetter / MidNumLet / Single_Quote (the
// common blocks; used by the Final_Sigma rule).
bool is_case_ignorable(Cp c) {
  return c == '\'' || c == '.' || c == ':' || c == '^' || c == '`' || c == 0xA8 || c == 0xAD || c == 0xAF ||
         c == 0xB4 || c == 0xB7 || c == 0xB8 || (c >= 0x2B0 && c <= 0x36F) || c == 0x374 || c == 0x375 ||
         c == 0x37A || c == 0x384 || c == 0x385 || c == 0x387 || (c >= 0x483 && c <= 0x489) || c == 0x559 ||
         c == 0x55F || (c >= 0x591 && c <= 0x5BD) || c == 0x5F4 || (c >= 0x1AB0 && c <= 0x1AFF) ||
         (c >= 0x1D2C && c <= 0x1D6A) || c == 0x1D78 || (c >= 0x1D9B && c <= 0x1DFF) || c == 0x1FBD ||
         (c >= 0x1FBF && c <= 0x1FC1) || (c >= 0x1FCD && c <= 0x1FCF) || (c >= 0x1FDD && c <= 0x1FDF) ||
         (c >= 0x1FED && c <= 0x1FEF) || c == 0x1FFD || c == 0x1FFE || (c >= 0x200B && c <= 0x200F) ||
         c == 0x2018 || c == 0x2019 || c == 0x2024 || c == 0x2027 || (c >= 0x202A && c <= 0x202E) ||
         (c >= 0x2060 && c <= 0x2064) || (c >= 0x2066 && c <= 0x206F) || c == 0x2071 || c == 0x207F ||
         (c >= 0x2090 && c <= 0x209C) || (c >= 0x20D0 && c <= 0x20F0) || (c >= 0xFE00 && c <= 0xFE0F) ||
         c == 0xFE13 || (c >= 0xFE20 && c <= 0xFE2F) || c == 0xFE52 || c == 0xFE55 || c == 0xFEFF ||
         c == 0xFF07 || c == 0xFF0E || c == 0xFF1A || c == 0xFF3E || c == 0xFF40 || c == 0xFF70 ||
         c == 0xFF9E || c == 0xFF9F || c == 0xFFE3 || (c >= 0x10780 && c <= 0x107BA) ||
         (c >= 0x1F3FB && c <= 0x1F3FF) || c == 0xE0001 || (c >= 0xE0020 && c <= 0xE007F) ||
         (c >= 0xE0100 && c <= 0xE01EF);
}

struct Special {
  Cp c;
  Cp upper[3];
  Cp title[3];
};

// SpecialCasing.txt, unconditional mappings whose upper or title form is not one code point
// (besides U+1F80..U+1FAF, see put_upper).
constexpr Special kSpecials[] = {
    {0x00DF, {'S', 'S'}, {'S', 's'}},
    {0x0149, {0x02BC, 'N'}, {0x02BC, 'N'}},
    {0x01F0, {'J', 0x030C}, {'J', 0x030C}},
    {0x0390, {0x0399, 0x0308, 0x0301}, {0x0399, 0x0308, 0x0301}},
    {0x03B0, {0x03A5, 0x0308, 0x0301}, {0x03A5, 0x0308, 0x0301}},
    {0x0587, {0x0535, 0x0552}, {0x0535, 0x0582}},
    {0x1E96, {'H', 0x0331}, {'H', 0x0331}},
    {0x1E97, {'T', 0x0308}, {'T', 0x0308}},
    {0x1E98, {'W', 0x030A}, {'W', 0x030A}},
    {0x1E99, {'Y', 0x030A}, {'Y', 0x030A}},
    {0x1E9A, {'A', 0x02BE}, {'A', 0x02BE}},
    {0x1F50, {0x03A5, 0x0313}, {0x03A5, 0x0313}},
    {0x1F52, {0x03A5, 0x0313, 0x0300}, {0x03A5, 0x0313, 0x0300}},
    {0x1F54, {0x03A5, 0x0313, 0x0301}, {0x03A5, 0x0313, 0x0301}},
    {0x1F56, {0x03A5, 0x0313, 0x0342}, {0x03A5, 0x0313, 0x0342}},
    {0x1FB2, {0x1FBA, 0x0399}, {0x1FBA, 0x0345}},
    {0x1FB3, {0x0391, 0x0399}, {0x1FBC}},
    {0x1FB4, {0x0386, 0x0399}, {0x0386, 0x0345}},
    {0x1FB6, {0x0391, 0x0342}, {0x0391, 0x0342}},
    {0x1FB7, {0x0391, 0x0342, 0x0399}, {0x0391, 0x0342, 0x0345}},
    {0x1FBC, {0x0391, 0x0399}, {0x1FBC}},
    {0x1FC2, {0x1FCA, 0x0399}, {0x1FCA, 0x0345}},
    {0x1FC3, {0x0397, 0x0399}, {0x1FCC}},
    {0x1FC4, {0x0389, 0x0399}, {0x0389, 0x0345}},
    {0x1FC6, {0x0397, 0x0342}, {0x0397, 0x0342}},
    {0x1FC7, {0x0397, 0x0342, 0x0399}, {0x0397, 0x0342, 0x0345}},
    {0x1FCC, {0x0397, 0x0399}, {0x1FCC}},
    {0x1FD2, {0x0399, 0x0308, 0x0300}, {0x0399, 0x0308, 0x0300}},
    {0x1FD3, {0x0399, 0x0308, 0x0301}, {0x0399, 0x0308, 0x0301}},
    {0x1FD6, {0x0399, 0x0342}, {0x0399, 0x0342}},
    {0x1FD7, {0x0399, 0x0308, 0x0342}, {0x0399, 0x0308, 0x0342}},
    {0x1FE2, {0x03A5, 0x0308, 0x0300}, {0x03A5, 0x0308, 0x0300}},
    {0x1FE3, {0x03A5, 0x0308, 0x0301}, {0x03A5, 0x0308, 0x0301}},
    {0x1FE4, {0x03A1, 0x0313}, {0x03A1, 0x0313}},
    {0x1FE6, {0x03A5, 0x0342}, {0x03A5, 0x0342}},
    {0x1FE7, {0x03A5, 0x0308, 0x0342}, {0x03A5, 0x0308, 0x0342}},
    {0x1FF2, {0x1FFA, 0x0399}, {0x1FFA, 0x0345}},
    {0x1FF3, {0x03A9, 0x0399}, {0x1FFC}},
    {0x1FF4, {0x038F, 0x0399}, {0x038F, 0x0345}},
    {0x1FF6, {0x03A9, 0x0342}, {0x03A9, 0x0342}},
    {0x1FF7, {0x03A9, 0x0342, 0x0399}, {0x03A9, 0x0342, 0x0345}},
    {0x1FFC, {0x03A9, 0x0399}, {0x1FFC}},
    {0xFB00, {'F', 'F'}, {'F', 'f'}},
    {0xFB01, {'F', 'I'}, {'F', 'i'}},
    {0xFB02, {'F', 'L'}, {'F', 'l'}},
    {0xFB03, {'F', 'F', 'I'}, {'F', 'f', 'i'}},
    {0xFB04, {'F', 'F', 'L'}, {'F', 'f', 'l'}},
    {0xFB05, {'S', 'T'}, {'S', 't'}},
    {0xFB06, {'S', 'T'}, {'S', 't'}},
    {0xFB13, {0x0544, 0x0546}, {0x0544, 0x0576}},
    {0xFB14, {0x0544, 0x0535}, {0x0544, 0x0565}},
    {0xFB15, {0x0544, 0x053B}, {0x0544, 0x056B}},
    {0xFB16, {0x054E, 0x0546}, {0x054E, 0x0576}},
    {0xFB17, {0x0544, 0x053D}, {0x0544, 0x056D}},
};

const Special* special(Cp c) {
  if (c < 0xDF) return nullptr;
  for (const Special& s : kSpecials)
    if (s.c == c) return &s;
  return nullptr;
}

void put_all(const Cp (&cps)[3], std::string& out) {
  for (Cp c : cps)
    if (c) encode(c, out);
}

// Greek letters with ypogegrammeni / prosgegrammeni U+1F80..U+1FAF: upper is the letter and
// capital iota, titlecase the prosgegrammeni form U+1F88.. (c | 8).
bool greek_iota(Cp c) { return c >= 0x1F80 && c <= 0x1FAF; }

void put_upper(Cp c, std::string& out) {
  if (const Special* s = special(c)) return put_all(s->upper, out);
  if (greek_iota(c)) {
    static constexpr Cp kBase[] = {0x1F08, 0x1F28, 0x1F68};
    encode(kBase[(c - 0x1F80) >> 4] + (c & 7), out);
    return encode(0x399, out);
  }
  encode(simple_upper(c), out);
}

// Titlecase (full): the DŽ / LJ / NJ / DZ digraphs have their own titlecase letter; Georgian
// Mkhedruli uppercases to Mtavruli but titlecases to itself.
void put_title(Cp c, std::string& out) {
  if (const Special* s = special(c)) return put_all(s->title, out);
  if ((c >= 0x10D0 && c <= 0x10FA) || (c >= 0x10FD && c <= 0x10FF)) return encode(c, out);
  if (greek_iota(c)) return encode(c | 8, out);
  if (c >= 0x1C4 && c <= 0x1CC) return encode(0x1C5 + (c - 0x1C4) / 3 * 3, out);
  if (c >= 0x1F1 && c <= 0x1F3) return encode(0x1F2, out);
  if (is_titlecase(c)) return encode(c, out);
  encode(simple_upper(c), out);
}

// str.lower() of cps[i], the Final_Sigma context taken within cps[begin, end).
void put_lower(const std::vector<Cp>& cps, size_t begin, size_t end, size_t i, std::string& out) {
  Cp c = cps[i];
  if (c == 0x130) {
    encode('i', out);
    return encode(0x307, out);
  }
  if (c == 0x3A3) {
    size_t j = i;
    while (j > begin && is_case_ignorable(cps[j - 1])) --j;
    bool final_sigma = j > begin && is_cased(cps[j - 1]);
    if (final_sigma) {
      size_t k = i + 1;
      while (k < end && is_case_ignorable(cps[k])) ++k;
      final_sigma = k == end || !is_cased(cps[k]);
    }
    return encode(final_sigma ? 0x3C2 : 0x3C3, out);
  }
  encode(simple_lower(c), out);
}

bool jinja_word_separator(Cp c) {
  return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || c == ' ' || (c >= 0x09 && c <= 0x0D) ||
         (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace

std::string py_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (Cp c : decode(s)) put_upper(c, out);
  return out;
}

std::string py_lower(std::string_view s) {
  auto cps = decode(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < cps.size(); ++i) put_lower(cps, 0, cps.size(), i, out);
  return out;
}

std::string py_title(std::string_view s) {
  auto cps = decode(s);
  std::string out;
  out.reserve(s.size());
  bool prev_cased = false;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (prev_cased) put_lower(cps, 0, cps.size(), i, out);
    else put_title(cps[i], out);
    prev_cased = is_cased(cps[i]);
  }
  return out;
}

std::string py_capitalize(std::string_view s) {
  auto cps = decode(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    if (i == 0) put_title(cps[i], out);
    else put_lower(cps, 0, cps.size(), i, out);
  }
  return out;
}

bool py_islower(std::string_view s) {
  bool cased = false;
  for (Cp c : decode(s)) {
    if (is_upper(c) || is_titlecase(c)) return false;
    if (is_lower(c)) cased = true;
  }
  return cased;
}

bool py_isupper(std::string_view s) {
  bool cased = false;
  for (Cp c : decode(s)) {
    if (is_lower(c) || is_titlecase(c)) return false;
    if (is_upper(c)) cased = true;
  }
  return cased;
}

std::string jinja_title(std::string_view s) {
  auto cps = decode(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < cps.size();) {
    if (jinja_word_separator(cps[i])) {
      encode(cps[i++], out);
      continue;
    }
    size_t end = i + 1;
    while (end < cps.size() && !jinja_word_separator(cps[end])) ++end;
    put_upper(cps[i], out);  // item[0].upper() + item[1:].lower()
    for (size_t k = i + 1; k < end; ++k) put_lower(cps, i + 1, end, k, out);
    i = end;
  }
  return out;
}

}  // namespace sickle::tmpl
