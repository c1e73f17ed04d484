// sickle/grammar/regex_grammar.h — a regex subset and choice lists as grammars
// (vLLM's guided_regex / guided_choice, JSON Schema's pattern).
//
// Regex subset (ECMAScript syntax, what JSON Schema's pattern uses): literals, `.` (any
// character but \n), classes [a-z0-9_] and [^...] (ranges between ASCII characters; single
// non-ASCII characters in a non-negated class), escapes \d \D \w \W \s \S \n \r \t \f \v
// \xHH \uHHHH and escaped punctuation, groups (...) and (?:...), alternation |, quantifiers
// * + ? {n} {n,} {n,m} (a lazy `?` after them changes nothing for the language), ^ at the
// start and $ at the end. Refused with an Error naming the construct: backreferences,
// lookaround, \b, named groups, flags, anchors elsewhere.
// Characters: the pattern is UTF-8; `.`, \D, \W, \S and negated classes match any non-ASCII
// character as well (well-formed UTF-8 only).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "grammar/grammar.h"

namespace sickle::grammar {

// Whole-string match of `pattern` (guided_regex).
std::shared_ptr<const Grammar> compile_regex(std::string_view pattern);
// Exactly one of `choices`, as raw text (guided_choice). Error if empty.
std::shared_ptr<const Grammar> compile_choice(const std::vector<std::string>& choices);

// For the JSON Schema compiler: a rule matching the *contents* of a JSON string (between the
// quotes) whose decoded value matches `pattern` as JSON Schema's `pattern` does (a search:
// unanchored unless it starts with ^ / ends with $). Characters that JSON must escape are
// written escaped ("\"", "\\", "\n", ...); other control characters are left out.
// `where` names the schema location for error messages.
Element regex_json_string_content(Grammar& g, std::string_view pattern, const std::string& where);

}  // namespace sickle::grammar
