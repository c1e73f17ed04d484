// sickle/template/value.h — the values a chat template computes with: jinja2's Python objects
// (Undefined, None, bool, int, float, str, list, dict, namespace, callables), and strings that
// remember which of their bytes came from the caller's data.
//
// Span tagging (tokenizer/prompt.h): every byte of a Str carries a tag, value (the caller's
// messages / tools / kwargs) or template (the template's literals, special tokens of the
// tokenizer config). Concatenation keeps each byte's tag; a transform (strip, replace, slicing,
// tojson...) yields an all-value result if any input byte was a value, else all-template.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/utf8.h"  // append_utf8, used by the parser and unicase

namespace sickle::tmpl {

// A tagged string: text plus one tag byte per text byte (1: value, 0: template).
struct Str {
  std::string text;
  std::string tags;

  Str() = default;
  Str(std::string t, bool is_value) : text(std::move(t)), tags(text.size(), is_value ? 1 : 0) {}
  bool has_value() const { return tags.find('\1') != std::string::npos; }
  void append(const Str& o) {
    text += o.text;
    tags += o.tags;
  }
  void append(std::string_view t, bool is_value) {
    text += t;
    tags.append(t.size(), is_value ? 1 : 0);
  }
};

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<Str, Value>>;  // insertion-ordered, string keys
struct Args;
class Renderer;
using NativeFn = std::function<Value(Renderer&, Args&)>;

enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kFunc };

struct Value {
  Kind kind = Kind::kUndefined;
  bool is_tuple = false;  // kList built as a tuple: repr() writes (a, b)
  bool is_data = false;   // a scalar (None/bool/number) from the caller's data: str() of it is a value
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::shared_ptr<const Str> str;  // kString; kUndefined: the hint for the error message
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // kDict, kNamespace
  std::shared_ptr<const NativeFn> func;
  std::string func_name;

  static Value undefined(std::string hint);
  static Value none(bool data = false);
  static Value of_bool(bool b, bool data = false);
  static Value of_int(int64_t i, bool data = false);
  static Value of_float(double f, bool data = false);
  static Value of_str(Str s);
  static Value of_str(std::string s, bool is_value) { return of_str(Str(std::move(s), is_value)); }
  static Value of_list(List l);
  static Value of_dict(Dict d);
  static Value of_namespace(Dict d);
  static Value of_func(std::string name, NativeFn fn);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_mapping() const { return kind == Kind::kDict; }
  const std::string& text() const { return str->text; }
  const Value* find(std::string_view key) const;  // dict / namespace entry or nullptr
};

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;
  // The i-th positional argument or the one named `name`, else Undefined.
  Value get(size_t i, std::string_view name) const;
  bool has(size_t i, std::string_view name) const;
};

// Python truthiness (Undefined and None are false).
bool truthy(const Value& v);
// True if any byte str() would produce comes from the caller's data.
bool has_value(const Value& v);
// Python str() / repr() of the value, as jinja2 prints it (floats as Python repr, None, True,
// lists and dicts in Python syntax). Undefined prints as "".
std::string to_text(const Value& v);
std::string repr(const Value& v);
std::string python_float_repr(double d);
// str() with tags: strings keep theirs; anything else is tagged by has_value().
Str to_str(const Value& v);
// json.dumps(v, ensure_ascii=False, indent=indent, separators=(item_sep, key_sep), sort_keys)
// as transformers' tojson filter calls it. indent < 0: no indent. An Error for Undefined,
// namespaces and callables (not JSON serializable).
std::string to_json_text(const Value& v, int indent, const std::string& indent_str,
                         const std::string& item_sep, const std::string& key_sep, bool sort_keys);
// JSON -> Value; strings (and dict keys) tagged as `is_value`, scalars marked as data then too.
// ordered_json keeps the caller's key order, which tojson must reproduce.
Value from_json(const nlohmann::ordered_json& j, bool is_value);
// Python ==.
bool equals(const Value& a, const Value& b);
const char* type_name(const Value& v);  // Python's type names: 'str', 'dict object'...

// UTF-8 helpers: code point boundaries (byte offsets, the end included) of a string.
std::vector<size_t> code_point_offsets(std::string_view s);

}  // namespace sickle::tmpl
