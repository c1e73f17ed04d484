// libFuzzer target for the chat-template engine: the input is a template (code from the
// internet), parsed and rendered over a fixed conversation with tools. Invariants: no crash,
// hang, leak or UB, and no unbounded recursion: every failure is a sickle::Error, and the
// output stays within Limits::max_output_bytes. Small limits keep each run fast.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "base/error.h"
#include "template/template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json values = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "sys <|im_end|>"}, {"role": "user", "content": "héllo"},
                 {"role": "assistant", "content": null, "reasoning_content": "r",
                  "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
                 {"role": "tool", "content": "42"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
               "properties": {"a": {"type": "integer", "enum": [1, 2.5, null]}}}}}],
    "add_generation_prompt": true, "thinking": false})");
  static const nlohmann::ordered_json specials = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  sickle::tmpl::Limits limits;
  limits.max_steps = 20000;
  limits.max_output_bytes = 1 << 16;
  limits.max_work_bytes = 1 << 22;
  limits.max_call_depth = 16;
  try {
    sickle::tmpl::Template t(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.jinja");
    sickle::RenderedPrompt p = t.render(values, specials, limits);
    size_t n = 0;
    for (const auto& s : p.spans) n += s.text.size();
    if (n > limits.max_output_bytes) std::abort();
  } catch (const sickle::Error&) {
  }
  return 0;
}
