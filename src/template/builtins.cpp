// sickle/template/builtins.cpp — Python / jinja2 semantics of operators, lookups, filters
// (jinja2 3.1 filters.py; tojson as transformers overrides it), tests (tests.py) and the str /
// dict / list methods the immutable sandbox allows (sandbox.py: mutating methods are unsafe).
#include "template/builtins.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>

#include "base/error.h"
#include "template/unicase.h"

namespace sickle::tmpl {
namespace {

Value str_result(Renderer& r, std::string s, bool is_value) {
  charge(r, s.size());
  return Value::of_str(std::move(s), is_value);
}

bool any_value(const Value& a) { return has_value(a); }

// ---- UTF-8 / Python whitespace ----
uint32_t decode_at(std::string_view s, size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (i + size_t(n) > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + size_t(k)]) & 0x3F);
  i += size_t(n);
  return cp;
}

bool py_space(uint32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

std::vector<std::pair<size_t, uint32_t>> code_points(std::string_view s) {
  std::vector<std::pair<size_t, uint32_t>> out;
  for (size_t i = 0; i < s.size();) {
    size_t at = i;
    out.emplace_back(at, decode_at(s, i));
  }
  return out;
}

// str.strip / lstrip / rstrip: chars (code points) or Python whitespace.
std::string py_strip(std::string_view s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> set;
  bool ws = chars.is_undefined() || chars.is_none();
  if (!ws) {
    if (!chars.is_string()) throw Fault{"strip arg must be None or str"};
    for (auto [o, c] : code_points(chars.text())) set.push_back(c);
  }
  auto strip_it = [&](uint32_t c) {
    return ws ? py_space(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  auto cps = code_points(s);
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b].second)) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1].second)) --e;
  size_t from = b < cps.size() ? cps[b].first : s.size(), to = e < cps.size() ? cps[e].first : s.size();
  return std::string(s.substr(from, to - from));
}

std::vector<std::string> py_split(std::string_view s, const Value& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep.is_undefined() || sep.is_none()) {
    auto cps = code_points(s);
    size_t i = 0;
    while (true) {
      while (i < cps.size() && py_space(cps[i].second)) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && int64_t(out.size()) >= maxsplit) {
        std::string rest(s.substr(cps[i].first));
        out.push_back(py_strip(rest, Value(), false, true));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !py_space(cps[j].second)) ++j;
      size_t to = j < cps.size() ? cps[j].first : s.size();
      out.emplace_back(s.substr(cps[i].first, to - cps[i].first));
      i = j;
    }
    return out;
  }
  if (!sep.is_string()) throw Fault{"must be str or None"};
  const std::string& d = sep.text();
  if (d.empty()) throw Fault{"empty separator"};
  size_t pos = 0;
  while (maxsplit < 0 || int64_t(out.size()) < maxsplit) {
    size_t f = s.find(d, pos);
    if (f == std::string_view::npos) break;
    out.emplace_back(s.substr(pos, f - pos));
    pos = f + d.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

std::string py_replace(Renderer& r, std::string_view s, std::string_view from, std::string_view to,
                       int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` around every character
    auto cps = code_points(s);
    int64_t n = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      if (i < cps.size()) {
        size_t e = i + 1 < cps.size() ? cps[i + 1].first : s.size();
        out += s.substr(cps[i].first, e - cps[i].first);
      }
      charge(r, 0);
      if (out.size() > (size_t(1) << 31)) throw Fault{"replace result too large"};
    }
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t f = s.find(from, pos);
    if (f == std::string_view::npos) break;
    out += s.substr(pos, f - pos);
    out += to;
    pos = f + from.size();
    ++n;
    charge(r, to.size());
  }
  out += s.substr(pos);
  return out;
}

int64_t as_int(const Value& v, const char* what) {
  if (v.kind == Kind::kInt) return v.integer;
  if (v.kind == Kind::kBool) return v.boolean;
  throw Fault{fmt::format("{} must be an integer, not '{}'", what, type_name(v))};
}

double as_double(const Value& v) {
  return v.kind == Kind::kFloat ? v.number : v.kind == Kind::kBool ? double(v.boolean) : double(v.integer);
}

Value unsafe(const char* attr, const Value& obj) {
  std::string msg = fmt::format("access to attribute '{}' of '{}' object is unsafe.", attr, type_name(obj));
  return Value::of_func(attr, [msg](Renderer&, Args&) -> Value { throw Fault{msg}; });
}

size_t py_len(const Value& v) {
  switch (v.kind) {
    case Kind::kString: return code_point_offsets(v.text()).size() - 1;
    case Kind::kList: return v.list->size();
    case Kind::kDict: return v.dict->size();
    case Kind::kUndefined: return 0;
    default: throw Fault{fmt::format("object of type '{}' has no len()", type_name(v))};
  }
}

// Python comparison for sorting and < > (numbers, strings, lists).
int compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    double x = as_double(a), y = as_double(b);
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) {
      int64_t p = a.kind == Kind::kBool ? a.boolean : a.integer,
              q = b.kind == Kind::kBool ? b.boolean : b.integer;
      return p < q ? -1 : p > q ? 1 : 0;
    }
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.text().compare(b.text());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.kind == Kind::kList && b.kind == Kind::kList) {
    for (size_t i = 0; i < a.list->size() && i < b.list->size(); ++i)
      if (int c = compare((*a.list)[i], (*b.list)[i])) return c;
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  if (a.is_undefined() || b.is_undefined()) throw Fault{undefined_message(a.is_undefined() ? a : b)};
  throw Fault{
      fmt::format("'<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b))};
}

Value lower_for_compare(const Value& v, bool case_sensitive) {
  if (case_sensitive || !v.is_string()) return v;
  return Value::of_str(py_lower(v.text()), false);
}

// jinja2's environment.getitem with a dotted attribute path ("a.b", "0").
Value attr_path(Renderer& r, Value v, const std::string& path) {
  size_t s = 0;
  while (true) {
    size_t d = path.find('.', s);
    std::string part = path.substr(s, d == std::string::npos ? std::string::npos : d - s);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
    // Digits past int64 index nothing (jinja2: an IndexError / missing key, then undefined).
    int64_t idx = 0;
    if (!digits) v = get_item(r, v, Value::of_str(part, false));
    else if (std::from_chars(part.data(), part.data() + part.size(), idx).ec == std::errc())
      v = get_item(r, v, Value::of_int(idx));
    else v = Value::undefined("no item " + part);
    if (d == std::string::npos) return v;
    s = d + 1;
  }
}

Value seq_of(const Value& v, const std::string& filter) {
  if (v.kind == Kind::kNone || v.is_number() || v.kind == Kind::kFunc || v.kind == Kind::kNamespace)
    throw Fault{fmt::format("{}: '{}' object is not iterable", filter, type_name(v))};
  return Value::of_list(iterate(v));
}

// Python str.<method> bound to `self`.
Value str_method(Renderer& r, const Value& self, const std::string& name) {
  const std::string& s = self.text();
  bool tv = self.str->has_value();
  auto bind = [&](auto fn) {
    return Value::of_func(name, [self, fn](Renderer& rr, Args& a) { return fn(rr, self, a); });
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return bind([name](Renderer& rr, const Value& me, Args& a) {
      Value ch = a.get(0, "chars");
      return str_result(rr, py_strip(me.text(), ch, name != "rstrip", name != "lstrip"),
                        any_value(me) || any_value(ch));
    });
  if (name == "startswith" || name == "endswith")
    return bind([name](Renderer&, const Value& me, Args& a) {
      Value p = a.get(0, "prefix");
      std::vector<std::string> cands;
      if (p.is_string()) cands.push_back(p.text());
      else if (p.kind == Kind::kList)
        for (const Value& e : *p.list) {
          if (!e.is_string()) throw Fault{fmt::format("{} first arg must be str or a tuple of str", name)};
          cands.push_back(e.text());
        }
      else throw Fault{fmt::format("{} first arg must be str or a tuple of str, not {}", name, type_name(p))};
      const std::string& t = me.text();
      for (const auto& c : cands) {
        if (name == "startswith" ? t.compare(0, c.size(), c) == 0
                                 : (t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0))
          return Value::of_bool(true);
      }
      return Value::of_bool(false);
    });
  if (name == "split" || name == "rsplit")
    return bind([name](Renderer& rr, const Value& me, Args& a) {
      Value sep = a.get(0, "sep");
      int64_t maxsplit = a.has(1, "maxsplit") ? as_int(a.get(1, "maxsplit"), "maxsplit") : -1;
      if (name == "rsplit" && maxsplit >= 0) throw Fault{"rsplit with maxsplit is not supported"};
      List out;
      bool v = any_value(me);
      for (auto& p : py_split(me.text(), sep, maxsplit)) {
        charge(rr, p.size());
        out.push_back(Value::of_str(std::move(p), v));
      }
      return Value::of_list(std::move(out));
    });
  if (name == "replace")
    return bind([](Renderer& rr, const Value& me, Args& a) {
      Value o = a.get(0, "old"), n = a.get(1, "new");
      if (!o.is_string() || !n.is_string()) throw Fault{"replace() arguments must be str"};
      int64_t count = a.has(2, "count") ? as_int(a.get(2, "count"), "count") : -1;
      return str_result(rr, py_replace(rr, me.text(), o.text(), n.text(), count),
                        any_value(me) || any_value(n));
    });
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize")
    return bind([name](Renderer& rr, const Value& me, Args&) {
      std::string t = name == "upper"   ? py_upper(me.text())
                      : name == "lower" ? py_lower(me.text())
                      : name == "title" ? py_title(me.text())
                                        : py_capitalize(me.text());
      return str_result(rr, std::move(t), any_value(me));
    });
  if (name == "find" || name == "rfind" || name == "count" || name == "index")
    return bind([name](Renderer&, const Value& me, Args& a) {
      Value sub = a.get(0, "sub");
      if (!sub.is_string()) throw Fault{fmt::format("{}() argument must be str", name)};
      const std::string& t = me.text();
      if (name == "count") {
        if (sub.text().empty()) return Value::of_int(int64_t(py_len(me) + 1));
        int64_t n = 0;
        for (size_t p = t.find(sub.text()); p != std::string::npos;
             p = t.find(sub.text(), p + sub.text().size()))
          ++n;
        return Value::of_int(n);
      }
      size_t p = name == "rfind" ? t.rfind(sub.text()) : t.find(sub.text());
      if (p == std::string::npos) {
        if (name == "index") throw Fault{"substring not found"};
        return Value::of_int(-1);
      }
      return Value::of_int(int64_t(code_point_offsets(t.substr(0, p)).size() - 1));
    });
  if (name == "join")
    return bind([](Renderer& rr, const Value& me, Args& a) {
      Str out;
      List items = iterate(a.get(0, "iterable"));
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string())
          throw Fault{
              fmt::format("sequence item {}: expected str instance, {} found", i, type_name(items[i]))};
        if (i) out.append(*me.str);
        out.append(*items[i].str);
        charge(rr, out.text.size());
      }
      return Value::of_str(std::move(out));
    });
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "isupper" ||
      name == "islower")
    return bind([name](Renderer&, const Value& me, Args&) {
      const std::string& t = me.text();
      if (t.empty()) return Value::of_bool(false);
      bool any_cased = false, ok = true;
      for (unsigned char c : t) {
        if (name == "isdigit") ok = ok && std::isdigit(c);
        else if (name == "isspace") ok = ok && std::isspace(c);
        else if (name == "isalpha") ok = ok && std::isalpha(c);
        else if (name == "isalnum") ok = ok && std::isalnum(c);
        else if (name == "isupper") {
          ok = ok && !std::islower(c);
          any_cased = any_cased || std::isupper(c);
        } else {
          ok = ok && !std::isupper(c);
          any_cased = any_cased || std::islower(c);
        }
      }
      if (name == "isupper" || name == "islower") ok = ok && any_cased;
      return Value::of_bool(ok);
    });
  if (name == "removeprefix" || name == "removesuffix")
    return bind([name](Renderer& rr, const Value& me, Args& a) {
      Value p = a.get(0, "prefix");
      if (!p.is_string()) throw Fault{fmt::format("{}() argument must be str", name)};
      std::string t = me.text();
      const std::string& x = p.text();
      if (name == "removeprefix" && t.compare(0, x.size(), x) == 0) t.erase(0, x.size());
      else if (name == "removesuffix" && !x.empty() && t.size() >= x.size() &&
               t.compare(t.size() - x.size(), x.size(), x) == 0)
        t.resize(t.size() - x.size());
      return str_result(rr, std::move(t), any_value(me));
    });
  if (name == "splitlines")
    return bind([](Renderer&, const Value& me, Args&) {
      List out;
      std::string_view t = me.text();
      bool v = any_value(me);
      size_t s = 0;
      for (size_t i = 0; i < t.size(); ++i)
        if (t[i] == '\n' || t[i] == '\r') {
          out.push_back(Value::of_str(std::string(t.substr(s, i - s)), v));
          if (t[i] == '\r' && i + 1 < t.size() && t[i + 1] == '\n') ++i;
          s = i + 1;
        }
      if (s < t.size()) out.push_back(Value::of_str(std::string(t.substr(s)), v));
      return Value::of_list(std::move(out));
    });
  (void)s;
  (void)tv;
  (void)r;
  return Value::undefined(fmt::format("'str object' has no attribute '{}'", name));
}

Value dict_method(const Value& self, const std::string& name) {
  if (name == "items" || name == "keys" || name == "values")
    return Value::of_func(name, [self, name](Renderer&, Args&) {
      List out;
      for (const auto& [k, v] : *self.dict) {
        if (name == "keys") out.push_back(Value::of_str(k));
        else if (name == "values") out.push_back(v);
        else {
          out.push_back(Value::of_list({Value::of_str(k), v}));
          out.back().is_tuple = true;
        }
      }
      return Value::of_list(std::move(out));
    });
  if (name == "get")
    return Value::of_func(name, [self](Renderer&, Args& a) {
      Value k = a.get(0, "key");
      if (k.is_string())
        if (const Value* v = self.find(k.text())) return *v;
      return a.has(1, "default") ? a.get(1, "default") : Value::none();
    });
  if (name == "copy")
    return Value::of_func(name, [self](Renderer&, Args&) { return Value::of_dict(*self.dict); });
  for (const char* m : {"pop", "popitem", "setdefault", "update", "clear"})
    if (name == m) return unsafe(m, self);
  return Value();  // kUndefined without hint: not a method
}

Value list_method(const Value& self, const std::string& name) {
  if (name == "index" || name == "count")
    return Value::of_func(name, [self, name](Renderer&, Args& a) {
      Value x = a.get(0, "value");
      int64_t n = 0;
      for (size_t i = 0; i < self.list->size(); ++i)
        if (equals((*self.list)[i], x)) {
          if (name == "index") return Value::of_int(int64_t(i));
          ++n;
        }
      if (name == "index") throw Fault{"value is not in list"};
      return Value::of_int(n);
    });
  for (const char* m : {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"})
    if (name == m) return unsafe(m, self);
  return Value();
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value checked_int(long double x) {
  if (!(x >= -9.2233720368547758e18L && x < 9.2233720368547758e18L)) throw Fault{"integer overflow"};
  return Value::of_int(int64_t(x));
}

}  // namespace

std::string undefined_message(const Value& u) {
  return u.str && !u.str->text.empty() ? u.str->text : "value is undefined";
}

void dict_set(Dict& d, const Str& key, Value v) {
  for (auto& [k, e] : d)
    if (k.text == key.text) {
      e = std::move(v);
      return;
    }
  d.emplace_back(key, std::move(v));
}

List iterate(const Value& v) {
  switch (v.kind) {
    case Kind::kList: return *v.list;
    case Kind::kDict: {
      List out;
      for (const auto& [k, e] : *v.dict) out.push_back(Value::of_str(k));
      return out;
    }
    case Kind::kString: {
      List out;
      auto off = code_point_offsets(v.text());
      for (size_t i = 0; i + 1 < off.size(); ++i) {
        Str s;
        s.text = v.text().substr(off[i], off[i + 1] - off[i]);
        s.tags = v.str->tags.substr(off[i], off[i + 1] - off[i]);
        out.push_back(Value::of_str(std::move(s)));
      }
      return out;
    }
    case Kind::kUndefined: return {};
    default: throw Fault{fmt::format("'{}' object is not iterable", type_name(v))};
  }
}

Value get_attr(Renderer& r, const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Kind::kUndefined: throw Fault{undefined_message(obj)};
    case Kind::kDict: {
      Value m = dict_method(obj, name);
      if (m.kind == Kind::kFunc) return m;
      if (const Value* v = obj.find(name)) return *v;
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", name));
    }
    case Kind::kNamespace:
      if (const Value* v = obj.find(name)) return *v;
      return Value::undefined(fmt::format("'Namespace object' has no attribute '{}'", name));
    case Kind::kString: return str_method(r, obj, name);
    case Kind::kList: {
      Value m = list_method(obj, name);
      if (m.kind == Kind::kFunc) return m;
      return Value::undefined(fmt::format("'list object' has no attribute '{}'", name));
    }
    default: return Value::undefined(fmt::format("'{}' object has no attribute '{}'", type_name(obj), name));
  }
}

Value get_item(Renderer& r, const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Kind::kUndefined: throw Fault{undefined_message(obj)};
    case Kind::kDict:
    case Kind::kNamespace:
      if (key.is_string()) {
        if (const Value* v = obj.find(key.text())) return *v;
        if (obj.kind == Kind::kDict) {
          Value m = dict_method(obj, key.text());
          if (m.kind == Kind::kFunc) return m;
        }
        return Value::undefined(fmt::format("'dict object' has no attribute '{}'", key.text()));
      }
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", to_text(key)));
    case Kind::kList:
    case Kind::kString: {
      if (key.is_string()) return get_attr(r, obj, key.text());
      if (key.kind != Kind::kInt && key.kind != Kind::kBool)
        return Value::undefined(fmt::format("'{}' object has no element {}", type_name(obj), repr(key)));
      int64_t i = key.kind == Kind::kBool ? key.boolean : key.integer;
      if (obj.kind == Kind::kList) {
        int64_t n = int64_t(obj.list->size());
        if (i < 0) i += n;
        if (i < 0 || i >= n)
          return Value::undefined(fmt::format("list object has no element {}", to_text(key)));
        return (*obj.list)[size_t(i)];
      }
      auto off = code_point_offsets(obj.text());
      int64_t n = int64_t(off.size()) - 1;
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined(fmt::format("str object has no element {}", to_text(key)));
      Str s;
      s.text = obj.text().substr(off[size_t(i)], off[size_t(i) + 1] - off[size_t(i)]);
      s.tags = obj.str->tags.substr(off[size_t(i)], off[size_t(i) + 1] - off[size_t(i)]);
      return Value::of_str(std::move(s));
    }
    default: return Value::undefined(fmt::format("'{}' object has no element {}", type_name(obj), repr(key)));
  }
}

Value slice(Renderer& r, const Value& obj, const Value& start, const Value& stop, const Value& stepv) {
  if (obj.is_undefined()) throw Fault{undefined_message(obj)};
  if (obj.kind != Kind::kList && obj.kind != Kind::kString)
    throw Fault{fmt::format("'{}' object is not subscriptable", type_name(obj))};
  std::vector<size_t> off;
  int64_t n;
  if (obj.kind == Kind::kList) n = int64_t(obj.list->size());
  else {
    off = code_point_offsets(obj.text());
    n = int64_t(off.size()) - 1;
  }
  int64_t st = stepv.is_none() ? 1 : as_int(stepv, "slice step");
  if (st == 0) throw Fault{"slice step cannot be zero"};
  auto norm = [&](const Value& v, int64_t def) -> int64_t {
    if (v.is_none()) return def;
    int64_t i = as_int(v, "slice index");
    if (i < 0) i += n;
    if (st > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t b = norm(start, st > 0 ? 0 : n - 1), e = norm(stop, st > 0 ? n : -1);
  std::vector<int64_t> idx;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) idx.push_back(i);
  if (obj.kind == Kind::kList) {
    List out;
    for (int64_t i : idx) out.push_back((*obj.list)[size_t(i)]);
    return Value::of_list(std::move(out));
  }
  Str s;
  for (int64_t i : idx) {
    size_t a = off[size_t(i)], len = off[size_t(i) + 1] - a;
    s.text.append(obj.text(), a, len);
    s.tags.append(obj.str->tags, a, len);
  }
  charge(r, s.text.size());
  return Value::of_str(std::move(s));
}

Value negate(const Value& v) {
  if (v.kind == Kind::kInt || v.kind == Kind::kBool) {
    int64_t i = v.kind == Kind::kBool ? v.boolean : v.integer;
    if (i == INT64_MIN) throw Fault{"integer overflow"};
    return Value::of_int(-i, v.is_data);
  }
  if (v.kind == Kind::kFloat) return Value::of_float(-v.number, v.is_data);
  if (v.is_undefined()) throw Fault{undefined_message(v)};
  throw Fault{fmt::format("bad operand type for unary -: '{}'", type_name(v))};
}

Value binary_op(Renderer& r, const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    Str s = to_str(a);
    s.append(to_str(b));
    charge(r, s.text.size());
    return Value::of_str(std::move(s));
  }
  if (op == "==") return Value::of_bool(equals(a, b));
  if (op == "!=") return Value::of_bool(!equals(a, b));
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string())
        throw Fault{fmt::format("'in <string>' requires string as left operand, not {}", type_name(a))};
      found = b.text().find(a.text()) != std::string::npos;
    } else if (b.kind == Kind::kList) {
      found = std::any_of(b.list->begin(), b.list->end(), [&](const Value& e) { return equals(e, a); });
    } else if (b.kind == Kind::kDict) {
      found = a.is_string() && b.find(a.text());
    } else if (!b.is_undefined()) {
      throw Fault{fmt::format("argument of type '{}' is not iterable", type_name(b))};
    }
    return Value::of_bool(op == "in" ? found : !found);
  }
  if (op == "<" || op == "<=" || op == ">" || op == ">=") {
    int c = compare(a, b);
    bool res = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
    return Value::of_bool(res);
  }
  if (a.is_undefined()) throw Fault{undefined_message(a)};
  if (b.is_undefined()) throw Fault{undefined_message(b)};
  bool data = a.is_data || b.is_data;
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      Str s = *a.str;
      s.append(*b.str);
      charge(r, s.text.size());
      return Value::of_str(std::move(s));
    }
    if (a.kind == Kind::kList && b.kind == Kind::kList) {
      List l = *a.list;
      l.insert(l.end(), b.list->begin(), b.list->end());
      charge(r, l.size() * sizeof(Value));
      return Value::of_list(std::move(l));
    }
  }
  if (op == "*" && (a.is_string() || a.kind == Kind::kList || b.is_string() || b.kind == Kind::kList)) {
    const Value& seq = (a.is_string() || a.kind == Kind::kList) ? a : b;
    const Value& cnt = &seq == &a ? b : a;
    if (cnt.kind != Kind::kInt && cnt.kind != Kind::kBool)
      throw Fault{fmt::format("can't multiply sequence by non-int of type '{}'", type_name(cnt))};
    int64_t n = std::max<int64_t>(0, cnt.kind == Kind::kBool ? cnt.boolean : cnt.integer);
    if (seq.is_string()) {
      size_t total = seq.text().size() * size_t(std::min<int64_t>(n, int64_t(1) << 40));
      if (seq.text().size() && (n > int64_t(1) << 40 || total / seq.text().size() != size_t(n)))
        throw Fault{"string repetition too large"};
      charge(r, total);
      Str s;
      for (int64_t i = 0; i < n; ++i) s.append(*seq.str);
      return Value::of_str(std::move(s));
    }
    charge(r, seq.list->size() * size_t(std::min<int64_t>(n, int64_t(1) << 30)) * sizeof(Value));
    List l;
    for (int64_t i = 0; i < n; ++i) l.insert(l.end(), seq.list->begin(), seq.list->end());
    return Value::of_list(std::move(l));
  }
  if (!a.is_number() || !b.is_number())
    throw Fault{
        fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b))};
  bool ints = a.kind != Kind::kFloat && b.kind != Kind::kFloat;
  int64_t x = a.kind == Kind::kBool ? a.boolean : a.integer,
          y = b.kind == Kind::kBool ? b.boolean : b.integer;
  double p = as_double(a), q = as_double(b);
  int64_t res;
  if (op == "+") {
    if (!ints) return Value::of_float(p + q, data);
    if (__builtin_add_overflow(x, y, &res)) throw Fault{"integer overflow"};
    return Value::of_int(res, data);
  }
  if (op == "-") {
    if (!ints) return Value::of_float(p - q, data);
    if (__builtin_sub_overflow(x, y, &res)) throw Fault{"integer overflow"};
    return Value::of_int(res, data);
  }
  if (op == "*") {
    if (!ints) return Value::of_float(p * q, data);
    if (__builtin_mul_overflow(x, y, &res)) throw Fault{"integer overflow"};
    return Value::of_int(res, data);
  }
  if (op == "/") {
    if (q == 0) throw Fault{"division by zero"};
    return Value::of_float(p / q, data);
  }
  if (op == "//" || op == "%") {
    if (q == 0) throw Fault{op == "%" ? "integer modulo by zero" : "integer division or modulo by zero"};
    if (ints) {
      if (x == INT64_MIN && y == -1) throw Fault{"integer overflow"};
      int64_t d = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {
        --d;
        m += y;
      }
      return Value::of_int(op == "//" ? d : m, data);
    }
    double m = std::fmod(p, q);
    if (m != 0 && ((m < 0) != (q < 0))) m += q;
    if (op == "%") return Value::of_float(m, data);
    return Value::of_float(std::floor(p / q), data);
  }
  if (op == "**") {
    if (ints && y >= 0) {
      long double v = std::pow(static_cast<long double>(x), static_cast<long double>(y));
      return checked_int(v);
    }
    return Value::of_float(std::pow(p, q), data);
  }
  throw Fault{fmt::format("unknown operator {}", op)};
}

Value builtin_range(Renderer& r, Args& a) {
  int64_t start = 0, stop, st = 1;
  if (a.positional.size() == 1) stop = as_int(a.positional[0], "range()");
  else if (a.positional.size() == 2 || a.positional.size() == 3) {
    start = as_int(a.positional[0], "range()");
    stop = as_int(a.positional[1], "range()");
    if (a.positional.size() == 3) st = as_int(a.positional[2], "range()");
  } else throw Fault{"range expected 1 to 3 arguments"};
  if (st == 0) throw Fault{"range() arg 3 must not be zero"};
  // jinja2's sandbox: MAX_RANGE = 100000
  long double count = st > 0 ? std::ceil((static_cast<long double>(stop) - start) / st)
                             : std::ceil((static_cast<long double>(start) - stop) / -st);
  if (count > 100000) throw Fault{"Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000)."};
  List out;
  for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) out.push_back(Value::of_int(i));
  charge(r, out.size() * sizeof(Value));
  return Value::of_list(std::move(out));
}

Value builtin_strftime_now(Renderer& r, Args& a) {
  Value f = a.get(0, "format");
  if (!f.is_string()) throw Fault{"strftime_now() takes a format string"};
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  std::string buf(256 + f.text().size() * 8, '\0');
  size_t n = std::strftime(buf.data(), buf.size(), f.text().c_str(), &tm);
  buf.resize(n);
  return str_result(r, std::move(buf), false);
}

bool apply_test(Renderer& r, const std::string& name, const Value& v, Args& a) {
  Value arg = a.get(0, "other");
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == Kind::kInt;
  if (name == "float") return v.kind == Kind::kFloat;
  if (name == "boolean") return v.kind == Kind::kBool;
  if (name == "true") return v.kind == Kind::kBool && v.boolean;
  if (name == "false") return v.kind == Kind::kBool && !v.boolean;
  if (name == "mapping") return v.kind == Kind::kDict;
  if (name == "iterable")
    return v.kind == Kind::kList || v.kind == Kind::kDict || v.is_string() || v.is_undefined();
  if (name == "sequence")
    return v.kind == Kind::kList || v.kind == Kind::kDict || v.is_string() || v.is_undefined();
  if (name == "callable") return v.kind == Kind::kFunc;
  if (name == "sameas") {
    if (v.kind != arg.kind) return false;
    switch (v.kind) {
      case Kind::kNone:
      case Kind::kUndefined: return true;
      case Kind::kBool: return v.boolean == arg.boolean;
      case Kind::kInt:
        return v.integer == arg.integer && v.integer >= -5 && v.integer <= 256;  // CPython's small ints
      case Kind::kList: return v.list == arg.list;
      case Kind::kDict:
      case Kind::kNamespace: return v.dict == arg.dict;
      case Kind::kString: return v.str == arg.str;
      default: return false;
    }
  }
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, arg);
  if (name == "ne" || name == "!=") return !equals(v, arg);
  if (name == "lt" || name == "lessthan" || name == "<") return compare(v, arg) < 0;
  if (name == "le" || name == "<=") return compare(v, arg) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return compare(v, arg) > 0;
  if (name == "ge" || name == ">=") return compare(v, arg) >= 0;
  if (name == "in") return truthy(binary_op(r, "in", v, a.get(0, "seq")));
  if (name == "odd" || name == "even" || name == "divisibleby") {
    int64_t x = as_int(v, name.c_str());
    if (name == "odd") return x % 2 != 0;
    if (name == "even") return x % 2 == 0;
    int64_t d = as_int(a.get(0, "num"), "divisibleby");
    if (d == 0) throw Fault{"integer division or modulo by zero"};
    return x % d == 0;
  }
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    std::string t = to_text(v);
    return name == "lower" ? py_islower(t) : py_isupper(t);  // str(value).islower() / isupper()
  }
  if (name == "escaped") return false;
  if (name == "filter" || name == "test") return false;
  throw Fault{fmt::format("No test named '{}'.", name)};
}

Value apply_filter(Renderer& r, const std::string& name, const Value& v, Args& a) {
  auto text_in = [&]() -> std::string { return to_text(v); };
  if (name == "tojson") {
    Value ind = a.get(0, "indent");
    int indent = -1;
    std::string ind_str;
    if (ind.kind == Kind::kInt) {
      indent = int(std::clamp<int64_t>(ind.integer, 0, 1 << 16));
      ind_str.assign(size_t(indent), ' ');
    } else if (ind.is_string()) {
      indent = 1;
      ind_str = ind.text();
    } else if (!ind.is_none() && !ind.is_undefined()) {
      throw Fault{"tojson: indent must be an int or a string"};
    }
    std::string item_sep = indent >= 0 ? "," : ", ", key_sep = ": ";
    Value seps = a.get(2, "separators");
    if (seps.kind == Kind::kList && seps.list->size() == 2 && (*seps.list)[0].is_string() &&
        (*seps.list)[1].is_string()) {
      item_sep = (*seps.list)[0].text();
      key_sep = (*seps.list)[1].text();
    }
    bool sort_keys = truthy(a.get(3, "sort_keys"));
    std::string out;
    try {
      out = to_json_text(v, indent, ind_str, item_sep, key_sep, sort_keys);
    } catch (const Error& e) {
      throw Fault{e.what()};
    }
    return str_result(r, std::move(out), any_value(v));
  }
  if (name == "trim") return str_result(r, py_strip(text_in(), a.get(0, "chars"), true, true), any_value(v));
  if (name == "length" || name == "count") return Value::of_int(int64_t(py_len(v)));
  if (name == "safe" || name == "string") {
    if (v.is_string()) return v;
    return Value::of_str(to_str(v));
  }
  if (name == "e" || name == "escape") return str_result(r, html_escape(text_in()), any_value(v));
  if (name == "upper") return str_result(r, py_upper(text_in()), any_value(v));
  if (name == "lower") return str_result(r, py_lower(text_in()), any_value(v));
  if (name == "capitalize") return str_result(r, py_capitalize(text_in()), any_value(v));
  if (name == "title") return str_result(r, jinja_title(text_in()), any_value(v));  // not str.title()
  if (name == "replace") {
    Value o = a.get(0, "old"), n = a.get(1, "new");
    int64_t count =
        a.has(2, "count") && !a.get(2, "count").is_none() ? as_int(a.get(2, "count"), "count") : -1;
    return str_result(r, py_replace(r, text_in(), to_text(o), to_text(n), count),
                      any_value(v) || any_value(n));
  }
  if (name == "default" || name == "d") {
    bool boolean = truthy(a.get(1, "boolean"));
    if (v.is_undefined() || (boolean && !truthy(v)))
      return a.has(0, "default_value") ? a.get(0, "default_value") : Value::of_str("", false);
    return v;
  }
  if (name == "first" || name == "last") {
    List items = seq_of(v, name).list ? *seq_of(v, name).list : List{};
    if (items.empty()) return Value::undefined(fmt::format("No {} item, sequence was empty.", name));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return seq_of(v, name);
  if (name == "reverse") {
    if (v.is_string()) {
      List chars = iterate(v);
      Str s;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) s.append(*it->str);
      return Value::of_str(std::move(s));
    }
    List l = iterate(seq_of(v, name));
    std::reverse(l.begin(), l.end());
    return Value::of_list(std::move(l));
  }
  if (name == "join") {
    Value sep = a.get(0, "d");
    Value attr = a.get(1, "attribute");
    Str s;
    List items = iterate(seq_of(v, name));
    Str sep_s = sep.is_undefined() ? Str() : to_str(sep);
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) s.append(sep_s);
      s.append(
          to_str(attr.is_undefined() || attr.is_none() ? items[i] : attr_path(r, items[i], to_text(attr))));
      charge(r, s.text.size());
    }
    return Value::of_str(std::move(s));
  }
  if (name == "map") {
    List items = iterate(seq_of(v, name)), out;
    Value attr = a.get(99, "attribute");
    if (!attr.is_undefined()) {
      Value def = a.get(99, "default");
      for (const Value& it : items) {
        Value x = attr_path(r, it, to_text(attr));
        out.push_back(x.is_undefined() && !def.is_undefined() ? def : x);
      }
    } else {
      if (a.positional.empty()) throw Fault{"map requires a filter argument"};
      std::string f = to_text(a.positional[0]);
      Args rest;
      rest.positional.assign(a.positional.begin() + 1, a.positional.end());
      rest.named = a.named;
      for (const Value& it : items) out.push_back(apply_filter(r, f, it, rest));
    }
    return Value::of_list(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    bool by_attr = name == "selectattr" || name == "rejectattr";
    bool keep_if = name == "select" || name == "selectattr";
    size_t i0 = 0;
    std::string attr;
    if (by_attr) {
      if (a.positional.empty()) throw Fault{fmt::format("{} requires an attribute name", name)};
      attr = to_text(a.positional[0]);
      i0 = 1;
    }
    std::string test = a.positional.size() > i0 ? to_text(a.positional[i0]) : "";
    Args targs;
    if (a.positional.size() > i0 + 1)
      targs.positional.assign(a.positional.begin() + long(i0) + 1, a.positional.end());
    List out;
    for (const Value& it : iterate(seq_of(v, name))) {
      Value x = by_attr ? attr_path(r, it, attr) : it;
      bool ok = test.empty() ? truthy(x) : apply_test(r, test, x, targs);
      if (ok == keep_if) out.push_back(it);
    }
    return Value::of_list(std::move(out));
  }
  if (name == "int") {
    Value def = a.has(0, "default") ? a.get(0, "default") : Value::of_int(0);
    switch (v.kind) {
      case Kind::kInt: return v;
      case Kind::kBool: return Value::of_int(v.boolean, v.is_data);
      case Kind::kFloat: return std::isfinite(v.number) ? checked_int(std::trunc(v.number)) : def;
      case Kind::kString: {
        std::string t = py_strip(v.text(), Value(), true, true);
        try {
          size_t used = 0;
          long long x = std::stoll(t, &used, 10);
          if (used == t.size()) return Value::of_int(x);
          double d = std::stod(t, &used);
          if (used == t.size() && std::isfinite(d)) return checked_int(std::trunc(d));
        } catch (const std::exception&) {
        }
        return def;
      }
      default: return def;
    }
  }
  if (name == "float") {
    Value def = a.has(0, "default") ? a.get(0, "default") : Value::of_float(0.0);
    if (v.is_number()) return Value::of_float(as_double(v), v.is_data);
    if (v.is_string()) {
      try {
        size_t used = 0;
        std::string t = py_strip(v.text(), Value(), true, true);
        double d = std::stod(t, &used);
        if (used == t.size()) return Value::of_float(d);
      } catch (const std::exception&) {
      }
    }
    return def;
  }
  if (name == "abs") {
    if (v.kind == Kind::kFloat) return Value::of_float(std::fabs(v.number), v.is_data);
    if (v.kind == Kind::kInt || v.kind == Kind::kBool)
      return v.integer < 0 ? negate(v)
                           : Value::of_int(v.kind == Kind::kBool ? v.boolean : v.integer, v.is_data);
    throw Fault{fmt::format("bad operand type for abs(): '{}'", type_name(v))};
  }
  if (name == "round") {
    int64_t prec = a.has(0, "precision") ? as_int(a.get(0, "precision"), "precision") : 0;
    std::string method = a.has(1, "method") ? to_text(a.get(1, "method")) : "common";
    if (!v.is_number()) throw Fault{"round: value must be a number"};
    double x = as_double(v), m = std::pow(10.0, double(prec));
    // common: Python's round(), half to even
    double res = method == "ceil"    ? std::ceil(x * m) / m
                 : method == "floor" ? std::floor(x * m) / m
                                     : std::nearbyint(x * m) / m;
    if (method != "common" && method != "ceil" && method != "floor")
      throw Fault{"method must be common, ceil or floor"};
    return Value::of_float(res, v.is_data);
  }
  if (name == "indent") {
    Value w = a.get(0, "width");
    std::string ind =
        w.is_string()
            ? w.text()
            : std::string(size_t(std::clamp<int64_t>(w.is_undefined() ? 4 : as_int(w, "width"), 0, 1 << 16)),
                          ' ');
    bool first = truthy(a.get(1, "first")), blank = truthy(a.get(2, "blank"));
    std::string s = text_in() + "\n";
    std::vector<std::string> lines;
    size_t st = 0;
    for (size_t i = 0; i < s.size(); ++i)
      if (s[i] == '\n' || s[i] == '\r') {
        lines.push_back(s.substr(st, i - st));
        if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        st = i + 1;
      }
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) out += "\n";
      if (i && (blank || !lines[i].empty())) out += ind;
      out += lines[i];
      charge(r, ind.size() + lines[i].size());
    }
    if (first) out = ind + out;
    return str_result(r, std::move(out), any_value(v));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::of_list({});
    if (v.kind != Kind::kDict) throw Fault{"items: can only get item pairs from a mapping."};
    Args none;
    return call(r, dict_method(v, "items"), none);
  }
  if (name == "dictsort") {
    if (v.kind != Kind::kDict) throw Fault{"dictsort: value must be a dict"};
    bool cs = truthy(a.get(0, "case_sensitive"));
    bool by_value = to_text(a.get(1, "by")) == "value";
    bool rev = truthy(a.get(2, "reverse"));
    List pairs;
    for (const auto& [k, e] : *v.dict) {
      pairs.push_back(Value::of_list({Value::of_str(k), e}));
      pairs.back().is_tuple = true;
    }
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
      int c = compare(lower_for_compare((*x.list)[by_value], cs), lower_for_compare((*y.list)[by_value], cs));
      return rev ? c > 0 : c < 0;
    });
    return Value::of_list(std::move(pairs));
  }
  if (name == "sort" || name == "unique" || name == "min" || name == "max") {
    bool cs = truthy(a.get(name == "sort" ? 1 : 0, "case_sensitive"));
    bool rev = name == "sort" && truthy(a.get(0, "reverse"));
    Value attr = a.get(name == "sort" ? 2 : 1, "attribute");
    List items = iterate(seq_of(v, name));
    auto key = [&](const Value& x) {
      return lower_for_compare(attr.is_undefined() || attr.is_none() ? x : attr_path(r, x, to_text(attr)),
                               cs);
    };
    if (name == "unique") {
      List out, keys;
      for (const Value& it : items) {
        Value k = key(it);
        if (std::none_of(keys.begin(), keys.end(), [&](const Value& o) { return equals(o, k); })) {
          keys.push_back(k);
          out.push_back(it);
        }
      }
      return Value::of_list(std::move(out));
    }
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      int c = compare(key(x), key(y));
      return rev ? c > 0 : c < 0;
    });
    if (name == "sort") return Value::of_list(std::move(items));
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    return name == "min" ? items.front() : items.back();
  }
  if (name == "sum") {
    Value attr = a.get(0, "attribute");
    Value acc = a.has(1, "start") ? a.get(1, "start") : Value::of_int(0);
    for (const Value& it : iterate(seq_of(v, name)))
      acc = binary_op(r, "+", acc,
                      attr.is_undefined() || attr.is_none() ? it : attr_path(r, it, to_text(attr)));
    return acc;
  }
  if (name == "wordcount") return Value::of_int(int64_t(py_split(text_in(), Value(), -1).size()));
  if (name == "attr") return get_attr(r, v, to_text(a.get(0, "name")));
  throw Fault{fmt::format("No filter named '{}'.", name)};
}

}  // namespace sickle::tmpl
