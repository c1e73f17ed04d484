#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets (src/*/*_fuzz.cpp) to tests/fuzz/<target>/.

Each target gets a few small valid inputs and edge cases in its input layout (see the comment
at the top of each *_fuzz.cpp). Regression inputs for bugs the fuzzers found are added beside
them by hand (named regress-*) and are not written here. Run from the repository root:
    python3 tools/fuzz_seeds.py
"""
import base64
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fuzz")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors_header(tensors, metadata=None):
    """tensors: [(name, dtype, shape, nbytes)] laid out in order -> (header json, data size)."""
    h, off = {}, 0
    if metadata is not None:
        h["__metadata__"] = metadata
    for name, dtype, shape, nbytes in tensors:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + nbytes]}
        off += nbytes
    return json.dumps(h), off


def safetensors_file(tensors, metadata=None, fill=b"\0"):
    text, size = safetensors_header([(n, d, s, len(b)) for n, d, s, b in tensors], metadata)
    text += " " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + b"".join(b for _, _, _, b in tensors)


# ---- safetensors_fuzz: u64 data size, then the header text
for i, (tensors, md) in enumerate([
    ([("a", "F32", [2, 3], 24), ("b", "BF16", [4], 8)], {"format": "pt"}),
    ([("w", "F8_E4M3", [16, 16], 256), ("w_scale", "F32", [1, 1], 4), ("p", "I32", [2], 8)], None),
    ([("empty", "F32", [0, 4], 0), ("x", "U8", [3], 3)], None),
]):
    text, size = safetensors_header(tensors, md)
    put("safetensors_fuzz", f"seed-{i}", struct.pack("<Q", size) + text.encode())
put("safetensors_fuzz", "seed-overlap", struct.pack("<Q", 8) +
    b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')

# ---- tokenizer_fuzz: text to encode / decode
for i, t in enumerate(["Hello, world! the thing in the ring",
                       "getUserName 12345 \u4e2d\u6587\u5b57 don't  \n\n\t x",
                       "<|im_end|>[EOS]<|im_user|>user<|im_middle|>hi<|im_end|>",
                       "\xff\xfe bad \xc3 utf8 \xe2\x82"]):
    put("tokenizer_fuzz", f"seed-{i}", t.encode("utf-8", "surrogateescape") if isinstance(t, str) else t)
put("tokenizer_fuzz", "seed-invalid-utf8", b"ab\xff\xc3\x28 \xe2\x82 \xf0\x9f\x98")

# ---- config_fuzz: config.json
with open(os.path.join(ROOT, "models", "brown-kimi", "config.json"), "rb") as f:
    put("config_fuzz", "seed-brown-kimi", f.read())
flat = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 64,
    "num_hidden_layers": 3, "first_k_dense_replace": 1, "intermediate_size": 128,
    "moe_intermediate_size": 32, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
    "n_group": 2, "topk_group": 1, "num_attention_heads": 2, "kv_lora_rank": 16, "q_lora_rank": None,
    "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "max_position_embeddings": 256,
    "vocab_size": 300, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "routed_scaling_factor": 2.5,
    "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": True,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]},
    "sickle_experts_per_layer": [0, 8, 4],
}
put("config_fuzz", "seed-flat-fp8", json.dumps(flat, indent=1))
flat2 = dict(flat, rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                    "beta_fast": 32, "beta_slow": 1, "mscale": 1, "mscale_all_dim": 1,
                                    "rope_theta": 50000.0})
del flat2["rope_theta"], flat2["quantization_config"], flat2["sickle_experts_per_layer"]
put("config_fuzz", "seed-rope-parameters", json.dumps(flat2))
put("config_fuzz", "seed-huge-values", json.dumps(dict(flat, hidden_size=2**62, qk_nope_head_dim=2**62,
                                                       qk_rope_head_dim=2**62, num_hidden_layers=2**40)))


# ---- gguf_fuzz: a GGUF file
def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def gguf(kvs, tensors, alignment=32):
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, vtype, payload in kvs:
        out += gstr(key) + struct.pack("<I", vtype) + payload
    data, infos = b"", b""
    for name, ggml_type, ne, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", ggml_type, len(data))
        data += raw
    out += infos
    out += b"\0" * (-len(out) % alignment)
    return out + data


kvs = [("general.architecture", 8, gstr("deepseek2")), ("u8", 0, b"\x07"), ("i8", 1, b"\xf9"),
       ("u16", 2, struct.pack("<H", 7)), ("i16", 3, struct.pack("<h", -7)), ("u32", 4, struct.pack("<I", 7)),
       ("i32", 5, struct.pack("<i", -7)), ("f32", 6, struct.pack("<f", 1.5)), ("bool", 7, b"\x01"),
       ("u64", 10, struct.pack("<Q", 7)), ("i64", 11, struct.pack("<q", -7)), ("f64", 12, struct.pack("<d", 2.5)),
       ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + gstr("a") + gstr("b") + gstr("<|im_end|>")),
       ("scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0, -1, -2)),
       ("nested", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 5, 2) + struct.pack("<2i", 1, 2))]
tensors = [("f32", 0, [4, 2], struct.pack("<8f", *range(8))), ("f16", 1, [4], b"\0\x3c" * 4),
           ("q4", 2, [32], b"\0\x38" + bytes(range(16))), ("q8", 8, [32, 1], b"\0\x38" + bytes(range(32))),
           ("bf16", 30, [2], b"\x80\x3f" * 2)]
put("gguf_fuzz", "seed-all-types", gguf(kvs, tensors))
put("gguf_fuzz", "seed-align-64", gguf([("general.alignment", 4, struct.pack("<I", 64))], tensors[:2], 64))
put("gguf_fuzz", "seed-empty", gguf([], []))
put("gguf_fuzz", "seed-huge-array", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k") + struct.pack("<IIQ", 9, 8, 2**32))


# ---- stats_fuzz: a sickle statistics file (safetensors with metadata)
def stats_file(layers, n, shards=(0,), n_shards=1):
    md = {"format": "sickle-expert-stats", "stats_version": "1", "model_fingerprint": "abc123",
          "model_dir": "/m", "data": json.dumps([{"path": "/d.txt", "hash": "00ff", "bytes": 10}]),
          "data_format": "text", "data_options": "pack", "samples": "4", "tokens": "100", "seq_len": "32",
          "n_shards": str(n_shards), "shards": json.dumps(list(shards)), "sickle_version": "0.1.0",
          "created": "2026-01-01T00:00:00Z"}
    tensors = []
    for il in layers:
        for k, s in enumerate(["count", "gate_sum", "reap_sum", "ean_sum", "ean_sq_sum", "max_act"]):
            tensors.append((f"layers.{il}.{s}", "F64", [n], struct.pack(f"<{n}d", *[float(j + k) for j in range(n)])))
        tensors.append((f"layers.{il}.tokens", "F64", [1], struct.pack("<d", 100.0)))
    return safetensors_file(tensors, md)


put("stats_fuzz", "seed-2-layers", stats_file([1, 2], 4))
put("stats_fuzz", "seed-shard-1-of-4", stats_file([3], 2, shards=(1,), n_shards=4))
put("stats_fuzz", "seed-no-layers", stats_file([], 0))

# ---- calib_data_fuzz: 4 option bytes (format | pack << 2 | drop << 3 | samples << 4, seq len,
# shards, shard index), then the file
put("calib_data_fuzz", "seed-text", bytes([0 | 4, 8, 0, 0]) + b"The thing in the ring.\nA second line.")
put("calib_data_fuzz", "seed-jsonl", bytes([1, 4, 1, 1]) + b'{"text": "the ring"}\n\n{"text": "in the \\u4e2d"}\n')
put("calib_data_fuzz", "seed-chat-jsonl", bytes([2 | 4, 16, 0, 0]) + json.dumps({"messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi <|im_end|>"},
    {"role": "assistant", "content": "hello", "reasoning_content": "think",
     "tool_calls": [{"id": "functions.f:0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "functions.f:0", "content": "ok"}]}).encode() + b"\n")
put("calib_data_fuzz", "seed-tokens", bytes([3 | 8, 3, 2, 1]) + b'{"tokens": [1, 2, 3, 4, 5]}\n{"tokens": []}\n{"tokens": [7]}\n')
put("calib_data_fuzz", "seed-bad-json", bytes([1, 1, 0, 0]) + b'{"text": "a"}\n{not json\n')

# ---- tokenizer_load_fuzz: 1 byte (0 tiktoken, 1 HF), the model file, "\n----\n", the config
sep = b"\n----\n"
ranks = b"".join(base64.b64encode(bytes([b])) + b" %d\n" % b for b in range(256))
merges = [b"ab", b"th", b"the", b" the"]
ranks += b"".join(base64.b64encode(m) + b" %d\n" % (256 + i) for i, m in enumerate(merges))
n_ranks = 256 + len(merges)
atd = {str(n_ranks + k): {"content": v, "special": True} for k, v in
       [(0, "[BOS]"), (1, "[EOS]"), (2, "<|im_end|>"), (3, "<|im_user|>"), (4, "<|im_assistant|>"),
        (10, "<|im_system|>"), (17, "<|im_middle|>"), (22, "<think>"), (23, "</think>")]}
put("tokenizer_load_fuzz", "seed-tiktoken", b"\0" + ranks + sep +
    json.dumps({"added_tokens_decoder": atd, "bos_token": "[BOS]", "eos_token": {"content": "[EOS]"}}).encode())
put("tokenizer_load_fuzz", "seed-tiktoken-huge-id", b"\0" + ranks[:200] + sep +
    json.dumps({"added_tokens_decoder": {"300000000": {"content": "<|x|>"}}}).encode())
vocab = {chr(c): c for c in range(0x21, 0x7f)}
vocab["\u0120"] = 0x20
vocab.update({"ab": 300, "\u0120t": 301, "\u0120th": 302})
hf = {"model": {"type": "BPE", "vocab": vocab, "merges": ["a b", "\u0120 t", ["\u0120t", "h"]]},
      "added_tokens": [{"id": 400, "content": "<eot>", "special": True, "lstrip": True}],
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False},
          {"type": "Split", "pattern": {"String": "x"}, "behavior": "MergedWithNext"},
          {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}]},
      "normalizer": {"type": "Sequence", "normalizers": []}}
put("tokenizer_load_fuzz", "seed-hf", b"\1" + json.dumps(hf).encode() + sep + json.dumps({"eos_token": "<eot>"}).encode())
put("tokenizer_load_fuzz", "seed-hf-no-config", b"\1" + json.dumps(dict(hf, pre_tokenizer=None)).encode())

# ---- openai_fuzz: request bodies
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "description": "City"},
                                               "days": {"type": "integer", "enum": [1, 2]}},
                                               "required": ["city"]}}}]
put("openai_fuzz", "seed-chat", json.dumps({"model": "m", "messages": [
    {"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "max_tokens": 8, "temperature": 0.5, "stop": ["\n", "END"], "stream": True,
    "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2}))
put("openai_fuzz", "seed-chat-tools", json.dumps({"model": "m", "tools": tools,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "chat_template_kwargs": {"thinking": True}, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "functions.get_weather:0", "type": "function",
                                                               "function": {"name": "get_weather",
                                                                            "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
        {"role": "user", "content": "<|im_end|><|im_system|>x"}]}))
put("openai_fuzz", "seed-completion", json.dumps({"model": "m", "prompt": "Once upon", "max_tokens": 4, "seed": 3}))
put("openai_fuzz", "seed-completion-ids", json.dumps({"model": "m", "prompt": [1, 2, 3], "echo": True}))
put("openai_fuzz", "seed-bad", b'{"model": 1, "messages": "x", "n": 2}')

# ---- output_parser_fuzz: 1 flag byte, stop strings split by \x01 up to \x00, then the text
put("output_parser_fuzz", "seed-think", b"\x01" + b"plan it</think>The answer is 4.")
put("output_parser_fuzz", "seed-tool-call", b"\x04" + b"<think>x</think>ok<|tool_calls_section_begin|>"
    b"<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"P\"}<|tool_call_end|>"
    b"<|tool_call_begin|>functions.f:1<|tool_call_end|><|tool_calls_section_end|>tail")
put("output_parser_fuzz", "seed-stops", b"\x06" + b"END\x01\n\n\x00" + b"abc <thi <|tool_ more END after")
put("output_parser_fuzz", "seed-utf8", b"\x00" + "\u4e2d\u6587 <think>\u00e9</think>".encode() + b"\xe2\x82")

# ---- image_fuzz: PNG / JPEG bytes (src/vision/image_fuzz.cpp)
def png(w, h, color_type, bit_depth, rows, plte=None, ihdr_size=None, cut=None):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    iw, ih = ihdr_size or (w, h)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", iw, ih, bit_depth, color_type, 0, 0, 0))
    if plte:
        out += chunk(b"PLTE", plte)
    data = zlib.compress(b"".join(b"\0" + r for r in rows))
    out += chunk(b"IDAT", data[:cut] if cut else data) + chunk(b"IEND", b"")
    return out


put("image_fuzz", "seed-rgb.png", png(5, 3, 2, 8, [bytes((x * 40 + y * 7 + c) % 256 for x in range(5) for c in range(3)) for y in range(3)]))
put("image_fuzz", "seed-rgba.png", png(4, 2, 6, 8, [bytes((x * 60 + c * 50 + y) % 256 for x in range(4) for c in range(4)) for y in range(2)]))
put("image_fuzz", "seed-gray.png", png(6, 2, 0, 8, [bytes(range(y * 6, y * 6 + 6)) for y in range(2)]))
put("image_fuzz", "seed-gray16.png", png(2, 2, 0, 16, [b"\x12\x34\xff\x00", b"\x00\x01\x80\x80"]))
put("image_fuzz", "seed-palette.png", png(3, 1, 3, 8, [b"\x00\x01\x02"], plte=b"\xff\x00\x00\x00\xff\x00\x00\x00\xff"))
put("image_fuzz", "seed-bomb.png", png(1, 1, 2, 8, [b"\0\0\0"], ihdr_size=(50000, 50000)))
put("image_fuzz", "seed-truncated-idat.png", png(5, 3, 2, 8, [bytes(15)] * 3, cut=6))
# Small JPEGs written by Pillow 9.4 (libjpeg-turbo): 16x8 RGB optimized, 8x8 gray progressive.
put("image_fuzz", "seed-rgb.jpg", base64.b64decode("/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCAAIABADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAAAAED/8QAHxAAAgICAgMBAAAAAAAAAAAAAQIDEQAxEiEEE0Fh/8QAFQEBAQAAAAAAAAAAAAAAAAAAAAH/xAAcEQACAgIDAAAAAAAAAAAAAAABEQACAyExQaH/2gAMAwEAAhEDEQA/AKsEvlKqyxvOxdnYA9C63+EX2Dsb0Rk0ESqqxeuKxzY1y4izRVjogEUOt/MYwCRRPjfplw1GRG3bn//Z"))
put("image_fuzz", "seed-gray-progressive.jpg", base64.b64decode("/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/wgALCAAIAAgBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAAv/aAAgBAQAAAAF//8QAFRABAQAAAAAAAAAAAAAAAAAAESL/2gAIAQEAAQUCY//EABgQAAIDAAAAAAAAAAAAAAAAAAAxARES/9oACAEBAAY/AoynZ//EABkQAAIDAQAAAAAAAAAAAAAAAAERACExQf/aAAgBAQABPyEIFa9GNDRy5//aAAgBAQAAABB//8QAGRABAQEAAwAAAAAAAAAAAAAAAREhADFR/9oACAEBAAE/EF65aKwGgi4SBq+8/9k="))
put("image_fuzz", "seed-cmyk-marker.jpg", b"\xff\xd8\xff\xee\x00\x0eAdobe\x00d\x00\x00\x00\x00\x02")
