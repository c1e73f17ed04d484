// sickle/server/structured.h — structured outputs for the OpenAI server (issue 16 item 2):
// the request fields that ask for a grammar, compiled at parse time (a bad schema is a 400
// naming the field and the schema keyword), and the per-sequence TokenConstraint the
// scheduler applies to the logits right before sampling.
//
// Fields (at most one of them per request):
//  - response_format {"type": "text"} (no constraint), {"type": "json_object"} (any JSON
//    object), {"type": "json_schema", "json_schema": {"name", "schema", "strict"}} (OpenAI);
//  - guided_json (a schema), guided_regex (a pattern), guided_choice (a list of strings):
//    vLLM's extra fields;
//  - structured_outputs {"json" | "regex" | "choice": ...}: vLLM's newer form of the same.
// strict: OpenAI's meaning (additionalProperties defaults to false); guided_json and
// structured_outputs.json are compiled non-strict, which emits the same documents (see
// grammar::SchemaOptions).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "grammar/grammar.h"
#include "grammar/token_constraint.h"

namespace sickle::server {

class TextCodec;

// The request fields read here (for the endpoints' lists of known fields).
inline constexpr const char* kStructuredFields[] = {"guided_json", "guided_regex", "guided_choice",
                                                    "structured_outputs"};

// The grammar a request body asks for, null if none. Throws ApiError (400) naming the field.
// response_format is read only when `with_response_format` (chat completions).
std::shared_ptr<const grammar::Grammar> parse_structured(const nlohmann::json& body, bool with_response_format);

// One per server: the codec's vocabulary as the grammar engine needs it (built on the first
// structured request: ~0.2 s for a 128k vocabulary), and the per-sequence factory that
// GenRequest::make_constraint holds.
class StructuredOutputs {
 public:
  explicit StructuredOutputs(const TextCodec& codec) : codec_(codec) {}
  std::shared_ptr<const grammar::Vocabulary> vocabulary();
  std::function<std::unique_ptr<grammar::TokenConstraint>()> factory(std::shared_ptr<const grammar::Grammar> grammar);

 private:
  const TextCodec& codec_;
  std::once_flag once_;
  std::shared_ptr<const grammar::Vocabulary> vocab_;
};

}  // namespace sickle::server
