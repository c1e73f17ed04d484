// sickle/grammar/json_schema.cpp — JSON Schema to grammar (see json_schema.h).
#include "grammar/json_schema.h"

#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>

#include "base/error.h"
#include "grammar/regex_grammar.h"

namespace sickle::grammar {
namespace {

using json = nlohmann::json;

std::string pointer_escape(const std::string& key) {
  std::string out;
  for (char c : key) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

// Shared pieces of the JSON syntax, one rule each, made on first use.
class JsonSyntax {
 public:
  explicit JsonSyntax(Grammar& g) : g_(g) {}

  Element ws() {  // one optional space (the whitespace policy in json_schema.h)
    if (ws_ < 0) ws_ = g_.optional({g_.byte(' ')}).rule;
    return Grammar::ref(ws_);
  }
  Sequence comma() { return {g_.byte(','), ws()}; }
  Sequence colon() { return {g_.byte(':'), ws()}; }

  // One character of a JSON string's contents (a code point, so length bounds count right).
  Element string_char() {
    if (char_ >= 0) return Grammar::ref(char_);
    char_ = g_.new_rule("char");
    ByteSet plain;
    for (int b = 0x20; b < 0x80; ++b)
      if (b != '"' && b != '\\') plain.set(size_t(b));
    g_.add_alternative(char_, {g_.bytes(plain)});
    ByteSet esc;
    for (char c : std::string("\"\\/bfnrt")) esc.set(uint8_t(c));
    g_.add_alternative(char_, {g_.byte('\\'), g_.bytes(esc)});
    // \uXXXX outside D800-DFFF: a lone surrogate would count as one character here and as one
    // UTF-16 unit in a validator, a pair as two here and one there.
    ByteSet hex, hex_not_d, oct;
    for (char c : std::string("0123456789abcdefABCDEF")) hex.set(uint8_t(c));
    hex_not_d = hex;
    hex_not_d.reset('d').reset('D');
    for (char c = '0'; c <= '7'; ++c) oct.set(uint8_t(c));
    Element h = g_.bytes(hex);
    g_.add_alternative(char_, {g_.byte('\\'), g_.byte('u'), g_.bytes(hex_not_d), h, h, h});
    g_.add_alternative(
        char_, {g_.byte('\\'), g_.byte('u'), g_.bytes(ByteSet().set('d').set('D')), g_.bytes(oct), h, h});
    g_.add_alternative(char_, {g_.utf8_multibyte()});
    return Grammar::ref(char_);
  }

  Element string(int64_t min_len = 0, int64_t max_len = -1) {
    if (min_len == 0 && max_len < 0) {
      if (string_ < 0) {
        string_ = g_.new_rule("string");
        g_.add_alternative(string_, {g_.byte('"'), g_.star({string_char()}), g_.byte('"')});
      }
      return Grammar::ref(string_);
    }
    Sequence seq{g_.byte('"')};
    Sequence body = g_.repeat({string_char()}, min_len, max_len);
    seq.insert(seq.end(), body.begin(), body.end());
    seq.push_back(g_.byte('"'));
    return g_.alt("string", {seq});
  }

  // Digit counts are bounded (json_schema.h): at most 16 integer digits (beyond 2^53 a
  // JavaScript client loses precision anyway), 16 fraction digits, a 2-digit exponent, so a
  // number is always finite and a model cannot loop on digits.
  Element integer() {
    if (integer_ < 0) {
      integer_ = g_.new_rule("integer");
      Element digit = g_.byte_range('0', '9');
      Sequence nonzero{g_.byte_range('1', '9')};
      Sequence more = g_.repeat({digit}, 0, 15);
      nonzero.insert(nonzero.end(), more.begin(), more.end());
      Element magnitude = g_.alt("digits", {{g_.byte('0')}, nonzero});
      g_.add_alternative(integer_, {g_.optional({g_.byte('-')}), magnitude});
    }
    return Grammar::ref(integer_);
  }

  Element number() {
    if (number_ < 0) {
      number_ = g_.new_rule("number");
      Element digit = g_.byte_range('0', '9');
      Sequence frac{g_.byte('.')};
      Sequence frac_digits = g_.repeat({digit}, 1, 16);
      frac.insert(frac.end(), frac_digits.begin(), frac_digits.end());
      Sequence exp{g_.bytes(ByteSet().set('e').set('E')),
                   g_.optional({g_.bytes(ByteSet().set('+').set('-'))})};
      Sequence exp_digits = g_.repeat({digit}, 1, 2);
      exp.insert(exp.end(), exp_digits.begin(), exp_digits.end());
      g_.add_alternative(number_, {integer(), g_.optional(frac), g_.optional(exp)});
    }
    return Grammar::ref(number_);
  }

  Element literal(std::string_view text) { return g_.alt("lit", {Grammar::literal_seq(text, g_)}); }

  // Any JSON value / object / array (recursive).
  Element any_value() {
    if (value_ >= 0) return Grammar::ref(value_);
    value_ = g_.new_rule("value");
    object_ = g_.new_rule("object");
    int32_t array = g_.new_rule("array");
    for (const char* lit : {"true", "false", "null"})
      g_.add_alternative(value_, Grammar::literal_seq(lit, g_));
    g_.add_alternative(value_, {string()});
    g_.add_alternative(value_, {number()});
    g_.add_alternative(value_, {Grammar::ref(object_)});
    g_.add_alternative(value_, {Grammar::ref(array)});
    Sequence member{string()};
    Sequence c = colon();
    member.insert(member.end(), c.begin(), c.end());
    member.push_back(Grammar::ref(value_));
    Sequence more = comma();
    more.insert(more.end(), member.begin(), member.end());
    Sequence members = member;
    members.push_back(g_.star(more));
    g_.add_alternative(object_, {g_.byte('{'), g_.optional(members), g_.byte('}')});
    Sequence more_items = comma();
    more_items.push_back(Grammar::ref(value_));
    g_.add_alternative(
        array, {g_.byte('['), g_.optional({Grammar::ref(value_), g_.star(more_items)}), g_.byte(']')});
    return Grammar::ref(value_);
  }
  Element any_object() {
    any_value();
    return Grammar::ref(object_);
  }

 private:
  Grammar& g_;
  int32_t ws_ = -1, char_ = -1, string_ = -1, integer_ = -1, number_ = -1, value_ = -1, object_ = -1;
};

const std::set<std::string>& annotations() {
  static const std::set<std::string> k = {"title",    "description", "default",  "examples",
                                          "$schema",  "$id",         "$comment", "deprecated",
                                          "readOnly", "writeOnly",   "$defs",    "definitions"};
  return k;
}

class SchemaCompiler {
 public:
  SchemaCompiler(const json& root, const SchemaOptions& opt, Grammar& g)
      : root_(root), opt_(opt), g_(g), syn_(g) {}

  Element compile(const json& s, const std::string& ptr, int depth) {
    if (depth > 64) fail("json_schema: nesting deeper than 64 at {}", where(ptr));
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail("json_schema: schema `false` at {} accepts no document", where(ptr));
      return syn_.any_value();
    }
    if (!s.is_object()) fail("json_schema: a schema must be an object or a boolean at {}", where(ptr));
    static const std::set<std::string> kKnown = {
        "type",      "properties", "required", "additionalProperties",
        "items",     "enum",       "const",    "anyOf",
        "allOf",     "$ref",       "minItems", "maxItems",
        "minLength", "maxLength",  "pattern"};
    for (const auto& [key, _] : s.items())
      if (!kKnown.count(key) && !annotations().count(key))
        fail("json_schema: unsupported keyword '{}' at {}", key, where(ptr + "/" + pointer_escape(key)));

    if (s.contains("$ref")) {
      if (s.size() > 1)
        for (const auto& [key, _] : s.items())
          if (key != "$ref" && !annotations().count(key))
            fail("json_schema: '$ref' beside '{}' is not supported at {}", key, where(ptr));
      return ref(s["$ref"], ptr + "/$ref", depth);
    }
    if (s.contains("allOf")) {
      const json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1 || s.size() > 1)
        fail("json_schema: 'allOf' is supported only with one member and no sibling keywords at {}",
             where(ptr + "/allOf"));
      return compile(all[0], ptr + "/allOf/0", depth + 1);
    }
    if (s.contains("anyOf")) {
      const json& any = s["anyOf"];
      if (!any.is_array() || any.empty())
        fail("json_schema: 'anyOf' must be a non-empty array at {}", where(ptr + "/anyOf"));
      for (const auto& [key, _] : s.items())
        if (key != "anyOf" && !annotations().count(key))
          fail("json_schema: 'anyOf' beside '{}' is not supported at {}", key, where(ptr));
      std::vector<Sequence> alts;
      for (size_t i = 0; i < any.size(); ++i)
        alts.push_back({compile(any[i], fmt::format("{}/anyOf/{}", ptr, i), depth + 1)});
      return g_.alt("anyOf", std::move(alts));
    }
    std::vector<std::string> types = type_list(s, ptr);
    if (s.contains("const")) return enum_values(json::array({s["const"]}), types, ptr + "/const");
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty())
        fail("json_schema: 'enum' must be a non-empty array at {}", where(ptr + "/enum"));
      return enum_values(s["enum"], types, ptr + "/enum");
    }
    check_applies(s, types, ptr);
    std::vector<Sequence> alts;
    for (const std::string& t : types) {
      if (t == "object") alts.push_back({object(s, ptr, depth)});
      else if (t == "array") alts.push_back({array(s, ptr, depth)});
      else if (t == "string") alts.push_back({string(s, ptr)});
      else if (t == "number") alts.push_back({syn_.number()});
      else if (t == "integer") alts.push_back({syn_.integer()});
      else if (t == "boolean")
        alts.push_back({syn_.literal("true")}), alts.push_back({syn_.literal("false")});
      else if (t == "null") alts.push_back({syn_.literal("null")});
    }
    return alts.size() == 1 && alts[0].size() == 1 ? alts[0][0] : g_.alt("type", std::move(alts));
  }

 private:
  std::string where(const std::string& ptr) const { return ptr.empty() ? "/ (the root)" : ptr; }

  std::vector<std::string> type_list(const json& s, const std::string& ptr) {
    static const std::vector<std::string> kAll = {"object", "array", "string", "number", "boolean", "null"};
    if (!s.contains("type")) {
      // No type: what the other keywords imply, else any value.
      if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required"))
        return {"object"};
      if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) return {"array"};
      if (s.contains("minLength") || s.contains("maxLength") || s.contains("pattern")) return {"string"};
      return kAll;
    }
    const json& t = s["type"];
    std::vector<std::string> out;
    auto add = [&](const json& v, const std::string& p) {
      static const std::set<std::string> kTypes = {"object",  "array",   "string", "number",
                                                   "integer", "boolean", "null"};
      if (!v.is_string() || !kTypes.count(v.get<std::string>()))
        fail("json_schema: 'type' must be one of object, array, string, number, integer, boolean, null at {}",
             where(p));
      if (std::find(out.begin(), out.end(), v.get<std::string>()) == out.end())
        out.push_back(v.get<std::string>());
    };
    if (t.is_array()) {
      if (t.empty()) fail("json_schema: 'type' is an empty list at {}", where(ptr + "/type"));
      for (size_t i = 0; i < t.size(); ++i) add(t[i], fmt::format("{}/type/{}", ptr, i));
    } else {
      add(t, ptr + "/type");
    }
    // number already covers integer
    if (std::find(out.begin(), out.end(), "number") != out.end())
      out.erase(std::remove(out.begin(), out.end(), "integer"), out.end());
    return out;
  }

  // Keywords for a type the schema does not allow would be inert (JSON Schema applies them
  // only to instances of their type); reject them as a likely mistake only when invalid.
  void check_applies(const json& s, const std::vector<std::string>& types, const std::string& ptr) {
    auto count = [&](const char* k) -> int64_t {
      if (!s.contains(k)) return -1;
      const json& v = s[k];
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail("json_schema: '{}' must be a non-negative integer at {}", k, where(ptr + "/" + k));
      if (v.get<int64_t>() > opt_.max_repeat)
        fail("json_schema: '{}' = {} is above the supported {} at {}", k, v.get<int64_t>(), opt_.max_repeat,
             where(ptr + "/" + k));
      return v.get<int64_t>();
    };
    for (const char* k : {"minItems", "maxItems", "minLength", "maxLength"}) count(k);
    (void)types;
  }

  Element enum_values(const json& values, const std::vector<std::string>& types, const std::string& ptr) {
    std::vector<Sequence> alts;
    std::set<std::string> seen;
    for (const json& v : values) {
      if (!type_matches(v, types)) continue;
      std::string text = v.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::strict);
      if (seen.insert(text).second) alts.push_back(Grammar::literal_seq(text, g_));
    }
    if (alts.empty()) fail("json_schema: no value of 'enum'/'const' has the allowed type at {}", where(ptr));
    return g_.alt("enum", std::move(alts));
  }

  static bool type_matches(const json& v, const std::vector<std::string>& types) {
    for (const std::string& t : types) {
      if ((t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
          (t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
          (t == "boolean" && v.is_boolean()) || (t == "null" && v.is_null()))
        return true;
      if (t == "integer" &&
          (v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())))
        return true;
    }
    return false;
  }

  Element string(const json& s, const std::string& ptr) {
    int64_t min_len = s.value("minLength", int64_t(0));
    int64_t max_len = s.contains("maxLength") ? s["maxLength"].get<int64_t>() : -1;
    if (max_len >= 0 && max_len < min_len)
      fail("json_schema: maxLength {} < minLength {} at {}", max_len, min_len, where(ptr));
    if (s.contains("pattern")) {
      if (!s["pattern"].is_string())
        fail("json_schema: 'pattern' must be a string at {}", where(ptr + "/pattern"));
      if (s.contains("minLength") || s.contains("maxLength"))
        fail("json_schema: 'pattern' with 'minLength'/'maxLength' is not supported at {}", where(ptr));
      Element body = regex_json_string_content(g_, s["pattern"].get<std::string>(), where(ptr + "/pattern"));
      return g_.alt("string", {{g_.byte('"'), body, g_.byte('"')}});
    }
    return syn_.string(min_len, max_len);
  }

  Element array(const json& s, const std::string& ptr, int depth) {
    Element item = s.contains("items") ? compile(s["items"], ptr + "/items", depth + 1) : syn_.any_value();
    int64_t min_n = s.value("minItems", int64_t(0));
    int64_t max_n = s.contains("maxItems") ? s["maxItems"].get<int64_t>() : -1;
    if (max_n >= 0 && max_n < min_n)
      fail("json_schema: maxItems {} < minItems {} at {}", max_n, min_n, where(ptr));
    Sequence seq{g_.byte('[')};
    if (max_n != 0) {
      // item ("," item){min-1, max-1}, optional as a whole when min is 0
      Sequence more = syn_.comma();
      more.push_back(item);
      Sequence items{item};
      Sequence rest = g_.repeat(more, std::max<int64_t>(min_n - 1, 0), max_n < 0 ? -1 : max_n - 1);
      items.insert(items.end(), rest.begin(), rest.end());
      if (min_n == 0) seq.push_back(g_.optional(items));
      else seq.insert(seq.end(), items.begin(), items.end());
    }
    seq.push_back(g_.byte(']'));
    return g_.alt("array", {seq});
  }

  Element object(const json& s, const std::string& ptr, int depth) {
    std::map<std::string, std::pair<json, std::string>> props;  // name -> (schema, pointer)
    if (s.contains("properties")) {
      if (!s["properties"].is_object())
        fail("json_schema: 'properties' must be an object at {}", where(ptr + "/properties"));
      for (const auto& [k, v] : s["properties"].items())
        props[k] = {v, ptr + "/properties/" + pointer_escape(k)};
    }
    std::set<std::string> required;
    if (s.contains("required")) {
      const json& r = s["required"];
      if (!r.is_array())
        fail("json_schema: 'required' must be an array of strings at {}", where(ptr + "/required"));
      for (const json& k : r) {
        if (!k.is_string())
          fail("json_schema: 'required' must be an array of strings at {}", where(ptr + "/required"));
        required.insert(k.get<std::string>());
      }
    }
    // additionalProperties: false (strict default), true / {} (any value), or a schema.
    json extra = false;  // strict or not: see SchemaOptions::strict
    bool extra_given = s.contains("additionalProperties");
    if (extra_given) extra = s["additionalProperties"];
    if (!extra.is_boolean() && !extra.is_object())
      fail("json_schema: 'additionalProperties' must be a boolean or a schema at {}",
           where(ptr + "/additionalProperties"));
    bool extra_allowed = !(extra.is_boolean() && !extra.get<bool>());
    for (const std::string& k : required)
      if (!props.count(k)) {
        if (!extra_allowed)
          fail(
              "json_schema: required property '{}' is not in 'properties' and additionalProperties is false "
              "at {}",
              k, where(ptr + "/required"));
        props[k] = {extra, ptr + "/additionalProperties"};
      }

    // Members in key order; S(i, c) = the members from i on, c = a comma is due first:
    //   required i:  [","] P_i S(i+1, 1)
    //   optional i:  [","] P_i S(i+1, 1) | S(i+1, c)
    std::vector<std::string> names;
    std::vector<Element> member;
    for (const auto& [k, v] : props) {
      names.push_back(k);
      Sequence m = Grammar::literal_seq(json(k).dump(-1, ' ', false, json::error_handler_t::strict), g_);
      Sequence c = syn_.colon();
      m.insert(m.end(), c.begin(), c.end());
      m.push_back(compile(v.first, v.second, depth + 1));
      member.push_back(g_.alt("member", {m}));
    }
    // Tail after the declared members: extra members when allowed.
    Element tail_after[2];
    for (int c = 0; c < 2; ++c) {
      if (!extra_allowed) {
        tail_after[c] = g_.alt("end", {{}});
        continue;
      }
      Element value = compile(extra, ptr + "/additionalProperties", depth + 1);
      Sequence m{syn_.string()};
      Sequence col = syn_.colon();
      m.insert(m.end(), col.begin(), col.end());
      m.push_back(value);
      Sequence more = syn_.comma();
      more.insert(more.end(), m.begin(), m.end());
      if (c) {
        tail_after[c] = g_.star(more);
      } else {
        Sequence first = m;
        first.push_back(g_.star(more));
        tail_after[c] = g_.optional(first);
      }
    }
    std::vector<Element> next = {tail_after[0], tail_after[1]};  // S(n, 0), S(n, 1)
    for (size_t i = names.size(); i-- > 0;) {
      std::vector<Element> cur(2);
      for (int c = 0; c < 2; ++c) {
        Sequence with;
        if (c) with = syn_.comma();
        with.push_back(member[i]);
        with.push_back(next[1]);
        std::vector<Sequence> alts{with};
        if (!required.count(names[i])) alts.push_back({next[size_t(c)]});
        cur[size_t(c)] = g_.alt("members", std::move(alts));
      }
      next = cur;
    }
    return g_.alt("object", {{g_.byte('{'), next[0], g_.byte('}')}});
  }

  Element ref(const json& r, const std::string& ptr, int depth) {
    if (!r.is_string()) fail("json_schema: '$ref' must be a string at {}", where(ptr));
    std::string target = r.get<std::string>();
    auto it = refs_.find(target);
    if (it != refs_.end()) return Grammar::ref(it->second);
    if (target.empty() || target[0] != '#')
      fail("json_schema: '$ref' \"{}\" is not a local reference (#/$defs/...) at {}", target, where(ptr));
    json::json_pointer jp;
    try {
      jp = json::json_pointer(target.substr(1));
    } catch (const json::exception&) {
      fail("json_schema: '$ref' \"{}\" is not a valid JSON pointer at {}", target, where(ptr));
    }
    if (!root_.contains(jp)) fail("json_schema: '$ref' \"{}\" points nowhere at {}", target, where(ptr));
    // The rule exists before its body is compiled, so a recursive reference finds it.
    int32_t rule = g_.new_rule("ref");
    refs_[target] = rule;
    g_.add_alternative(rule, {compile(root_.at(jp), target.substr(1), depth + 1)});
    return Grammar::ref(rule);
  }

  const json& root_;
  SchemaOptions opt_;
  Grammar& g_;
  JsonSyntax syn_;
  std::map<std::string, int32_t> refs_;
};

}  // namespace

Element add_json_schema(Grammar& g, const nlohmann::json& schema, const SchemaOptions& options) {
  SchemaCompiler c(schema, options, g);
  return c.compile(schema, "", 0);
}

Element add_json_object(Grammar& g) { return JsonSyntax(g).any_object(); }

namespace {
std::shared_ptr<const Grammar> rooted(const std::shared_ptr<Grammar>& g, Element root) {
  int32_t r = g->new_rule("root");
  g->add_alternative(r, {root});
  g->set_root(r);
  return g;
}
}  // namespace

std::shared_ptr<const Grammar> compile_json_schema(const nlohmann::json& schema,
                                                   const SchemaOptions& options) {
  auto g = std::make_shared<Grammar>();
  return rooted(g, add_json_schema(*g, schema, options));
}

std::shared_ptr<const Grammar> json_object_grammar() {
  auto g = std::make_shared<Grammar>();
  return rooted(g, add_json_object(*g));
}

}  // namespace sickle::grammar
