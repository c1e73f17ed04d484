// libFuzzer target for the grammar front ends: the bytes as a JSON Schema (the request's
// response_format / guided_json) and, when they are not JSON, as a guided_regex pattern. Any
// input must give a grammar or a sickle::Error, never a crash, hang, leak or UB; a grammar
// that compiled must run the matcher over the input without tripping an invariant.
#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "grammar/json_schema.h"
#include "grammar/regex_grammar.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json root = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  try {
    std::shared_ptr<const sickle::grammar::Grammar> g;
    if (!root.is_discarded()) {
      sickle::grammar::SchemaOptions opt;
      opt.strict = size % 2 == 0;
      opt.max_repeat = 64;  // keep one input's grammar small
      g = sickle::grammar::compile_json_schema(root, opt);
    } else {
      g = sickle::grammar::compile_regex(text);
    }
    (void)g->accepts(text);
    (void)g->accepts("{}");
  } catch (const sickle::Error&) {
  }
  return 0;
}
