// sickle/template/render.cpp — the evaluator: statements, expressions, attribute / item
// lookup with jinja2's rules (sandbox.py + environment.py getattr/getitem), calls, macros,
// budgets. Filters, tests and methods live in builtins.cpp.
#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "template/ast.h"
#include "template/builtins.h"
#include "template/template.h"

namespace sickle::tmpl {

Template::Template(std::string_view source, std::string name)
    : program_(parse_template(source, std::move(name))) {}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;
const std::string& Template::name() const { return program_->name; }
bool Template::uses_tools_ts_str() const { return program_->uses_tools_ts_str; }

struct Frame {
  std::vector<std::pair<std::string, Value>> vars;
  std::shared_ptr<Frame> parent;

  const Value* find(std::string_view n) const {
    for (const Frame* f = this; f; f = f->parent.get())
      for (auto it = f->vars.rbegin(); it != f->vars.rend(); ++it)
        if (it->first == n) return &it->second;
    return nullptr;
  }
  void set(const std::string& n, Value v) {
    for (auto& [k, e] : vars)
      if (k == n) {
        e = std::move(v);
        return;
      }
    vars.emplace_back(n, std::move(v));
  }
};

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  Renderer(const Program& p, const Limits& l) : prog_(p), limits_(l) {}

  RenderedPrompt run(const nlohmann::ordered_json& values, const nlohmann::ordered_json& template_values) {
    auto root = std::make_shared<Frame>();
    install_globals(*root);
    if (template_values.is_object())
      for (const auto& [k, v] : template_values.items()) root->set(k, from_json(v, false));
    if (values.is_object())
      for (const auto& [k, v] : values.items()) root->set(k, from_json(v, true));
    Str out;
    out_ = &out;
    Flow f = exec(prog_.body, root);
    if (f != Flow::kNormal) fail("{}: 'break' or 'continue' outside a loop", prog_.name);
    RenderedPrompt rp;
    size_t i = 0;
    while (i < out.text.size()) {
      size_t j = i;
      while (j < out.text.size() && out.tags[j] == out.tags[i]) ++j;
      std::string_view piece(out.text.data() + i, j - i);
      if (out.tags[i]) rp.add_value(piece);
      else rp.add_template(piece);
      i = j;
    }
    return rp;
  }

  // ---- budgets, used by builtins too ----
  void charge(size_t bytes) {
    if (bytes > limits_.max_output_bytes)
      throw Fault{
          fmt::format("string of {} bytes exceeds the {} byte limit", bytes, limits_.max_output_bytes)};
    work_ += bytes;
    if (work_ > limits_.max_work_bytes)
      throw Fault{fmt::format("template built more than {} bytes of strings", limits_.max_work_bytes)};
  }
  void step() {
    if (++steps_ > limits_.max_steps)
      throw Fault{fmt::format("template ran more than {} loop iterations / macro calls", limits_.max_steps)};
  }
  Value call_value(const Value& f, Args& args) {
    if (f.kind == Kind::kFunc) return (*f.func)(*this, args);
    if (f.is_undefined()) throw Fault{undefined_message(f)};
    throw Fault{fmt::format("'{}' object is not callable", type_name(f))};
  }
  const Limits& limits() const { return limits_; }

 private:
  [[noreturn]] void error_at(Pos p, const std::string& msg) const {
    fail("{}:{}:{}: {}", prog_.name, p.line, p.col, msg);
  }

  void emit(const Str& s) {
    if (out_->text.size() + s.text.size() > limits_.max_output_bytes)
      throw Fault{fmt::format("output exceeds the {} byte limit", limits_.max_output_bytes)};
    out_->append(s);
  }

  void install_globals(Frame& f) {
    f.set("range", Value::of_func("range", builtin_range));
    f.set("dict", Value::of_func("dict", [](Renderer&, Args& a) {
            Dict d;
            if (!a.positional.empty()) {
              const Value& src = a.positional[0];
              if (src.kind != Kind::kDict) throw Fault{"dict() takes a mapping"};
              d = *src.dict;
            }
            for (auto& [k, v] : a.named) dict_set(d, Str(k, false), v);
            return Value::of_dict(std::move(d));
          }));
    f.set("namespace", Value::of_func("namespace", [](Renderer&, Args& a) {
            Dict d;
            for (const Value& p : a.positional) {
              if (p.kind != Kind::kDict && p.kind != Kind::kNamespace)
                throw Fault{"namespace() takes a mapping"};
              for (auto& [k, v] : *p.dict) dict_set(d, k, v);
            }
            for (auto& [k, v] : a.named) dict_set(d, Str(k, false), v);
            return Value::of_namespace(std::move(d));
          }));
    f.set("raise_exception", Value::of_func("raise_exception", [](Renderer&, Args& a) -> Value {
            throw Fault{"raise_exception: " + to_text(a.get(0, "message")), true};
          }));
    f.set("strftime_now", Value::of_func("strftime_now", builtin_strftime_now));
  }

  // ---- statements ----
  Flow exec(const Body& body, const std::shared_ptr<Frame>& fr) {
    for (const auto& s : body) {
      Flow f = exec_stmt(*s, fr);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Str render_body(const Body& body, const std::shared_ptr<Frame>& fr) {
    Str buf;
    Str* saved = out_;
    out_ = &buf;
    try {
      exec(body, fr);
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buf;
  }

  Flow exec_stmt(const Stmt& s, const std::shared_ptr<Frame>& fr) {
    try {
      switch (s.type) {
        case Stmt::kText: emit(s.text); return Flow::kNormal;
        case Stmt::kOutput: emit(to_str(eval(*s.expr, *fr))); return Flow::kNormal;
        case Stmt::kIf:
          for (const auto& [c, b] : s.branches)
            if (truthy(eval(*c, *fr))) return exec(b, fr);
          return exec(s.else_body, fr);
        case Stmt::kFor: return exec_for(s, fr);
        case Stmt::kSet: {
          Value v = eval(*s.expr, *fr);
          if (s.is_attr_target) {
            const Value* ns = fr->find(s.targets[0]);
            if (!ns || ns->kind != Kind::kNamespace)
              throw Fault{fmt::format("cannot assign attribute on non-namespace object '{}'", s.targets[0])};
            dict_set(*ns->dict, Str(s.targets[1], false), std::move(v));
          } else {
            assign(*fr, s.targets, v);
          }
          return Flow::kNormal;
        }
        case Stmt::kSetBlock: {
          Value v = Value::of_str(render_body(s.body, fr));
          if (s.filter) {
            const Value* saved = base_;
            base_ = &v;
            Value r = eval(*s.filter, *fr);
            base_ = saved;
            v = r;
          }
          fr->set(s.targets[0], std::move(v));
          return Flow::kNormal;
        }
        case Stmt::kMacro: fr->set(s.name, make_macro(s, fr, nullptr)); return Flow::kNormal;
        case Stmt::kCallBlock: {
          Value caller = make_macro(s, fr, "caller");
          const Expr& call = *s.expr;
          Value callee = eval(*call.kids[0], *fr);
          Args a = eval_args(call, 1, *fr);
          a.named.emplace_back("caller", caller);
          emit(to_str(call_value(callee, a)));
          return Flow::kNormal;
        }
        case Stmt::kFilterBlock: {
          Value body = Value::of_str(render_body(s.body, fr));
          const Value* saved = base_;
          base_ = &body;
          Value r = eval(*s.filter, *fr);
          base_ = saved;
          emit(to_str(r));
          return Flow::kNormal;
        }
        case Stmt::kBody: return exec(s.body, fr);
        case Stmt::kBreak: return Flow::kBreak;
        case Stmt::kContinue: return Flow::kContinue;
      }
    } catch (const Fault& f) {
      error_at(s.pos, f.msg);
    }
    return Flow::kNormal;
  }

  void assign(Frame& fr, const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) {
      fr.set(targets[0], v);
      return;
    }
    List items = iterate(v);
    if (items.size() != targets.size())
      throw Fault{fmt::format("cannot unpack {} values into {} names", items.size(), targets.size())};
    for (size_t i = 0; i < targets.size(); ++i) fr.set(targets[i], items[i]);
  }

  Flow exec_for(const Stmt& s, const std::shared_ptr<Frame>& fr) {
    Value seq = eval(*s.expr, *fr);
    if (seq.kind == Kind::kNone || seq.is_number() || seq.kind == Kind::kFunc || seq.kind == Kind::kNamespace)
      throw Fault{fmt::format("'{}' object is not iterable", type_name(seq))};
    List items = iterate(seq);
    if (s.cond) {
      List kept;
      for (const Value& it : items) {
        step();
        auto f = std::make_shared<Frame>();
        f->parent = fr;
        assign(*f, s.targets, it);
        if (truthy(eval(*s.cond, *f))) kept.push_back(it);
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body, fr);
    size_t n = items.size();
    // `cycle` is shared by all iterations; it reads the index from the loop object.
    for (size_t i = 0; i < n; ++i) {
      step();
      auto f = std::make_shared<Frame>();
      f->parent = fr;
      Dict loop;
      loop.reserve(12);
      auto put = [&](const char* k, Value v) { loop.emplace_back(Str(k, false), std::move(v)); };
      put("index", Value::of_int(int64_t(i + 1)));
      put("index0", Value::of_int(int64_t(i)));
      put("revindex", Value::of_int(int64_t(n - i)));
      put("revindex0", Value::of_int(int64_t(n - i - 1)));
      put("first", Value::of_bool(i == 0));
      put("last", Value::of_bool(i + 1 == n));
      put("length", Value::of_int(int64_t(n)));
      put("depth", Value::of_int(1));
      put("depth0", Value::of_int(0));
      put("previtem", i > 0 ? items[i - 1] : Value::undefined("there is no previous item"));
      put("nextitem", i + 1 < n ? items[i + 1] : Value::undefined("there is no next item"));
      put("cycle", Value::of_func("cycle", [i](Renderer&, Args& a) -> Value {
            if (a.positional.empty()) throw Fault{"no items for cycling given"};
            return a.positional[i % a.positional.size()];
          }));
      Value lv;
      lv.kind = Kind::kDict;
      lv.dict = std::make_shared<Dict>(std::move(loop));
      f->vars.emplace_back("loop", std::move(lv));
      assign(*f, s.targets, items[i]);
      Flow fl = exec(s.body, f);
      if (fl == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  Value make_macro(const Stmt& s, const std::shared_ptr<Frame>& def_frame, const char* as_name) {
    const Stmt* sp = &s;
    std::weak_ptr<Frame> weak = def_frame;  // a macro stored in its own frame must not keep it alive
    std::shared_ptr<Frame> strong = as_name ? def_frame : nullptr;
    std::string name = as_name ? as_name : s.name;
    return Value::of_func(name, [this, sp, weak, strong, name](Renderer&, Args& a) -> Value {
      std::shared_ptr<Frame> parent = strong ? strong : weak.lock();
      step();
      if (++call_depth_ > limits_.max_call_depth) {
        --call_depth_;
        throw Fault{fmt::format("macro calls nested deeper than {}", limits_.max_call_depth)};
      }
      struct Guard {
        int& d;
        ~Guard() { --d; }
      } guard{call_depth_};
      auto f = std::make_shared<Frame>();
      f->parent = parent;
      if (a.positional.size() > sp->params.size())
        throw Fault{fmt::format("macro '{}' takes not more than {} argument(s)", name, sp->params.size())};
      for (size_t i = 0; i < sp->params.size(); ++i) {
        const auto& [pn, def] = sp->params[i];
        if (i < a.positional.size()) {
          f->set(pn, a.positional[i]);
          continue;
        }
        bool found = false;
        for (auto& [k, v] : a.named)
          if (k == pn) {
            f->set(pn, v);
            found = true;
            break;
          }
        if (!found) f->set(pn, def ? eval(*def, *f) : Value::undefined(fmt::format("'{}' is undefined", pn)));
      }
      for (auto& [k, v] : a.named) {
        const std::string& key = k;  // clang 14 cannot capture a structured binding in a lambda
        bool is_param =
            std::any_of(sp->params.begin(), sp->params.end(), [&](const auto& p) { return p.first == key; });
        if (k == "caller") f->set("caller", v);
        else if (!is_param) throw Fault{fmt::format("macro '{}' takes no keyword argument '{}'", name, k)};
      }
      return Value::of_str(render_body(sp->body, f));
    });
  }

  // ---- expressions ----
  Args eval_args(const Expr& e, size_t first, Frame& fr) {
    Args a;
    for (size_t i = first; i < e.kids.size(); ++i) a.positional.push_back(eval(*e.kids[i], fr));
    for (const auto& [k, v] : e.kwargs) a.named.emplace_back(k, eval(*v, fr));
    return a;
  }

  Value eval(const Expr& e, Frame& fr) {
    try {
      return eval_inner(e, fr);
    } catch (const Fault& f) {
      if (f.is_raise) fail("{}:{}:{}: {}", prog_.name, e.pos.line, e.pos.col, f.msg);
      error_at(e.pos, f.msg);
    }
  }

  Value eval_inner(const Expr& e, Frame& fr) {
    switch (e.type) {
      case Expr::kLiteral: return e.literal;
      case Expr::kName: {
        const Value* v = fr.find(e.name);
        return v ? *v : Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case Expr::kAttr: return get_attr(*this, eval(*e.kids[0], fr), e.name);
      case Expr::kItem: return get_item(*this, eval(*e.kids[0], fr), eval(*e.kids[1], fr));
      case Expr::kSlice: {
        Value target = eval(*e.kids[0], fr);
        Value parts[3];
        for (int i = 0; i < 3; ++i)
          if (e.kids[size_t(i) + 1]) parts[i] = eval(*e.kids[size_t(i) + 1], fr);
          else parts[i] = Value::none();
        return slice(*this, target, parts[0], parts[1], parts[2]);
      }
      case Expr::kCall: {
        Value callee = eval(*e.kids[0], fr);
        Args a = eval_args(e, 1, fr);
        return call_value(callee, a);
      }
      case Expr::kFilter: {
        Value operand = e.kids[0] ? eval(*e.kids[0], fr) : (base_ ? *base_ : Value::undefined("no operand"));
        Args a = eval_args(e, 1, fr);
        return apply_filter(*this, e.name, operand, a);
      }
      case Expr::kTest: {
        Value operand;
        if (e.name == "defined" || e.name == "undefined") {
          operand = eval(*e.kids[0], fr);
        } else {
          operand = eval(*e.kids[0], fr);
        }
        Args a = eval_args(e, 1, fr);
        bool r = apply_test(*this, e.name, operand, a);
        return Value::of_bool(e.negated ? !r : r);
      }
      case Expr::kNeg: return negate(eval(*e.kids[0], fr));
      case Expr::kPos: {
        Value v = eval(*e.kids[0], fr);
        if (!v.is_number()) throw Fault{fmt::format("bad operand type for unary +: '{}'", type_name(v))};
        return v;
      }
      case Expr::kNot: return Value::of_bool(!truthy(eval(*e.kids[0], fr)));
      case Expr::kAnd: {
        Value l = eval(*e.kids[0], fr);
        return truthy(l) ? eval(*e.kids[1], fr) : l;
      }
      case Expr::kOr: {
        Value l = eval(*e.kids[0], fr);
        return truthy(l) ? l : eval(*e.kids[1], fr);
      }
      case Expr::kBinary: return binary_op(*this, e.name, eval(*e.kids[0], fr), eval(*e.kids[1], fr));
      case Expr::kCond:
        if (truthy(eval(*e.kids[1], fr))) return eval(*e.kids[0], fr);
        return e.kids[2] ? eval(*e.kids[2], fr)
                         : Value::undefined(
                               "the inline if-expression evaluated to false and no else section was defined");
      case Expr::kList:
      case Expr::kTuple: {
        List l;
        for (const auto& k : e.kids) l.push_back(eval(*k, fr));
        Value v = Value::of_list(std::move(l));
        v.is_tuple = e.type == Expr::kTuple;
        return v;
      }
      case Expr::kDict: {
        Dict d;
        for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
          Value k = eval(*e.kids[i], fr);
          if (k.kind != Kind::kString) throw Fault{"dict literal keys must be strings"};
          dict_set(d, *k.str, eval(*e.kids[i + 1], fr));
        }
        return Value::of_dict(std::move(d));
      }
    }
    return Value();
  }

  const Program& prog_;
  Limits limits_;
  Str* out_ = nullptr;
  const Value* base_ = nullptr;  // operand of a filter block / block set chain
  int64_t steps_ = 0;
  size_t work_ = 0;
  int call_depth_ = 0;
};

void charge(Renderer& r, size_t bytes) { r.charge(bytes); }
void step(Renderer& r) { r.step(); }
Value call(Renderer& r, const Value& f, Args& a) { return r.call_value(f, a); }

RenderedPrompt Template::render(const nlohmann::ordered_json& values,
                                const nlohmann::ordered_json& template_values, const Limits& limits) const {
  Renderer r(*program_, limits);
  return r.run(values, template_values);
}

}  // namespace sickle::tmpl
