// sickle/template/template.h — a Jinja2 engine for chat templates: parse once, render a
// conversation to a span-tagged prompt exactly as transformers' apply_chat_template renders it
// (python3-jinja2 in an ImmutableSandboxedEnvironment, trim_blocks + lstrip_blocks,
// loopcontrols, its own tojson, raise_exception, strftime_now).
//
// The subset is what real chat templates use: if/elif/else, for (loop.*, else, `if` filter),
// set (incl. block set and namespace attributes), macro / call, filter blocks, raw,
// break/continue, `generation`; every expression operator, slicing, tests, the str / dict
// methods templates call, the common filters, globals range / dict / namespace /
// raise_exception / strftime_now. Undefined behaves as jinja2's default Undefined (prints "",
// is false, iterates as empty; attribute access, arithmetic and calls on it are errors).
// Mutating methods (list.append, dict.update...) are errors, as the immutable sandbox makes them.
//
// Spans (tokenizer/prompt.h): strings from `values` are data, template literals and
// `template_values` (special tokens) are template text; see value.h for how tags propagate.
// A template is code from the internet: errors (syntax, runtime, raise_exception) are
// sickle::Error naming template line and column, and the limits below turn hostile templates
// into errors instead of crashes or hangs.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/prompt.h"

namespace sickle::tmpl {

struct Program;

struct Limits {
  int max_call_depth = 64;              // nested macro / caller() calls
  int64_t max_steps = 2'000'000;        // loop iterations + macro calls in one render
  size_t max_output_bytes = 32u << 20;  // rendered prompt and any string built on the way
  size_t max_work_bytes = 512u << 20;   // bytes of all strings built in one render
};

class Template {
 public:
  // Parses `source`; `name` prefixes error messages ("tokenizer_config.json:3:14: ...").
  // An Error on a syntax error.
  Template(std::string_view source, std::string name);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // `values`: the caller's data (messages, tools, add_generation_prompt, kwargs): strings are
  // value spans. `template_values`: the checkpoint's own strings (bos_token, eos_token...):
  // template spans. Both are JSON objects; a key in both takes `values`'.
  // Key order of objects is kept (ordered_json): tojson writes them in the caller's order.
  RenderedPrompt render(const nlohmann::ordered_json& values, const nlohmann::ordered_json& template_values,
                        const Limits& limits = {}) const;

  const std::string& name() const;
  // The template reads `tools_ts_str` (Kimi K2.5: its tokenizer passes a TypeScript tool list).
  bool uses_tools_ts_str() const;

 private:
  std::unique_ptr<Program> program_;
};

}  // namespace sickle::tmpl
