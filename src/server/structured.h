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
struct ChatRequest;
struct MarkerIds;

// The request fields read here (for the endpoints' lists of known fields).
inline constexpr const char* kStructuredFields[] = {"guided_json", "guided_regex", "guided_choice",
                                                    "structured_outputs"};

// The grammar a request body asks for, null if none. Throws ApiError (400) naming the field.
// response_format is read only when `with_response_format` (chat completions).
std::shared_ptr<const grammar::Grammar> parse_structured(const nlohmann::json& body,
                                                         bool with_response_format);

// tool_choice "required" or a named function, enforced by the grammar (issue 16): the reply
// is the model's tool-call markup (Kimi, docs/formats.md §6), each marker a special token
// matched by id:
//   <|tool_calls_section_begin|> CALL_0 [CALL_1 ...] <|tool_calls_section_end|>
//   CALL_i = <|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>ARGS<|tool_call_end|>
// NAME is one of the request's tools (required) or the named one; ARGS is JSON valid against
// that tool's function.parameters (any object when it has none; function.strict as
// response_format's strict); IDX counts the calls before it in the conversation (Kimi's ids,
// as vLLM numbers them). A named function, or parallel_tool_calls false, is exactly one call;
// else 1 to kMaxForcedToolCalls. Null for tool_choice none/auto. Throws ApiError (400) naming
// the field: a parameters schema the grammar cannot compile ('tools[i].function.parameters'),
// a tokenizer without the Kimi markers, or a structured-output field besides ('tool_choice').
inline constexpr int64_t kMaxForcedToolCalls = 16;
std::shared_ptr<const grammar::Grammar> tool_call_grammar(const MarkerIds& ids, const ChatRequest& r);

// One per server: the codec's vocabulary as the grammar engine needs it (built on the first
// structured request: ~0.2 s for a 128k vocabulary), and the per-sequence factory that
// GenRequest::make_constraint holds.
class StructuredOutputs {
 public:
  explicit StructuredOutputs(const TextCodec& codec) : codec_(codec) {}
  std::shared_ptr<const grammar::Vocabulary> vocabulary();
  std::function<std::unique_ptr<grammar::TokenConstraint>()> factory(
      std::shared_ptr<const grammar::Grammar> grammar);

 private:
  const TextCodec& codec_;
  std::once_flag once_;
  std::shared_ptr<const grammar::Vocabulary> vocab_;
};

}  // namespace sickle::server
