// sickle/template/builtins.h — operators, attribute / item lookup, filters, tests and methods
// of the template engine (Python / jinja2 semantics), shared by render.cpp.
#pragma once

#include <string>
#include <string_view>

#include "template/value.h"

namespace sickle::tmpl {

// A runtime error without a position yet: the evaluator adds template line and column.
struct Fault {
  std::string msg;
  bool is_raise = false;  // raise_exception() from the template itself
};

// Renderer services (render.cpp): string budget, step budget, calling a callable.
void charge(Renderer& r, size_t bytes);
void step(Renderer& r);
Value call(Renderer& r, const Value& f, Args& a);

std::string undefined_message(const Value& undefined);
void dict_set(Dict& d, const Str& key, Value v);
List iterate(const Value& v);  // Python iter(): list items, dict keys, string characters; Undefined: empty

Value get_attr(Renderer& r, const Value& obj, const std::string& name);
Value get_item(Renderer& r, const Value& obj, const Value& key);
Value slice(Renderer& r, const Value& obj, const Value& start, const Value& stop, const Value& step);
Value negate(const Value& v);
Value binary_op(Renderer& r, const std::string& op, const Value& a, const Value& b);
Value apply_filter(Renderer& r, const std::string& name, const Value& v, Args& a);
bool apply_test(Renderer& r, const std::string& name, const Value& v, Args& a);

Value builtin_range(Renderer& r, Args& a);
Value builtin_strftime_now(Renderer& r, Args& a);

}  // namespace sickle::tmpl
