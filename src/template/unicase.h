// sickle/template/unicase.h — Unicode case mapping with Python str semantics (upper, lower,
// title, capitalize, islower, isupper) and jinja2's own `title` filter, over UTF-8 text.
//
// Simple mappings come from glibc (towupper_l / towlower_l in a C.UTF-8 locale); Python's full
// mappings that glibc lacks are added here: SpecialCasing.txt's unconditional entries (ß -> SS,
// İ -> i̇, ŉ, ǰ, ΐ, ﬁ, the Armenian ligatures, Greek with breathing marks and iota subscript),
// titlecase letters (ǅ, ǈ, ǋ, ǲ, ᾈ, ...) and the Final_Sigma rule of str.lower() (ΟΔΟΣ -> οδος).
// "Cased" and "case-ignorable" (for title() and Final_Sigma) use glibc's classes plus the common
// Other_Lowercase / Other_Uppercase / Case_Ignorable blocks, not the whole Unicode tables.
// Bytes that are not valid UTF-8 are copied unchanged and count as uncased. Without a C.UTF-8
// locale the mapping falls back to ASCII, with one warning on stderr.
#pragma once

#include <string>
#include <string_view>

namespace sickle::tmpl {

std::string py_upper(std::string_view s);       // str.upper()
std::string py_lower(std::string_view s);       // str.lower()
std::string py_title(std::string_view s);       // str.title(): cased runs, titlecase first
std::string py_capitalize(std::string_view s);  // str.capitalize() (Python 3.8+)
bool py_islower(std::string_view s);            // str.islower()
bool py_isupper(std::string_view s);            // str.isupper()
// jinja2's `title` filter (do_title): split on ([-\s({[<]+), each piece item[0].upper() +
// item[1:].lower(); not str.title() ("bill's" -> "Bill's", str.title() gives "Bill'S").
std::string jinja_title(std::string_view s);

}  // namespace sickle::tmpl
