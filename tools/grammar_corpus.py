#!/usr/bin/env python3
"""Writes tests/grammar/corpus.json: JSON Schemas with valid and invalid documents for
src/grammar/grammar_test.cpp, which asks ajv (tests/grammar/verdicts.mjs) for the verdicts at
test time. Documents are JSON texts; those made by c() are compact with sorted keys (the
grammar's own shape, marked in `shaped`: a valid one must be accepted), others are not (whitespace, key order) to check the
grammar stays sound on shapes it does not produce. Rerun after editing: python3 tools/grammar_corpus.py
"""
import json, os

class Shaped(str):
    """A document in the grammar's own shape: the grammar must accept it when ajv does."""

def c(v):  # compact, sorted keys: the shape the grammar writes
    return Shaped(json.dumps(v, separators=(',', ':'), sort_keys=True, ensure_ascii=False))

person = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 8},
    "age": {"type": "integer"},
    "email": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3}},
    "required": ["name", "age"], "additionalProperties": False}
cases = [
  {"name": "person", "schema": person, "docs": [
    c({"name": "Ann", "age": 3}), c({"name": "Ann", "age": 3, "tags": ["a"]}),
    c({"name": "Ann", "age": 3, "email": "x@y", "tags": ["a", "b", "c"]}),
    c({"name": "Ann", "age": 3, "tags": ["a", "b", "c", "a"]}), c({"name": "Ann", "age": 3, "tags": []}),
    c({"name": "", "age": 3}), c({"name": "123456789", "age": 3}), c({"name": "12345678", "age": 3}),
    c({"name": "Ann"}), c({"name": "Ann", "age": 3.5}), c({"name": "Ann", "age": 3, "x": 1}),
    c({"name": "Ann", "age": "3"}), c({"name": "Ann", "age": 3, "tags": ["d"]}),
    '{"age": 3, "name": "Ann"}', '{"age":3,"name":"Ann"', '{"age":-0,"name":"\\u00e9\\n"}',
    c({"name": "été🎉", "age": -12}), '{"age":3,"name":"\\ud83c\\udf89"}', '{"age":3,"name":"Ann",}']},
  {"name": "scalars", "schema": {"type": "object", "properties": {
      "b": {"type": "boolean"}, "n": {"type": "null"}, "x": {"type": "number"}, "c": {"const": "k"},
      "u": {"type": ["integer", "null"]}}, "required": ["b", "n", "x", "c", "u"], "additionalProperties": False},
   "docs": [c({"b": True, "n": None, "x": 1.5e10, "c": "k", "u": None}), c({"b": False, "n": None, "x": -0.25, "c": "k", "u": 7}),
            '{"b":true,"c":"k","n":null,"u":7,"x":1E-3}', '{"b":true,"c":"k","n":null,"u":7,"x":01}',
            '{"b":true,"c":"k","n":null,"u":7,"x":.5}', '{"b":1,"c":"k","n":null,"u":7,"x":1}',
            '{"b":true,"c":"K","n":null,"u":7,"x":1}', '{"b":true,"c":"k","n":null,"u":"7","x":1}',
            '{"b":true,"c":"k","n":null,"u":7.5,"x":1}', '{"b":true,"c":"k","n":false,"u":7,"x":1}']},
  {"name": "anyof_ref", "schema": {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
      "required": ["x", "y"], "additionalProperties": False}},
      "anyOf": [{"$ref": "#/$defs/pt"}, {"type": "array", "items": {"$ref": "#/$defs/pt"}, "maxItems": 2}, {"type": "string", "maxLength": 2}]},
   "docs": [c({"x": 1, "y": 2}), c([{"x": 1, "y": 2}]), c([]), '"ab"', '"abc"', c([{"x": 1, "y": 2}] * 3), c({"x": 1}),
            '[{"x":1,"y":2}, {"x":3,"y":4}]', '{"x":1, "y":2}', 'null']},
  {"name": "tree", "schema": {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
      "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"], "additionalProperties": False}},
      "$ref": "#/$defs/node"},
   "docs": [c({"v": 1}), c({"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}, {"v": 4}]}), c({"v": 1, "kids": [{"w": 2}]}),
            c({"kids": []}), c({"v": 1, "kids": [{"v": 2, "kids": [{"v": "3"}]}]})]},
  {"name": "enum_mixed", "schema": {"enum": ["red", 3, None, [1, 2], {"k": "v"}, True]},
   "docs": ['"red"', '3', 'null', '[1,2]', '{"k":"v"}', 'true', '"blue"', '[2,1]', 'false', '3.0', '{"k":"w"}']},
  {"name": "extra_props", "schema": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
      "additionalProperties": {"type": "number"}},
   "docs": [c({"id": 1}), '{"id":1,"z":2.5}', '{"id":1,"z":"s"}', '{"id":1, "a":1, "b":2}', '{"z":1}']},
  {"name": "pattern", "schema": {"type": "object", "properties": {
      "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"}, "word": {"type": "string", "pattern": "o+"},
      "q": {"type": "string", "pattern": "^(?:a|b\")*$"}},
      "required": ["code", "word", "q"], "additionalProperties": False},
   "docs": ['{"code":"AB-123","q":"ab\\"a","word":"foo"}', '{"code":"AB-1234","q":"","word":"foo"}',
            '{"code":"ab-123","q":"","word":"foo"}', '{"code":"AB-123","q":"","word":"fa"}',
            '{"code":"AB-123","q":"c","word":"o"}', '{"code":"AB-123","q":"b\\"","word":"x\\no\\u00e9"}']},
  {"name": "array_bounds", "schema": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
   "docs": ['[1]', '[1,2]', '[1, 2, 3]', '[1,2,3,4]', '[1,2,3,4,5]', '[]', '[1,"2"]', '[1,2,]']},
  {"name": "any_object", "schema": {"type": "object"},
   "docs": ['{}', '{"a":[1,{"b":null}],"c":"d"}', '[]', '"x"', '{"a":1,"a":2}', '{"a":tru}', '{"a": [1, 2]}']},
  {"name": "nested_optional", "schema": {"type": "object", "properties": {
      "a": {"type": "object", "properties": {"p": {"type": "boolean"}, "q": {"type": "boolean"}}, "additionalProperties": False},
      "b": {"type": "string", "minLength": 2}}, "additionalProperties": False},
   "docs": ['{}', '{"a":{}}', '{"a":{"q":true}}', '{"a":{"p":false,"q":true},"b":"xy"}', '{"b":"x"}', '{"a":{"r":1}}',
            '{"a":{"p":false,,"q":true}}', '{,"b":"xy"}']},
]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'grammar', 'corpus.json')
for case in cases:
    case["shaped"] = [isinstance(d, Shaped) for d in case["docs"]]
with open(out, 'w') as f:
    json.dump(cases, f, indent=1, ensure_ascii=False)
    f.write('\n')
print(f"{out}: {len(cases)} schemas, {sum(len(x['docs']) for x in cases)} documents")
