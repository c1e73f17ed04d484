// sickle/template/ast.h — the parsed form of a template: expressions and statements, each
// with the line and column it starts at (for errors).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "template/value.h"

namespace sickle::tmpl {

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Pos {
  int line = 1, col = 1;
};

struct Expr {
  enum Type {
    kLiteral,
    kName,
    kAttr,
    kItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kNeg,
    kPos,
    kNot,
    kAnd,
    kOr,
    kBinary,
    kCond,
    kList,
    kTuple,
    kDict
  };
  Type type;
  Pos pos;
  Value literal;                                      // kLiteral
  std::string name;                                   // kName, kAttr, kFilter, kTest, kBinary: the operator
  std::vector<ExprP> kids;                            // operands / args (null entries: omitted slice parts)
  std::vector<std::pair<std::string, ExprP>> kwargs;  // kCall, kFilter, kTest
  bool negated = false;                               // kTest: `is not`
};

struct Stmt;
using StmtP = std::unique_ptr<Stmt>;
using Body = std::vector<StmtP>;

struct Stmt {
  enum Type {
    kText,
    kOutput,
    kIf,
    kFor,
    kSet,
    kSetBlock,
    kMacro,
    kCallBlock,
    kFilterBlock,
    kBreak,
    kContinue,
    kBody
  };
  Type type;
  Pos pos;
  Str text;                                      // kText (template-tagged)
  ExprP expr;                                    // kOutput, kFor: iterable, kSet: value, kCallBlock: call
  ExprP cond;                                    // kFor: `if` filter
  ExprP filter;                                  // kSetBlock / kFilterBlock: filter chain (operand null)
  std::vector<std::string> targets;              // kFor / kSet / kSetBlock: names; kSet `ns.attr`: {ns, attr}
  bool is_attr_target = false;                   // kSet: `set ns.attr = ...`
  std::vector<std::pair<ExprP, Body>> branches;  // kIf: (condition, body)
  Body body, else_body;                          // kFor, kMacro, kCallBlock, kSetBlock, kBody; else: kIf/kFor
  std::string name;                              // kMacro
  std::vector<std::pair<std::string, ExprP>> params;  // kMacro / kCallBlock: (name, default or null)
};

struct Program {
  std::string name;  // for errors: "chat_template.jinja"
  bool uses_tools_ts_str = false;
  Body body;
};

// Parses jinja2 source with transformers' settings (trim_blocks, lstrip_blocks, loopcontrols,
// the `generation` tag). An Error "NAME:LINE:COL: ..." on a syntax error.
std::unique_ptr<Program> parse_template(std::string_view source, std::string name);

}  // namespace sickle::tmpl
