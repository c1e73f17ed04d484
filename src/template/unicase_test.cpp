// Case mapping helpers (unicase.h). Expected strings are CPython 3.11's str methods and
// python3-jinja2 3.1's `title` filter on the same input (Debian 12's /usr/bin/python3), pasted
// here as goldens; tests/template_oracle_test.sh checks the same engine end to end.
#include "template/unicase.h"

#include <gtest/gtest.h>

namespace sickle::tmpl {
namespace {

TEST(Unicase, FullUpperMappingsGrowTheString) {
  EXPECT_EQ(py_upper("straße"), "STRASSE");
  EXPECT_EQ(py_upper("ǆemal ﬁne ß"), "ǄEMAL FINE SS");
  EXPECT_EQ(py_upper("ᾳ ᾀ"), "ΑΙ ἈΙ");
  EXPECT_EQ(py_upper("привет, école 你好 🙂"), "ПРИВЕТ, ÉCOLE 你好 🙂");
  EXPECT_EQ(py_upper("🅰b 1st"), "🅰B 1ST");
}

TEST(Unicase, LowerDottedCapitalIAndFinalSigma) {
  EXPECT_EQ(py_lower("İstanbul"), "i\xcc\x87stanbul");  // i + U+0307
  EXPECT_EQ(py_lower("ΟΔΟΣ ΟΔΟΣ."), "οδος οδος.");
  EXPECT_EQ(py_lower("ΣΑΣ"), "σας");
  EXPECT_EQ(py_lower("Σ"), "σ");  // no cased letter before: not final
  EXPECT_EQ(py_lower("ΣΣ"), "σς");
  EXPECT_EQ(py_lower("ΌΣΟΣ'"), "όσος'");  // the apostrophe is case-ignorable
  EXPECT_EQ(py_lower("ÀÖØ Ǆ"), "àöø ǆ");
}

TEST(Unicase, TitleUsesCasedRunsAndTitlecaseLetters) {
  EXPECT_EQ(py_title("they're bill's friends-from the UK"), "They'Re Bill'S Friends-From The Uk");
  EXPECT_EQ(py_title("ǆemal ﬁne ß"), "ǅemal Fine Ss");
  EXPECT_EQ(py_title("ᾳ ᾀ"), "ᾼ ᾈ");
  EXPECT_EQ(py_title("ΣΣ"), "Σς");
  EXPECT_EQ(py_title("🅰b 1st"), "🅰b 1St");  // 🅰 is Other_Uppercase: cased
  EXPECT_EQ(py_title("hello\u00a0wORLD(x)"), "Hello\u00a0World(X)");
}

TEST(Unicase, JinjaTitleFilterIsNotStrTitle) {
  EXPECT_EQ(jinja_title("they're bill's friends-from the UK"), "They're Bill's Friends-From The Uk");
  EXPECT_EQ(jinja_title("ǆemal ﬁne ß"), "Ǆemal FIne SS");  // item[0].upper(), not titlecase
  EXPECT_EQ(jinja_title("ΣΣ"), "Σσ");  // item[1:] is lowered on its own: the sigma is not final
  EXPECT_EQ(jinja_title("hello\u00a0wORLD(x)"), "Hello\u00a0World(X)");
  EXPECT_EQ(jinja_title("  (in [the] {SOME} <place>)"), "  (In [The] {Some} <Place>)");
  EXPECT_EQ(jinja_title("🅰b 1st"), "🅰b 1st");
}

TEST(Unicase, CapitalizeTitlecasesTheFirstCharacterOnly) {
  EXPECT_EQ(py_capitalize("ǆemal ﬁne ß"), "ǅemal ﬁne ß");
  EXPECT_EQ(py_capitalize("ΟΔΟΣ ΟΔΟΣ."), "Οδος οδος.");
  EXPECT_EQ(py_capitalize("ᾳ ᾀ"), "ᾼ ᾀ");
  EXPECT_EQ(py_capitalize("ΣΣ"), "Σς");
  EXPECT_EQ(py_capitalize("ß"), "Ss");
  EXPECT_EQ(py_capitalize(""), "");
}

TEST(Unicase, IsLowerIsUpperNeedACasedCharacter) {
  EXPECT_TRUE(py_islower("straße"));
  EXPECT_FALSE(py_islower("İstanbul"));
  EXPECT_TRUE(py_isupper("ΟΔΟΣ ΟΔΟΣ."));
  EXPECT_FALSE(py_islower("ǅ"));  // titlecase: neither
  EXPECT_FALSE(py_isupper("ǅ"));
  EXPECT_FALSE(py_islower("123 你好"));
  EXPECT_FALSE(py_isupper(""));
  EXPECT_TRUE(py_islower("ᾳ ᾀ"));
}

TEST(Unicase, InvalidUtf8BytesPassThroughUnchanged) {
  const std::string bad =
      "a\xff"
      "b\xc3(\xe2\x82z\xed\xa0\x80\xf4\x90\x80\x80\xc0\xafé";
  EXPECT_EQ(py_upper(bad),
            "A\xff"
            "B\xc3(\xe2\x82Z\xed\xa0\x80\xf4\x90\x80\x80\xc0\xafÉ");
  EXPECT_EQ(py_lower(py_upper(bad)),
            "a\xff"
            "b\xc3(\xe2\x82z\xed\xa0\x80\xf4\x90\x80\x80\xc0\xafé");
  EXPECT_EQ(py_title("\xff"
                     "ab"),
            "\xff"
            "Ab");  // an invalid byte is uncased: the word starts after it
  EXPECT_EQ(jinja_title("\xff"
                        "ab"),
            "\xff"
            "ab");  // but it is part of the piece (item[0] is the byte)
}

TEST(Unicase, AsciiRoundTripsMatchTheCLocale) {
  std::string all;
  for (int c = 1; c < 128; ++c) all += char(c);
  std::string up = all, lo = all;
  for (char& c : up) c = char(std::toupper(static_cast<unsigned char>(c)));
  for (char& c : lo) c = char(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(py_upper(all), up);
  EXPECT_EQ(py_lower(all), lo);
  EXPECT_EQ(py_lower(py_upper(lo)), lo);
}

}  // namespace
}  // namespace sickle::tmpl
