// sickle/template/value.cpp — Python semantics of template values: truthiness, str/repr,
// equality, json.dumps as transformers' tojson calls it.
#include "template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "base/error.h"

namespace sickle::tmpl {

Value Value::undefined(std::string hint) {
  Value v;
  v.str = std::make_shared<const Str>(std::move(hint), false);
  return v;
}
Value Value::none(bool data) {
  Value v;
  v.kind = Kind::kNone;
  v.is_data = data;
  return v;
}
Value Value::of_bool(bool b, bool data) {
  Value v;
  v.kind = Kind::kBool;
  v.boolean = b;
  v.is_data = data;
  return v;
}
Value Value::of_int(int64_t i, bool data) {
  Value v;
  v.kind = Kind::kInt;
  v.integer = i;
  v.is_data = data;
  return v;
}
Value Value::of_float(double f, bool data) {
  Value v;
  v.kind = Kind::kFloat;
  v.number = f;
  v.is_data = data;
  return v;
}
Value Value::of_str(Str s) {
  Value v;
  v.kind = Kind::kString;
  v.str = std::make_shared<const Str>(std::move(s));
  return v;
}
Value Value::of_list(List l) {
  Value v;
  v.kind = Kind::kList;
  v.list = std::make_shared<List>(std::move(l));
  return v;
}
Value Value::of_dict(Dict d) {
  Value v;
  v.kind = Kind::kDict;
  v.dict = std::make_shared<Dict>(std::move(d));
  return v;
}
Value Value::of_namespace(Dict d) {
  Value v = of_dict(std::move(d));
  v.kind = Kind::kNamespace;
  return v;
}
Value Value::of_func(std::string name, NativeFn fn) {
  Value v;
  v.kind = Kind::kFunc;
  v.func = std::make_shared<const NativeFn>(std::move(fn));
  v.func_name = std::move(name);
  return v;
}

const Value* Value::find(std::string_view key) const {
  if (!dict) return nullptr;
  for (const auto& [k, v] : *dict)
    if (k.text == key) return &v;
  return nullptr;
}

Value Args::get(size_t i, std::string_view name) const {
  if (i < positional.size()) return positional[i];
  for (const auto& [k, v] : named)
    if (k == name) return v;
  return Value::undefined(std::string(name));
}
bool Args::has(size_t i, std::string_view name) const {
  if (i < positional.size()) return true;
  for (const auto& [k, v] : named)
    if (k == name) return true;
  return false;
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return v.boolean;
    case Kind::kInt: return v.integer != 0;
    case Kind::kFloat: return v.number != 0;
    case Kind::kString: return !v.text().empty();
    case Kind::kList: return !v.list->empty();
    case Kind::kDict: return !v.dict->empty();
    case Kind::kNamespace:
    case Kind::kFunc: return true;
  }
  return false;
}

bool has_value(const Value& v) {
  switch (v.kind) {
    case Kind::kString: return v.str->has_value();
    case Kind::kList:
      return std::any_of(v.list->begin(), v.list->end(), [](const Value& e) { return has_value(e); });
    case Kind::kDict:
    case Kind::kNamespace:
      return std::any_of(v.dict->begin(), v.dict->end(),
                         [](const auto& kv) { return kv.first.has_value() || has_value(kv.second); });
    default: return v.is_data;
  }
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits (what Python's repr uses), then Python's layout: scientific
  // when the decimal exponent is < -4 or >= 16, else positional with at least one decimal.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  int exp10 = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (sci[i] != '.') digits += sci[i];
  std::string out;
  if (exp10 < -4 || exp10 >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    out += eb;
  } else if (exp10 < 0) {
    out = "0." + std::string(size_t(-exp10 - 1), '0') + digits;
  } else {
    size_t int_len = size_t(exp10) + 1;
    if (digits.size() <= int_len) out = digits + std::string(int_len - digits.size(), '0') + ".0";
    else out = digits.substr(0, int_len) + "." + digits.substr(int_len);
  }
  return neg ? "-" + out : out;
}

static std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == q || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else out += char(c);
  }
  out += q;
  return out;
}

std::string repr(const Value& v) {
  switch (v.kind) {
    case Kind::kString: return repr_string(v.text());
    case Kind::kList: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t i = 0; i < v.list->size(); ++i) out += (i ? ", " : "") + repr((*v.list)[i]);
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Kind::kDict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, e] : *v.dict) {
        out += (first ? "" : ", ") + repr_string(k.text) + ": " + repr(e);
        first = false;
      }
      return out + "}";
    }
    default: return to_text(v);
  }
}

std::string to_text(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return v.boolean ? "True" : "False";
    case Kind::kInt: return std::to_string(v.integer);
    case Kind::kFloat: return python_float_repr(v.number);
    case Kind::kString: return v.text();
    case Kind::kList:
    case Kind::kDict: return repr(v);
    case Kind::kNamespace: return "<Namespace>";
    case Kind::kFunc: return "<function " + v.func_name + ">";
  }
  return "";
}

Str to_str(const Value& v) {
  if (v.kind == Kind::kString) return *v.str;
  return Str(to_text(v), has_value(v));
}

static void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else out += char(c);
    }
  }
  out += '"';
}

static void json_dump(std::string& out, const Value& v, int level, int indent, const std::string& ind,
                      const std::string& item_sep, const std::string& key_sep, bool sort_keys, int depth) {
  if (depth > 512) fail("tojson: nesting deeper than 512 levels");
  auto newline = [&](int lvl) {
    out += '\n';
    for (int i = 0; i < lvl; ++i) out += ind;
  };
  switch (v.kind) {
    case Kind::kNone: out += "null"; return;
    case Kind::kBool: out += v.boolean ? "true" : "false"; return;
    case Kind::kInt: out += std::to_string(v.integer); return;
    case Kind::kFloat:
      if (std::isnan(v.number)) out += "NaN";
      else if (std::isinf(v.number)) out += v.number < 0 ? "-Infinity" : "Infinity";
      else out += python_float_repr(v.number);
      return;
    case Kind::kString: json_string(out, v.text()); return;
    case Kind::kList: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += item_sep;
        if (indent >= 0) newline(level + 1);
        json_dump(out, (*v.list)[i], level + 1, indent, ind, item_sep, key_sep, sort_keys, depth + 1);
      }
      if (indent >= 0) newline(level);
      out += ']';
      return;
    }
    case Kind::kDict: {
      if (v.dict->empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Str, Value>*> items;
      for (const auto& kv : *v.dict) items.push_back(&kv);
      if (sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first.text < b->first.text; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        if (indent >= 0) newline(level + 1);
        json_string(out, items[i]->first.text);
        out += key_sep;
        json_dump(out, items[i]->second, level + 1, indent, ind, item_sep, key_sep, sort_keys, depth + 1);
      }
      if (indent >= 0) newline(level);
      out += '}';
      return;
    }
    case Kind::kUndefined: fail("tojson: Object of type Undefined is not JSON serializable");
    case Kind::kNamespace: fail("tojson: Object of type Namespace is not JSON serializable");
    case Kind::kFunc: fail("tojson: Object of type function is not JSON serializable");
  }
}

std::string to_json_text(const Value& v, int indent, const std::string& indent_str,
                         const std::string& item_sep, const std::string& key_sep, bool sort_keys) {
  std::string out;
  json_dump(out, v, 0, indent, indent_str, item_sep, key_sep, sort_keys, 0);
  return out;
}

Value from_json(const nlohmann::ordered_json& j, bool is_value) {
  using nlohmann::json;
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none(is_value);
    case nlohmann::json::value_t::boolean: return Value::of_bool(j.get<bool>(), is_value);
    case nlohmann::json::value_t::number_integer: return Value::of_int(j.get<int64_t>(), is_value);
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return Value::of_float(double(u), is_value);
      return Value::of_int(int64_t(u), is_value);
    }
    case nlohmann::json::value_t::number_float: return Value::of_float(j.get<double>(), is_value);
    case nlohmann::json::value_t::string: return Value::of_str(j.get<std::string>(), is_value);
    case nlohmann::json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e, is_value));
      return Value::of_list(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      d.reserve(j.size());
      for (const auto& [k, e] : j.items()) d.emplace_back(Str(k, is_value), from_json(e, is_value));
      return Value::of_dict(std::move(d));
    }
    default: return Value::none(is_value);
  }
}

static double as_double(const Value& v) {
  return v.kind == Kind::kFloat ? v.number : v.kind == Kind::kBool ? double(v.boolean) : double(v.integer);
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) {
      int64_t x = a.kind == Kind::kBool ? a.boolean : a.integer,
              y = b.kind == Kind::kBool ? b.boolean : b.integer;
      return x == y;
    }
    return as_double(a) == as_double(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return a.text() == b.text();
    case Kind::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i)
        if (!equals((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case Kind::kDict: {
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [k, e] : *a.dict) {
        const Value* o = b.find(k.text);
        if (!o || !equals(e, *o)) return false;
      }
      return true;
    }
    case Kind::kNamespace: return a.dict == b.dict;
    case Kind::kFunc: return a.func == b.func;
    default: return false;
  }
}

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "Namespace";
    case Kind::kFunc: return "function";
  }
  return "?";
}

std::vector<size_t> code_point_offsets(std::string_view s) {
  std::vector<size_t> off;
  off.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) off.push_back(i);
  off.push_back(s.size());
  return off;
}

}  // namespace sickle::tmpl
