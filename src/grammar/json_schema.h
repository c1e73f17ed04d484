// sickle/grammar/json_schema.h — JSON Schema (the subset OpenAI's structured outputs use) to
// a byte-level grammar whose sentences are JSON documents valid against the schema.
//
// Supported: type (object/array/string/number/integer/boolean/null, or a list of them),
// properties, required, additionalProperties (false/true/a schema), items, minItems, maxItems,
// minLength, maxLength, pattern (regex_grammar.h subset; unanchored as JSON Schema says),
// enum, const, anyOf, allOf with one member, $ref to "#", "#/$defs/..." or
// "#/definitions/...", and the annotations (title, description, default, examples, $schema,
// $id, $comment, deprecated, readOnly, writeOnly), which are ignored. Anything else — a
// keyword that would restrict the document (format, minimum, oneOf, not, if, patternProperties,
// prefixItems, ...) — is an Error naming the keyword and its JSON pointer: silently ignoring it
// would let the model write documents the client's validator rejects.
//
// Output shape (what the grammar allows, a subset of what the schema allows):
//  - Whitespace: none, except one optional space after ':' and ','. Models trained on
//    pretty-printed JSON still fit; the bound keeps a model from looping on whitespace
//    (vLLM/xgrammar allow optional whitespace too, llguidance bounds it).
//  - Object properties in the order nlohmann::json iterates them (sorted by key), each at most
//    once; required ones always, optional ones may be left out. Properties allowed by
//    additionalProperties come after the declared ones (keys are any string; a key equal to a
//    declared one is not excluded, see the note).
//  - Strings: JSON escapes, \u escapes outside the surrogate range (so minLength/maxLength,
//    which count code points, count what a validator counts), raw UTF-8 otherwise.
//  - Numbers: JSON numbers with at most 16 integer digits, 16 fraction digits and a 2-digit
//    exponent (always finite); integers without fraction or exponent.
//  - A recursive $ref (a tree type) is supported: the rule refers to itself.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "grammar/grammar.h"

namespace sickle::grammar {

struct SchemaOptions {
  // OpenAI's strict mode: an object without additionalProperties gets none. Non-strict
  // (JSON Schema's default of true) still emits none by default — a document without extra
  // properties is valid under both readings — unless the schema says additionalProperties
  // true or gives a schema for them.
  bool strict = true;
  // Upper bound on array lengths and string lengths written as repetitions.
  int64_t max_repeat = 4096;
};

// Error (sickle::Error) for an unsupported or invalid schema: "json_schema: ... at /pointer".
std::shared_ptr<const Grammar> compile_json_schema(const nlohmann::json& schema,
                                                   const SchemaOptions& options = {});
// Any JSON object (response_format json_object).
std::shared_ptr<const Grammar> json_object_grammar();
// The same two as an element of a grammar being built (a tool-call grammar embeds one
// schema per tool); the shared JSON rules are made once per call.
Element add_json_schema(Grammar& g, const nlohmann::json& schema, const SchemaOptions& options = {});
Element add_json_object(Grammar& g);

}  // namespace sickle::grammar
