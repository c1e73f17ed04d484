// sickle/tokenizer/kimi_tools.cpp — Kimi-K2.5's TypeScript-style tool declaration.
//
// Kimi-K2.5's tokenizer (tokenization_kimi.py apply_chat_template) deep-sorts the tools'
// keys, converts them with tool_declaration_ts.py (encode_tools_to_typescript_style) and
// passes the result to the chat template as `tools_ts_str`, which then fills the
// tool_declare turn; when conversion fails the template falls back to JSON. This is an
// independent C++ rendering of the same output for JSON-Schema parameters:
//   # Tools\n\n## functions\nnamespace functions {\n<fn>\n<fn>...\n}\n
// with each function `[interfaces\n][// description\n]type NAME = (_: {...}) => any;`.
// nlohmann::json objects iterate in sorted key order, which is exactly the deep sort.
#include <algorithm>
#include <map>
#include <set>

#include "base/error.h"
#include "tokenizer/chat.h"

namespace sickle {

namespace {

using json = nlohmann::json;
constexpr const char* kIndent = "  ";

// Python's str()/repr() of a JSON scalar (what the reference prints in comments and enums).
std::string py_str(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  return v.dump();
}

// Python json.dumps(x, ensure_ascii=False): ", " and ": " separators.
std::string py_json(const json& v) {
  if (v.is_object()) {
    std::string s = "{";
    bool first = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!first) s += ", ";
      first = false;
      s += json(it.key()).dump() + ": " + py_json(it.value());
    }
    return s + "}";
  }
  if (v.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + py_json(v[i]);
    return s + "]";
  }
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string format_description(const std::string& d, const std::string& indent) {
  std::string out;
  size_t start = 0;
  while (true) {
    size_t nl = d.find('\n', start);
    std::string line = d.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (!line.empty()) out += indent + "// " + line;
    if (nl == std::string::npos) break;
    out += "\n";
    start = nl + 1;
  }
  return out;
}

struct Registry {
  json definitions = json::object();
  bool has_self_ref = false;
};

struct Type;
using TypePtr = std::unique_ptr<Type>;
TypePtr parse_type(const json& schema, Registry& reg);

struct Param {
  std::string name;
  TypePtr type;
  bool optional = true;
  json default_value;  // null = none
  std::string to_ts(const std::string& indent) const;
};

struct Type {
  enum Kind { kScalar, kObject, kArray, kEnum, kAnyOf, kUnion, kRef } kind = kScalar;
  std::string description;
  std::vector<std::pair<std::string, json>> constraints;  // sorted by key
  std::string scalar;                                     // kScalar type name, kRef name
  std::vector<Param> properties;                          // kObject
  json additional = nullptr;                              // kObject: null (absent), bool
  TypePtr additional_type;                                // kObject: additionalProperties schema
  TypePtr item;                                           // kArray
  json enum_values;                                       // kEnum
  std::vector<TypePtr> alternatives;                      // kAnyOf
  std::vector<std::string> union_names;                   // kUnion

  void base(const json& props, std::initializer_list<const char*> allowed) {
    if (props.is_object()) {
      if (props.contains("description") && props["description"].is_string())
        description = props["description"].get<std::string>();
      for (const char* k : allowed)
        if (props.contains(k)) constraints.emplace_back(k, props[k]);
      std::sort(constraints.begin(), constraints.end(), [](auto& a, auto& b) { return a.first < b.first; });
    }
  }

  std::string docstring(const std::string& indent) const {
    std::string out;
    if (!description.empty()) out += format_description(description, indent) + "\n";
    if (!constraints.empty()) {
      out += indent + "// ";
      for (size_t i = 0; i < constraints.size(); ++i)
        out += (i ? ", " : "") + constraints[i].first + ": " + py_str(constraints[i].second);
      out += "\n";
    }
    return out;
  }

  std::string to_ts(const std::string& indent) const {
    switch (kind) {
      case kScalar: return scalar == "integer" ? "number" : scalar;
      case kRef: return scalar;
      case kObject: {
        std::vector<const Param*> order;
        for (bool opt : {false, true}) {
          std::vector<const Param*> group;
          for (const auto& p : properties)
            if (p.optional == opt) group.push_back(&p);
          std::sort(group.begin(), group.end(), [](auto* a, auto* b) { return a->name < b->name; });
          order.insert(order.end(), group.begin(), group.end());
        }
        std::vector<std::string> parts;
        for (const Param* p : order) parts.push_back(p->to_ts(indent + kIndent));
        if (additional_type) {
          parts.push_back(indent + kIndent + "[k: string]: " + additional_type->to_ts(indent + kIndent));
        } else if (additional.is_boolean()) {
          parts.push_back(indent + kIndent + "[k: string]: " + (additional.get<bool>() ? "any" : "never"));
        }
        if (parts.empty()) return "{}";
        std::string s = "{\n";
        for (size_t i = 0; i < parts.size(); ++i) s += (i ? ",\n" : "") + parts[i];
        return s + "\n" + indent + "}";
      }
      case kArray: {
        std::string doc = item->docstring(indent + kIndent);
        if (!doc.empty())
          return "Array<\n" + doc + indent + kIndent + item->to_ts(indent + kIndent) + "\n" + indent + ">";
        return "Array<" + item->to_ts(indent) + ">";
      }
      case kEnum: {
        std::string s;
        for (size_t i = 0; i < enum_values.size(); ++i) {
          const auto& e = enum_values[i];
          s += (i ? " | " : "") + (e.is_string() ? "\"" + e.get<std::string>() + "\"" : py_str(e));
        }
        return s;
      }
      case kAnyOf: {
        std::string s;
        for (size_t i = 0; i < alternatives.size(); ++i)
          s += (i ? " | " : "") + alternatives[i]->to_ts(indent);
        return s;
      }
      case kUnion: {
        std::string s;
        for (size_t i = 0; i < union_names.size(); ++i) s += (i ? " | " : "") + union_names[i];
        return s;
      }
    }
    return {};
  }
};

std::string Param::to_ts(const std::string& indent) const {
  std::string comments = type->docstring(indent);
  if (!default_value.is_null()) {
    // repr() for int/float/bool, json.dumps for the rest.
    std::string r = default_value.is_number() || default_value.is_boolean() ? py_str(default_value)
                                                                            : py_json(default_value);
    comments += indent + "// Default: " + r + "\n";
  }
  return comments + indent + name + (optional ? "?" : "") + ": " + type->to_ts(indent);
}

TypePtr make_object(const json& schema, Registry& reg) {
  auto t = std::make_unique<Type>();
  t->kind = Type::kObject;
  t->base(schema, {});
  if (!schema.is_object() || schema.empty()) return t;
  if (schema.contains("$defs") && schema["$defs"].is_object())
    for (auto it = schema["$defs"].begin(); it != schema["$defs"].end(); ++it)
      reg.definitions[it.key()] = it.value();
  if (schema.contains("additionalProperties")) {
    const auto& ap = schema["additionalProperties"];
    if (ap.is_object()) t->additional_type = parse_type(ap, reg);
    else if (ap.is_boolean()) t->additional = ap;
    else if (!ap.is_null()) fail("additionalProperties {} is not supported", ap.dump());
  }
  if (!schema.contains("properties")) return t;
  if (!schema["properties"].is_object()) fail("properties must be an object");
  std::set<std::string> required;
  if (schema.contains("required") && schema["required"].is_array())
    for (const auto& r : schema["required"])
      if (r.is_string()) required.insert(r.get<std::string>());
  for (auto it = schema["properties"].begin(); it != schema["properties"].end(); ++it) {
    Param p;
    p.name = it.key();
    p.type = parse_type(it.value(), reg);
    p.optional = !required.count(p.name);
    if (it.value().is_object() && it.value().contains("default")) p.default_value = it.value()["default"];
    t->properties.push_back(std::move(p));
  }
  return t;
}

TypePtr parse_type(const json& schema, Registry& reg) {
  auto t = std::make_unique<Type>();
  if (schema.is_boolean()) {
    t->scalar = schema.get<bool>() ? "any" : "null";
    return t;
  }
  if (!schema.is_object()) fail("invalid JSON Schema {}", schema.dump());
  if (schema.contains("$ref")) {
    if (!schema["$ref"].is_string()) fail("$ref must be a string");
    std::string ref = schema["$ref"].get<std::string>();
    t->kind = Type::kRef;
    t->base(schema, {});
    if (ref == "#") {
      reg.has_self_ref = true;
      t->scalar = "parameters";
    } else if (ref.rfind("#/$defs/", 0) == 0) {
      std::string name = ref.substr(ref.rfind('/') + 1);
      if (!reg.definitions.contains(name)) fail("reference not found: {}", ref);
      t->scalar = name;
    } else {
      fail("unsupported reference format: {}", ref);
    }
    return t;
  }
  if (schema.contains("anyOf")) {
    t->kind = Type::kAnyOf;
    t->base(schema, {});
    if (!schema["anyOf"].is_array()) fail("anyOf must be a list");
    for (const auto& s : schema["anyOf"]) t->alternatives.push_back(parse_type(s, reg));
    return t;
  }
  if (schema.contains("enum")) {
    t->kind = Type::kEnum;
    t->base(schema, {});
    t->enum_values = schema["enum"];
    if (!t->enum_values.is_array()) fail("enum must be a list");
    if (schema.contains("type")) {  // the reference validates the values against the type
      json typ = schema["type"];
      if (typ.is_array()) {
        if (typ.size() == 1) typ = typ[0];
        else if (typ.size() == 2 && (typ[0] == "null" || typ[1] == "null"))
          typ = typ[0] != "null" ? typ[0] : typ[1];
        else fail("enum type {} is not supported", typ.dump());
      }
      for (const auto& v : t->enum_values) {
        if (v.is_null()) continue;
        bool ok = typ == "string"    ? v.is_string()
                  : typ == "number"  ? v.is_number()
                  : typ == "integer" ? (v.is_number_integer() || v.is_boolean())
                  : typ == "boolean" ? v.is_boolean()
                                     : true;
        if (!ok) fail("enum value {} does not match type {}", v.dump(), typ.dump());
      }
    }
    return t;
  }
  if (schema.contains("type")) {
    const auto& typ = schema["type"];
    if (typ.is_array()) {
      t->kind = Type::kUnion;
      t->base(schema, {});
      static const std::map<std::string, std::string> names = {
          {"string", "string"}, {"number", "number"}, {"integer", "number"},  {"boolean", "boolean"},
          {"null", "null"},     {"object", "{}"},     {"array", "Array<any>"}};
      for (const auto& n : typ) {
        auto it = n.is_string() ? names.find(n.get<std::string>()) : names.end();
        if (it == names.end()) fail("union type {} is not supported", n.dump());
        t->union_names.push_back(it->second);
      }
      return t;
    }
    if (!typ.is_string()) fail("type must be a string or a list");
    std::string ty = typ.get<std::string>();
    if (ty == "object") return make_object(schema, reg);
    if (ty == "array") {
      t->kind = Type::kArray;
      t->base(schema, {"maxItems", "minItems"});
      bool has_items = schema.contains("items") && !schema["items"].is_null() &&
                       !(schema["items"].is_object() && schema["items"].empty()) &&
                       !(schema["items"].is_boolean() && !schema["items"].get<bool>());
      if (has_items) {
        t->item = parse_type(schema["items"], reg);
      } else {
        t->item = std::make_unique<Type>();
        t->item->scalar = "any";
      }
      return t;
    }
    t->scalar = ty;
    if (ty == "string") t->base(schema, {"maxLength", "minLength", "pattern"});
    else if (ty == "number" || ty == "integer") t->base(schema, {"maximum", "minimum"});
    else t->base(schema, {});
    return t;
  }
  if (schema.empty()) {
    t->scalar = "any";
    return t;
  }
  fail("invalid JSON Schema object {}", schema.dump().substr(0, 120));
}

std::string function_to_ts(const json& fn) {
  Registry reg;
  json params = fn.contains("parameters") && fn["parameters"].is_object() ? fn["parameters"] : json::object();
  TypePtr parsed = make_object(params, reg);
  std::vector<std::string> interfaces;
  bool root_self = reg.has_self_ref;
  if (root_self) {
    std::string ps;
    for (size_t i = 0; i < parsed->properties.size(); ++i)
      ps += (i ? ",\n" : "") + parsed->properties[i].to_ts(kIndent);
    interfaces.push_back("interface parameters {" + (ps.empty() ? std::string() : "\n" + ps + "\n") + "}");
  }
  json defs = reg.definitions;  // the reference iterates a copy taken here
  for (auto it = defs.begin(); it != defs.end(); ++it) {
    TypePtr t = parse_type(it.value(), reg);
    std::string desc;
    if (it.value().is_object() && it.value().contains("description") &&
        it.value()["description"].is_string() && !it.value()["description"].get<std::string>().empty())
      desc = format_description(it.value()["description"].get<std::string>(), "") + "\n";
    interfaces.push_back(desc + "interface " + it.key() + " " + t->to_ts(""));
  }
  std::string name =
      fn.contains("name") && fn["name"].is_string() ? fn["name"].get<std::string>() : "function";
  std::string type_def = root_self ? "type " + name + " = (_: parameters) => any;"
                                   : "type " + name + " = (_: " + parsed->to_ts("") + ") => any;";
  std::vector<std::string> parts;
  std::string iface;
  for (size_t i = 0; i < interfaces.size(); ++i) iface += (i ? "\n" : "") + interfaces[i];
  if (!iface.empty()) parts.push_back(iface);
  if (fn.contains("description") && fn["description"].is_string()) {
    std::string d = format_description(fn["description"].get<std::string>(), "");
    if (!d.empty()) parts.push_back(d);
  }
  parts.push_back(type_def);
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? "\n" : "") + parts[i];
  return out;
}

}  // namespace

std::string kimi_tools_typescript(const json& tools) {
  if (!tools.is_array() || tools.empty()) return {};
  std::vector<std::string> fns;
  for (const auto& tool : tools) {
    if (!tool.is_object() || tool.value("type", std::string()) != "function") continue;
    if (!tool.contains("function") || !tool["function"].is_object() || tool["function"].empty()) continue;
    fns.push_back(function_to_ts(tool["function"]));
  }
  if (fns.empty()) return {};
  std::string out = "# Tools\n\n## functions\nnamespace functions {\n";
  for (size_t i = 0; i < fns.size(); ++i) out += (i ? "\n" : "") + fns[i];
  return out + "\n}\n";
}

}  // namespace sickle
