// sickle/template/parse.cpp — jinja2's lexer and parser for the chat-template subset.
//
// Whitespace rules follow jinja2 3.1's lexer (lexer.py tokeniter) with transformers' options:
// newlines normalized to "\n", one trailing newline of the source dropped
// (keep_trailing_newline=False); `{%-`/`{{-`/`{#-` strip all whitespace before the tag,
// `-%}`/`-}}`/`-#}` all whitespace after; trim_blocks drops the first "\n" after `%}` / `#}`;
// lstrip_blocks drops spaces and tabs between a line start and `{%` / `{#` (`{%+` keeps them).
// Operator precedence follows jinja2's parser.py: cond-expr < or < and < not < comparisons
// (incl. in / not in) < + - < ~ < * / // % < ** < unary - + < postfix (. [] ()) and filters /
// tests (`|`, `is`), which bind tighter than unary minus.
#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "template/ast.h"
#include "template/value.h"

namespace sickle::tmpl {
namespace {

constexpr int kMaxNesting = 200;  // expression / block nesting: a hostile template cannot blow the stack

struct Token {
  enum Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEnd };
  Type type;
  std::string text;  // kText, kName, kString (decoded), kOp, numbers (source)
  size_t offset = 0;
};

class Lexer {
 public:
  Lexer(std::string src, const std::string& name) : src_(std::move(src)), name_(name) {
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
  }

  Pos pos_of(size_t off) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    int line = int(it - line_starts_.begin());
    size_t start = line_starts_[size_t(line - 1)];
    // column in code points, 1-based
    int col = 1;
    for (size_t i = start; i < off && i < src_.size(); ++i)
      if ((static_cast<unsigned char>(src_[i]) & 0xC0) != 0x80) ++col;
    return Pos{line, col};
  }

  [[noreturn]] void error_at(size_t off, const std::string& msg) const {
    Pos p = pos_of(off);
    fail("{}:{}:{}: {}", name_, p.line, p.col, msg);
  }

  std::vector<Token> run() {
    size_t pos = 0, n = src_.size();
    bool line_starting = true;
    while (pos < n) {
      size_t q = pos;
      while (true) {
        q = src_.find('{', q);
        if (q == std::string::npos || q + 1 >= n) {
          q = std::string::npos;
          break;
        }
        char c = src_[q + 1];
        if (c == '{' || c == '%' || c == '#') break;
        ++q;
      }
      if (q == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      std::string text = src_.substr(pos, q - pos);
      char kind = src_[q + 1];
      size_t after = q + 2;
      char sign = after < n && (src_[after] == '-' || src_[after] == '+') ? src_[after] : 0;
      if (sign == '-') {
        size_t e = text.find_last_not_of(" \t\n\r\f\v");
        text.resize(e == std::string::npos ? 0 : e + 1);
      } else if (sign != '+' && kind != '{') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            text.find_first_not_of(" \t\r\f\v", l_pos) == std::string::npos)
          text.resize(l_pos);
      }
      emit_text(text, pos);
      if (sign) ++after;
      if (kind == '#') {
        size_t e = src_.find("#}", after);
        if (e == std::string::npos) error_at(q, "comment not closed (missing '#}')");
        pos = end_tag(e + 2, e > after && src_[e - 1] == '-', e > after && src_[e - 1] == '+', true,
                      line_starting);
        continue;
      }
      if (kind == '%' && is_raw(after)) {
        pos = lex_raw(q, after, line_starting);
        continue;
      }
      tokens_.push_back({kind == '{' ? Token::kVarBegin : Token::kBlockBegin, "", q});
      pos = lex_tag(after, kind, line_starting);
    }
    tokens_.push_back({Token::kEnd, "", n});
    return std::move(tokens_);
  }

  const std::string& source() const { return src_; }

 private:
  void emit_text(const std::string& t, size_t off) {
    if (!t.empty()) tokens_.push_back({Token::kText, t, off});
  }

  // Position after a tag's closing delimiter ending at `p`, applying whitespace control.
  size_t end_tag(size_t p, bool strip, bool keep, bool is_block, bool& line_starting) {
    size_t start = p;
    if (strip) {
      while (p < src_.size() && std::strchr(" \t\n\r\f\v", src_[p])) ++p;
    } else if (is_block && !keep && p < src_.size() && src_[p] == '\n') {
      ++p;  // trim_blocks
    }
    line_starting = p > start && src_[p - 1] == '\n';
    return p;
  }

  bool is_raw(size_t p) const {
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0;
  }

  size_t lex_raw(size_t tag, size_t p, bool& line_starting) {
    size_t close = src_.find("%}", p);
    bool strip_after = src_[close - 1] == '-';
    p = close + 2;
    if (strip_after)
      while (p < src_.size() && std::strchr(" \t\n\r\f\v", src_[p])) ++p;
    // find {% [-+] endraw [-+] %}
    size_t s = p;
    while (true) {
      size_t b = src_.find("{%", s);
      if (b == std::string::npos) error_at(tag, "raw block not closed (missing '{% endraw %}')");
      size_t k = b + 2;
      char sign = k < src_.size() && (src_[k] == '-' || src_[k] == '+') ? src_[k] : 0;
      if (sign) ++k;
      while (k < src_.size() && std::isspace(static_cast<unsigned char>(src_[k]))) ++k;
      if (src_.compare(k, 6, "endraw") == 0) {
        k += 6;
        while (k < src_.size() && std::isspace(static_cast<unsigned char>(src_[k]))) ++k;
        bool strip = false, keep = false;
        if (src_.compare(k, 3, "-%}") == 0) {
          strip = true;
          ++k;
        } else if (src_.compare(k, 3, "+%}") == 0) {
          keep = true;
          ++k;
        }
        if (src_.compare(k, 2, "%}") == 0) {
          std::string text = src_.substr(p, b - p);
          if (sign == '-') {
            size_t e = text.find_last_not_of(" \t\n\r\f\v");
            text.resize(e == std::string::npos ? 0 : e + 1);
          } else if (sign != '+') {
            size_t l_pos = text.rfind('\n');
            l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
            if (l_pos > 0 && l_pos < text.size() &&
                text.find_first_not_of(" \t\r\f\v", l_pos) == std::string::npos)
              text.resize(l_pos);
          }
          emit_text(text, p);
          return end_tag(k + 2, strip, keep, true, line_starting);
        }
      }
      s = b + 2;
    }
  }

  size_t lex_tag(size_t p, char kind, bool& line_starting) {
    const char* close = kind == '{' ? "}}" : "%}";
    int depth = 0;
    size_t n = src_.size();
    while (true) {
      while (p < n && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
      if (p >= n)
        error_at(p, kind == '{' ? "expression not closed (missing '}}')" : "tag not closed (missing '%}')");
      if (depth == 0) {
        bool strip = src_[p] == '-' && src_.compare(p + 1, 2, close) == 0;
        bool keep = kind == '%' && src_[p] == '+' && src_.compare(p + 1, 2, close) == 0;
        if (strip || keep || src_.compare(p, 2, close) == 0) {
          tokens_.push_back({kind == '{' ? Token::kVarEnd : Token::kBlockEnd, "", p});
          size_t e = p + 2 + ((strip || keep) ? 1 : 0);
          return end_tag(e, strip, keep, kind == '%', line_starting);
        }
      }
      char c = src_[p];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t s = p;
        while (p < n && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        tokens_.push_back({Token::kName, src_.substr(s, p - s), s});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t s = p;
        bool is_float = false;
        while (p < n && (std::isdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        if (p + 1 < n && src_[p] == '.' && std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
          is_float = true;
          ++p;
          while (p < n && (std::isdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        }
        if (p < n && (src_[p] == 'e' || src_[p] == 'E')) {
          size_t k = p + 1;
          if (k < n && (src_[k] == '+' || src_[k] == '-')) ++k;
          if (k < n && std::isdigit(static_cast<unsigned char>(src_[k]))) {
            is_float = true;
            p = k;
            while (p < n && std::isdigit(static_cast<unsigned char>(src_[p]))) ++p;
          }
        }
        std::string num = src_.substr(s, p - s);
        num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
        tokens_.push_back({is_float ? Token::kFloat : Token::kInt, num, s});
      } else if (c == '\'' || c == '"') {
        size_t at = p;
        std::string text = lex_string(p);
        tokens_.push_back({Token::kString, std::move(text), at});
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                    "]",  "(",  ")",  "{",  "}",  ">",  "<", "=", ".", ":", "|", ",", ";"};
        const char* op = nullptr;
        for (const char* o : ops)
          if (src_.compare(p, std::strlen(o), o) == 0) {
            op = o;
            break;
          }
        if (!op) error_at(p, fmt::format("unexpected character '{}'", c));
        if (*op == '(' || *op == '[' || *op == '{') ++depth;
        if ((*op == ')' || *op == ']' || *op == '}') && depth > 0) --depth;
        tokens_.push_back({Token::kOp, op, p});
        p += std::strlen(op);
      }
    }
  }

  // A quoted literal with Python's escapes (jinja2 decodes with "unicode-escape"; unknown
  // escapes stay as written). Advances p past the closing quote.
  std::string lex_string(size_t& p) {
    size_t start = p;
    char q = src_[p++];
    std::string out;
    while (true) {
      if (p >= src_.size()) error_at(start, "string literal not closed");
      char c = src_[p++];
      if (c == q) return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p >= src_.size()) error_at(start, "string literal not closed");
      char e = src_[p++];
      auto hex = [&](int nd) -> uint32_t {
        if (p + size_t(nd) > src_.size()) error_at(p, "truncated \\x/\\u escape in string literal");
        uint32_t v = 0;
        for (int i = 0; i < nd; ++i) {
          char h = src_[p++];
          int d = std::isdigit(static_cast<unsigned char>(h)) ? h - '0'
                  : (h >= 'a' && h <= 'f')                    ? h - 'a' + 10
                  : (h >= 'A' && h <= 'F')                    ? h - 'A' + 10
                                                              : -1;
          if (d < 0) error_at(p - 1, "bad hex digit in string escape");
          v = v * 16 + uint32_t(d);
        }
        return v;
      };
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;
        case 'x': append_utf8(out, hex(2)); break;
        case 'u': append_utf8(out, hex(4)); break;
        case 'U': {
          uint32_t cp = hex(8);
          if (cp > 0x10FFFF) error_at(p, "\\U escape out of range");
          append_utf8(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = uint32_t(e - '0');
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i)
              v = v * 8 + uint32_t(src_[p++] - '0');
            append_utf8(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
  }

  std::string src_;
  const std::string& name_;
  std::vector<size_t> line_starts_{0};
  std::vector<Token> tokens_;
};

std::string normalize_source(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      out += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else out += src[i];
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
  return out;
}

class Parser {
 public:
  Parser(Lexer& lx, std::vector<Token> toks) : lx_(lx), t_(std::move(toks)) {}

  Body parse_all() {
    std::string end;
    Body b = parse_body({}, end);
    return b;
  }

 private:
  const Token& cur() const { return t_[i_]; }
  bool is_op(const char* op) const { return cur().type == Token::kOp && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Token::kName && cur().text == n; }
  Pos pos() const { return lx_.pos_of(cur().offset); }
  [[noreturn]] void error(const std::string& msg) const { lx_.error_at(cur().offset, msg); }
  std::string describe() const {
    switch (cur().type) {
      case Token::kEnd: return "end of template";
      case Token::kVarEnd: return "'}}'";
      case Token::kBlockEnd: return "'%}'";
      case Token::kText: return "template text";
      default: return "'" + cur().text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!is_op(op)) error(fmt::format("expected '{}', got {}", op, describe()));
    ++i_;
  }
  std::string expect_name() {
    if (cur().type != Token::kName) error(fmt::format("expected a name, got {}", describe()));
    return t_[i_++].text;
  }
  void expect_block_end() {
    if (cur().type != Token::kBlockEnd) error(fmt::format("expected '%}}', got {}", describe()));
    ++i_;
  }
  struct Depth {
    Parser& p;
    explicit Depth(Parser& pp) : p(pp) {
      if (++p.depth_ > kMaxNesting) p.error(fmt::format("nesting deeper than {} levels", kMaxNesting));
    }
    ~Depth() { --p.depth_; }
  };

  ExprP node(Expr::Type type, Pos p) {
    auto e = std::make_unique<Expr>();
    e->type = type;
    e->pos = p;
    return e;
  }

  // Statements until `{% <one of ends> ...`; leaves the cursor on that name, stores it in `end`.
  Body parse_body(const std::vector<std::string>& ends, std::string& end) {
    Depth d(*this);
    Body body;
    while (true) {
      const Token& tk = cur();
      if (tk.type == Token::kEnd) {
        if (!ends.empty()) error(fmt::format("unexpected end of template: expected '{{% {} %}}'", ends[0]));
        return body;
      }
      if (tk.type == Token::kText) {
        auto s = std::make_unique<Stmt>();
        s->type = Stmt::kText;
        s->pos = pos();
        s->text = Str(tk.text, false);
        body.push_back(std::move(s));
        ++i_;
      } else if (tk.type == Token::kVarBegin) {
        Pos p = pos();
        ++i_;
        auto s = std::make_unique<Stmt>();
        s->type = Stmt::kOutput;
        s->pos = p;
        s->expr = parse_tuple_expr();
        if (cur().type != Token::kVarEnd) error(fmt::format("expected '}}}}', got {}", describe()));
        ++i_;
        body.push_back(std::move(s));
      } else if (tk.type == Token::kBlockBegin) {
        ++i_;
        if (cur().type != Token::kName) error(fmt::format("expected a tag name, got {}", describe()));
        const std::string& kw = cur().text;
        if (std::find(ends.begin(), ends.end(), kw) != ends.end()) {
          end = kw;
          return body;
        }
        body.push_back(parse_statement());
      } else {
        error(fmt::format("unexpected {}", describe()));
      }
    }
  }

  StmtP stmt(Stmt::Type type, Pos p) {
    auto s = std::make_unique<Stmt>();
    s->type = type;
    s->pos = p;
    return s;
  }

  StmtP parse_statement() {
    Pos p = pos();
    std::string kw = t_[i_++].text;
    std::string end;
    if (kw == "if") {
      auto s = stmt(Stmt::kIf, p);
      ExprP c = parse_expression();
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"}, end);
        s->branches.emplace_back(std::move(c), std::move(b));
        ++i_;
        if (end == "elif") {
          c = parse_expression();
          expect_block_end();
          continue;
        }
        expect_block_end();
        if (end == "else") {
          s->else_body = parse_body({"endif"}, end);
          ++i_;
          expect_block_end();
        }
        return s;
      }
    }
    if (kw == "for") {
      auto s = stmt(Stmt::kFor, p);
      s->targets.push_back(expect_name());
      while (is_op(",")) {
        ++i_;
        s->targets.push_back(expect_name());
      }
      if (!is_name("in")) error(fmt::format("expected 'in' in for loop, got {}", describe()));
      ++i_;
      s->expr = parse_tuple_expr(/*no_cond=*/true);
      if (is_name("if")) {
        ++i_;
        s->cond = parse_expression();
      }
      if (is_name("recursive")) error("recursive for loops are not supported");
      expect_block_end();
      s->body = parse_body({"else", "endfor"}, end);
      ++i_;
      expect_block_end();
      if (end == "else") {
        s->else_body = parse_body({"endfor"}, end);
        ++i_;
        expect_block_end();
      }
      return s;
    }
    if (kw == "set") {
      std::string first = expect_name();
      if (is_op(".")) {
        ++i_;
        auto s = stmt(Stmt::kSet, p);
        s->is_attr_target = true;
        s->targets = {first, expect_name()};
        expect_op("=");
        s->expr = parse_tuple_expr();
        expect_block_end();
        return s;
      }
      std::vector<std::string> targets{first};
      while (is_op(",")) {
        ++i_;
        targets.push_back(expect_name());
      }
      if (is_op("=")) {
        ++i_;
        auto s = stmt(Stmt::kSet, p);
        s->targets = std::move(targets);
        s->expr = parse_tuple_expr();
        expect_block_end();
        return s;
      }
      if (targets.size() != 1) error("a block set takes one name");
      auto s = stmt(Stmt::kSetBlock, p);
      s->targets = std::move(targets);
      if (is_op("|")) s->filter = parse_filters(nullptr);
      expect_block_end();
      s->body = parse_body({"endset"}, end);
      ++i_;
      expect_block_end();
      return s;
    }
    if (kw == "macro") {
      auto s = stmt(Stmt::kMacro, p);
      s->name = expect_name();
      parse_params(s->params);
      expect_block_end();
      s->body = parse_body({"endmacro"}, end);
      ++i_;
      if (cur().type == Token::kName) ++i_;  // {% endmacro name %}
      expect_block_end();
      return s;
    }
    if (kw == "call") {
      auto s = stmt(Stmt::kCallBlock, p);
      if (is_op("(")) parse_params(s->params);
      s->expr = parse_expression();
      if (s->expr->type != Expr::kCall) error("{% call %} needs a macro call");
      expect_block_end();
      s->body = parse_body({"endcall"}, end);
      ++i_;
      expect_block_end();
      return s;
    }
    if (kw == "filter") {
      auto s = stmt(Stmt::kFilterBlock, p);
      --i_;  // parse_filters expects to sit on the first filter name after a '|'
      t_[i_] = Token{Token::kOp, "|", t_[i_].offset};
      s->filter = parse_filters(nullptr);
      expect_block_end();
      s->body = parse_body({"endfilter"}, end);
      ++i_;
      expect_block_end();
      return s;
    }
    if (kw == "generation") {  // transformers' AssistantTracker: renders its body
      auto s = stmt(Stmt::kBody, p);
      expect_block_end();
      s->body = parse_body({"endgeneration"}, end);
      ++i_;
      expect_block_end();
      return s;
    }
    if (kw == "break" || kw == "continue") {
      if (loop_depth_hint_ < 0) error("break/continue outside a loop");
      auto s = stmt(kw == "break" ? Stmt::kBreak : Stmt::kContinue, p);
      expect_block_end();
      return s;
    }
    --i_;
    error(fmt::format("unknown tag '{}'", kw));
  }

  void parse_params(std::vector<std::pair<std::string, ExprP>>& params) {
    expect_op("(");
    while (!is_op(")")) {
      std::string n = expect_name();
      ExprP def;
      if (is_op("=")) {
        ++i_;
        def = parse_expression();
      }
      params.emplace_back(std::move(n), std::move(def));
      if (!is_op(",")) break;
      ++i_;
    }
    expect_op(")");
  }

  // expression [, expression]* -> tuple when a comma follows
  ExprP parse_tuple_expr(bool no_cond = false) {
    Pos p = pos();
    ExprP first = no_cond ? parse_or() : parse_expression();
    if (!is_op(",")) return first;
    auto t = node(Expr::kTuple, p);
    t->kids.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      if (cur().type == Token::kVarEnd || cur().type == Token::kBlockEnd || is_name("if")) break;
      t->kids.push_back(no_cond ? parse_or() : parse_expression());
    }
    return t;
  }

  ExprP parse_expression() {
    Depth d(*this);
    Pos p = pos();
    ExprP e = parse_or();
    while (is_name("if")) {
      ++i_;
      auto c = node(Expr::kCond, p);
      c->kids.push_back(std::move(e));
      c->kids.push_back(parse_or());
      if (is_name("else")) {
        ++i_;
        c->kids.push_back(parse_expression());
      } else {
        c->kids.push_back(nullptr);
      }
      e = std::move(c);
    }
    return e;
  }

  ExprP parse_or() {
    ExprP l = parse_and();
    while (is_name("or")) {
      auto o = node(Expr::kOr, pos());
      ++i_;
      o->kids.push_back(std::move(l));
      o->kids.push_back(parse_and());
      l = std::move(o);
    }
    return l;
  }
  ExprP parse_and() {
    ExprP l = parse_not();
    while (is_name("and")) {
      auto o = node(Expr::kAnd, pos());
      ++i_;
      o->kids.push_back(std::move(l));
      o->kids.push_back(parse_not());
      l = std::move(o);
    }
    return l;
  }
  ExprP parse_not() {
    if (is_name("not")) {
      Depth d(*this);
      auto o = node(Expr::kNot, pos());
      ++i_;
      o->kids.push_back(parse_not());
      return o;
    }
    return parse_compare();
  }
  ExprP binary(std::string op, ExprP l, ExprP r, Pos p) {
    auto b = node(Expr::kBinary, p);
    b->name = std::move(op);
    b->kids.push_back(std::move(l));
    b->kids.push_back(std::move(r));
    return b;
  }
  ExprP parse_compare() {
    Pos p = pos();
    ExprP l = parse_math1();
    while (true) {
      std::string op;
      if (cur().type == Token::kOp && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                       cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        ++i_;
      } else if (is_name("in")) {
        op = "in";
        ++i_;
      } else if (is_name("not") && t_[i_ + 1].type == Token::kName && t_[i_ + 1].text == "in") {
        op = "not in";
        i_ += 2;
      } else {
        return l;
      }
      l = binary(op, std::move(l), parse_math1(), p);
    }
  }
  ExprP parse_math1() {
    Pos p = pos();
    ExprP l = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = t_[i_++].text;
      l = binary(op, std::move(l), parse_concat(), p);
    }
    return l;
  }
  ExprP parse_concat() {
    Pos p = pos();
    ExprP l = parse_math2();
    while (is_op("~")) {
      ++i_;
      l = binary("~", std::move(l), parse_math2(), p);
    }
    return l;
  }
  ExprP parse_math2() {
    Pos p = pos();
    ExprP l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = t_[i_++].text;
      l = binary(op, std::move(l), parse_pow(), p);
    }
    return l;
  }
  ExprP parse_pow() {
    Pos p = pos();
    ExprP l = parse_unary(true);
    while (is_op("**")) {
      ++i_;
      l = binary("**", std::move(l), parse_unary(true), p);
    }
    return l;
  }
  ExprP parse_unary(bool with_filter) {
    Depth d(*this);
    Pos p = pos();
    ExprP e;
    if (is_op("-") || is_op("+")) {
      auto u = node(is_op("-") ? Expr::kNeg : Expr::kPos, p);
      ++i_;
      u->kids.push_back(parse_unary(false));
      e = std::move(u);
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprP parse_primary() {
    Pos p = pos();
    const Token& tk = cur();
    if (tk.type == Token::kName) {
      const std::string& n = tk.text;
      ++i_;
      if (n == "true" || n == "True") {
        auto e = node(Expr::kLiteral, p);
        e->literal = Value::of_bool(true);
        return e;
      }
      if (n == "false" || n == "False") {
        auto e = node(Expr::kLiteral, p);
        e->literal = Value::of_bool(false);
        return e;
      }
      if (n == "none" || n == "None") {
        auto e = node(Expr::kLiteral, p);
        e->literal = Value::none();
        return e;
      }
      auto e = node(Expr::kName, p);
      e->name = n;
      return e;
    }
    if (tk.type == Token::kString) {
      std::string s;
      while (cur().type == Token::kString) s += t_[i_++].text;
      auto e = node(Expr::kLiteral, p);
      e->literal = Value::of_str(std::move(s), false);
      return e;
    }
    if (tk.type == Token::kInt || tk.type == Token::kFloat) {
      auto e = node(Expr::kLiteral, p);
      e->literal = number_value(tk, "number");
      ++i_;
      return e;
    }
    if (is_op("(")) {
      ++i_;
      if (is_op(")")) {
        ++i_;
        return node(Expr::kTuple, p);
      }
      ExprP e = parse_expression();
      if (is_op(",")) {
        auto t = node(Expr::kTuple, p);
        t->kids.push_back(std::move(e));
        while (is_op(",")) {
          ++i_;
          if (is_op(")")) break;
          t->kids.push_back(parse_expression());
        }
        e = std::move(t);
      }
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      ++i_;
      auto l = node(Expr::kList, p);
      while (!is_op("]")) {
        l->kids.push_back(parse_expression());
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op("]");
      return l;
    }
    if (is_op("{")) {
      ++i_;
      auto d = node(Expr::kDict, p);
      while (!is_op("}")) {
        d->kids.push_back(parse_expression());
        expect_op(":");
        d->kids.push_back(parse_expression());
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op("}");
      return d;
    }
    error(fmt::format("unexpected {}", describe()));
  }

  // An int or float token's value; past int64 / double a parser error naming `what`.
  Value number_value(const Token& tk, const char* what) {
    try {
      return tk.type == Token::kInt ? Value::of_int(std::stoll(tk.text))
                                    : Value::of_float(std::stod(tk.text));
    } catch (const std::exception&) {
      error(fmt::format("{} {} out of range", what, tk.text));
    }
  }

  ExprP parse_postfix(ExprP e) {
    while (true) {
      Pos p = e->pos;  // errors point at the start of `a.b[c](d)`
      if (is_op(".")) {
        ++i_;
        auto a = node(Expr::kAttr, p);
        if (cur().type == Token::kInt) {  // foo.0 is foo[0]
          a->type = Expr::kItem;
          a->kids.push_back(std::move(e));
          auto idx = node(Expr::kLiteral, p);
          idx->literal = number_value(cur(), "index");
          ++i_;
          a->kids.push_back(std::move(idx));
        } else {
          a->name = expect_name();
          a->kids.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (is_op("[")) {
        ++i_;
        e = parse_subscript(std::move(e), p);
        expect_op("]");
      } else if (is_op("(")) {
        e = parse_call(std::move(e), p);
      } else {
        return e;
      }
    }
  }

  ExprP parse_subscript(ExprP target, Pos p) {
    ExprP parts[3];
    bool is_slice = false;
    if (!is_op(":")) parts[0] = parse_expression();
    if (is_op(":")) {
      is_slice = true;
      ++i_;
      if (!is_op("]") && !is_op(":")) parts[1] = parse_expression();
      if (is_op(":")) {
        ++i_;
        if (!is_op("]")) parts[2] = parse_expression();
      }
    }
    auto e = node(is_slice ? Expr::kSlice : Expr::kItem, p);
    e->kids.push_back(std::move(target));
    if (is_slice) {
      for (auto& x : parts) e->kids.push_back(std::move(x));
    } else {
      e->kids.push_back(std::move(parts[0]));
    }
    return e;
  }

  void parse_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (cur().type == Token::kName && t_[i_ + 1].type == Token::kOp && t_[i_ + 1].text == "=") {
        std::string n = t_[i_].text;
        i_ += 2;
        e.kwargs.emplace_back(std::move(n), parse_expression());
      } else {
        if (!e.kwargs.empty()) error("positional argument after a keyword argument");
        e.kids.push_back(parse_expression());
      }
      if (!is_op(",")) break;
      ++i_;
    }
    expect_op(")");
  }

  ExprP parse_call(ExprP callee, Pos p) {
    auto c = node(Expr::kCall, p);
    c->kids.push_back(std::move(callee));
    parse_args(*c);
    return c;
  }

  // `| name(args)` chains; operand may be null (filter blocks, block set).
  ExprP parse_filters(ExprP operand) {
    while (is_op("|")) {
      Depth d(*this);
      ++i_;
      Pos p = pos();
      std::string n = expect_name();
      while (is_op(".")) {
        ++i_;
        n += "." + expect_name();
      }
      auto f = node(Expr::kFilter, p);
      f->name = n;
      f->kids.push_back(std::move(operand));
      if (is_op("(")) parse_args(*f);
      operand = std::move(f);
    }
    return operand;
  }

  ExprP parse_filter_expr(ExprP e) {
    while (true) {
      if (is_op("|")) {
        e = parse_filters(std::move(e));
      } else if (is_name("is")) {
        Depth d(*this);
        Pos p = pos();
        ++i_;
        auto t = node(Expr::kTest, p);
        if (is_name("not")) {
          t->negated = true;
          ++i_;
        }
        t->name = expect_name();
        t->kids.push_back(std::move(e));
        if (is_op("(")) {
          parse_args(*t);
        } else if ((cur().type == Token::kName || cur().type == Token::kString || cur().type == Token::kInt ||
                    cur().type == Token::kFloat || is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) error("You cannot chain multiple tests with is");
          t->kids.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        e = parse_call(std::move(e), pos());
      } else {
        return e;
      }
    }
  }

  Lexer& lx_;
  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_hint_ = 0;
};

}  // namespace

std::unique_ptr<Program> parse_template(std::string_view source, std::string name) {
  auto prog = std::make_unique<Program>();
  prog->name = std::move(name);
  Lexer lx(normalize_source(source), prog->name);
  std::vector<Token> toks = lx.run();
  Parser ps(lx, std::move(toks));
  prog->body = ps.parse_all();
  prog->uses_tools_ts_str = source.find("tools_ts_str") != std::string_view::npos;
  return prog;
}

}  // namespace sickle::tmpl
